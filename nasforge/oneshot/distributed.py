"""A one-shot search's supernet trained data-parallel on Ray Train (``--workers N``, ``--gpus N``,
``--address``), with the one trainer's ``distributed=True`` path.

Every worker loads the same data split, builds the same supernet and method under the search
seed and runs ``train(..., distributed=True, hooks=method)``: the trainer wraps the model in
DistributedDataParallel (``find_unused_parameters``: a path leaves most weights without a
gradient) and gives each rank its share of every global batch. The method's generators (paths,
Gumbel noise, controller samples, validation minibatches) are seeded alike on every rank, its
architecture gradients and rewards are all-reduced, so every rank samples the same path at
every step and holds the same architecture state without further communication. Rank 0 writes
the checkpoint, the run folder's lines and TensorBoard; a resumed search continues from the
checkpoint on any number of workers.

Batch normalisation uses each rank's share of the batch (as DDP does; ``SyncBatchNorm`` has no
CPU implementation), so 1 and N workers train the same steps with slightly different
statistics: the same seed and global batch give the same derived cells on the small runs the
tests use, and float-level differences in the weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from nasforge.cluster import ray_session
from nasforge.train import CHECKPOINT_NAME, load_checkpoint
from nasforge.train.data_parallel import torch_trainer
from nasforge.trials import Status


def train_data_parallel(config, recipe, run, epochs: int, workers: int,
                        resources: dict, *, worker: Callable[[dict], None]) -> dict:
    """Train the supernet of ``config`` into ``run`` on ``workers`` Ray Train workers (one per
    GPU with ``config.gpus``), each running ``worker(loop_config)`` (the one-shot driver's
    per-worker loop, so this module needs nothing of the driver); returns ``{"status",
    "epochs", "history"}`` read back from the checkpoint rank 0 wrote."""

    use_gpu = bool(config.gpus)
    # one GPU per worker, or one CPU per worker
    with ray_session(config.address, gpus=workers if use_gpu else None,
                     cpus=None if use_gpu else workers) as cluster:
        cpus = max(1, int(cluster.cpus) // workers)
        loop_config = {"search": config.to_dict(), "recipe": recipe.to_dict(),
                       "run_dir": str(Path(run.path).resolve()), "epochs": epochs,
                       "use_gpu": use_gpu, "threads": cpus, "resources": resources}
        trainer = torch_trainer(worker, loop_config, workers=workers, use_gpu=use_gpu,
                                cpus_per_worker=cpus, storage=str(Path(run.path).resolve()))
        trainer.fit()
    state = load_checkpoint(Path(run.path) / CHECKPOINT_NAME)
    return {"status": state.get("status", Status.OK.value), "epochs": int(state["epoch"]),
            "history": state["history"]}
