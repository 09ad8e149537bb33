"""The function every Ray Train worker runs: build the network, train it with the one trainer.

Ray Train's ``TorchTrainer`` starts one process per worker (one per GPU, or N on CPUs) and
initialises the ``torch.distributed`` process group (NCCL on GPUs, gloo on CPUs) before calling
:func:`train_worker`; :func:`nasforge.train.train` then runs in data-parallel mode
(DistributedDataParallel, a shard of every global batch per rank, all-reduced metrics, rank 0
writes its checkpoint into the model folder). A worker started again, after a crash within
the run (Ray's ``FailureConfig``) or by ``nasforge transfer --resume``, finds that checkpoint and
continues after its last epoch.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from nasforge.data.stream import ImageFolderStream
from nasforge.faults import FaultPlan
from nasforge.train import Recipe, train
from nasforge.train.data_parallel import worker_placement
from nasforge.train.run_folder import TrainingRunFolder
from nasforge.transfer.models import ModelSpec, build
from nasforge.transfer.result import RESULT, finish_model


def train_worker(config: dict) -> None:
    """``train_loop_per_worker`` of the transfer's ``TorchTrainer``: the same worker group
    trains every unfinished model of the plan in turn (one Ray Train run per transfer, so
    workers and the process group start once). Rank 0 decides which models are left (those
    without ``result.json``) and broadcasts it; after each model it writes ``result.json``."""
    rank, _, device, distributed = worker_placement(config["use_gpu"],
                                                    config.get("threads", 1))

    todo = [m for m in config["models"] if not (Path(m["model_dir"]) / RESULT).is_file()]
    if distributed:
        box = [todo]
        dist.broadcast_object_list(box, src=0)
        todo = box[0]
    for entry in todo:
        _train_one(entry, config, rank, device, distributed)
        if rank == 0:
            finish_model(entry, Path(entry["model_dir"]))
        if distributed:
            dist.barrier()


def _train_one(entry: dict, config: dict, rank: int, device, distributed: bool) -> None:
    import ray.train

    recipe = Recipe.from_dict(entry["recipe"])
    spec = ModelSpec.from_dict(entry["spec"])
    # rank 0 keeps the model's training run folder; every rank reads its checkpoint
    folder = TrainingRunFolder(entry["model_dir"])
    faults = FaultPlan(config.get("faults", ()), spec.label,
                       restored=folder.checkpoint_path.exists())

    torch.manual_seed(config["seed"])
    model = build(spec, config["num_classes"], recipe.augmentation.image_size, recipe)
    faults.before_training(model)
    data = ImageFolderStream(config["data"], val_split=config["val_split"],
                             image_size=recipe.augmentation.image_size,
                             workers=config["loader_workers"], check=False)
    if rank == 0:
        folder.open()

    def report(epoch: int, m: dict) -> None:
        if rank == 0:
            folder.log_epoch(epoch, m)
        ray.train.report({k: v for k, v in m.items() if isinstance(v, (int, float))})
        faults.after_epoch(epoch)

    with folder:
        train(model, data, recipe, report=report, checkpoint_dir=folder.path, device=device,
              seed=config["seed"], epochs=recipe.schedule.epochs, distributed=distributed)
