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

from nasforge.data.stream import ImageFolderStream
from nasforge.train import CHECKPOINT_NAME, Recipe, load_checkpoint, sync_metrics, train
from nasforge.train.data_parallel import worker_placement
from nasforge.train.epoch_log import log_epoch
from nasforge.transfer.models import ModelSpec, build
from nasforge.transfer.result import RESULT, finish_model

FAIL_ENV = "NASFORGE_TRANSFER_FAIL"  # tests: "LABEL:EPOCH" -> one injected crash


class InjectedFailure(RuntimeError):
    """Raised by the test hook that stands for a crash in the middle of an epoch."""


def _failure_hook(model, model_dir: Path, spec_label: str, fail: str | None):
    """With ``fail = "LABEL:K"``: the first training forward after epoch K's checkpoint of
    model LABEL raises (once per run folder: a marker file remembers it)."""
    if not fail:
        return
    label, _, epoch = fail.rpartition(":")
    if label != spec_label:
        return

    marker = model_dir / ".injected_failure"
    ckpt = model_dir / CHECKPOINT_NAME

    def hook(module, args):
        if not module.training or marker.exists() or not ckpt.exists():
            return
        if load_checkpoint(ckpt)["epoch"] >= int(epoch):
            marker.touch()
            raise InjectedFailure(f"injected failure in {label} after epoch {epoch}")

    model.register_forward_pre_hook(hook)


def train_worker(config: dict) -> None:
    """``train_loop_per_worker`` of the transfer's ``TorchTrainer``: the same worker group
    trains every unfinished model of the plan in turn (one Ray Train run per transfer, so
    workers and the process group start once). Rank 0 decides which models are left (those
    without ``result.json``) and broadcasts it; after each model it writes ``result.json``."""
    import torch.distributed as dist

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
    import torch

    import ray.train

    recipe = Recipe.from_dict(entry["recipe"])
    spec = ModelSpec.from_dict(entry["spec"])
    model_dir = Path(entry["model_dir"])

    torch.manual_seed(config["seed"])
    model = build(spec, config["num_classes"], recipe.image_size, recipe)
    _failure_hook(model, model_dir, spec.label, config.get("fail"))
    data = ImageFolderStream(config["data"], val_split=config["val_split"],
                             image_size=recipe.image_size, workers=config["loader_workers"],
                             check=False)

    writer = None
    metrics_path = model_dir / "metrics.jsonl"
    if rank == 0:
        model_dir.mkdir(parents=True, exist_ok=True)
        sync_metrics(metrics_path, model_dir / CHECKPOINT_NAME)
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(model_dir))
        except ImportError:
            writer = None

    def report(epoch: int, m: dict) -> None:
        if rank == 0:
            log_epoch(metrics_path, writer, epoch, m)
        ray.train.report({k: v for k, v in m.items() if isinstance(v, (int, float))})

    try:
        train(model, data, recipe, report=report, checkpoint_dir=model_dir, device=device,
              seed=config["seed"], epochs=recipe.epochs, distributed=distributed)
    finally:
        if writer is not None:
            writer.close()
