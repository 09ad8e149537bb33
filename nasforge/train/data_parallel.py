"""Ray Train around the one trainer: the parts every data-parallel job shares (``nasforge
transfer``'s models, a one-shot search's supernet).

Ray Train's ``TorchTrainer`` starts one process per worker (one per GPU, or N on CPUs) and
initialises the ``torch.distributed`` process group (NCCL on GPUs, gloo on CPUs) before it
calls the job's loop; the loop calls :func:`worker_placement` and then
``nasforge.train.train(..., distributed=True)``.
"""
from __future__ import annotations

from typing import Callable


def worker_placement(use_gpu: bool, threads: int):
    """Called first by a Ray Train worker: ``(rank, world, device, distributed)``; on CPU,
    torch's intra-op threads set to ``threads``."""
    import torch
    import torch.distributed as dist

    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(threads)))
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    return rank, world, device, distributed


def torch_trainer(loop: Callable[[dict], None], loop_config: dict, *, workers: int,
                  use_gpu: bool, cpus_per_worker: float, storage: str, name: str = "ray",
                  max_failures: int = 0):
    """The ``TorchTrainer`` of ``workers`` processes running ``loop(loop_config)``, its run
    state in ``storage/name``."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    per_worker = {"CPU": cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = 1
    return TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        run_config=RunConfig(name=name, storage_path=storage,
                             failure_config=FailureConfig(max_failures=max_failures)))
