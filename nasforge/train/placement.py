"""Where and how a run computes: the device, the data-parallel rank, and which of the
recipe's speed flags (bf16 autocast, channels-last) apply there; the model's forwards
wrapped in DistributedDataParallel and/or ``torch.compile``."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nasforge.train.recipes import Recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where and how a run computes; decided once, before the model moves to ``device``."""

    device: torch.device
    distributed: bool
    rank: int
    world: int  # data-parallel processes
    amp: bool  # bf16 autocast
    channels_last: bool
    check_every: int  # iterations between divergence checks (each one syncs a GPU)


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles), the condition under
    which ``Recipe.speed.cpu_bf16`` pays. torch exposes the check only as ``torch.cpu``'s
    private ``_is_amx_tile_supported`` (what inductor uses); a torch without it counts as no."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def decide_placement(recipe: Recipe, device, distributed: bool) -> Placement:
    """Called first by ``train``: the device, this process's rank and the recipe's device
    flags (bf16, channels-last) that apply there."""
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("train(distributed=True) needs an initialised torch.distributed "
                               "process group")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    device = torch.device(device if device is not None else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    speed = recipe.speed
    on_accel = device.type == "cuda" or speed.device_flags_on_cpu
    wants_cpu_bf16 = speed.cpu_bf16 and device.type == "cpu"
    cpu_bf16 = wants_cpu_bf16 and cpu_has_bf16_units()
    if wants_cpu_bf16 and not cpu_bf16:
        log.info("recipe %s: this CPU has no AMX bf16 units; training in float32",
                 recipe.name)
    return Placement(
        device=device, distributed=distributed, rank=rank, world=world,
        amp=speed.bf16 and (on_accel or cpu_bf16),
        channels_last=speed.channels_last and (on_accel or speed.cpu_channels_last),
        check_every=1 if device.type != "cuda" else max(1, speed.divergence_check_every))


def forwards(model, recipe: Recipe, place: Placement, find_unused_parameters: bool = False):
    """``(train forward, eval forward)``: the model wrapped in DDP and/or ``torch.compile``.
    Called after a resume, so DDP broadcasts the restored weights."""
    fwd = model
    if place.distributed:
        from torch.nn.parallel import DistributedDataParallel

        fwd = DistributedDataParallel(
            model, device_ids=[place.device.index] if place.device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters)
    if recipe.speed.compile:
        fwd = torch.compile(fwd)
    eval_fwd = fwd  # data-parallel evaluation skips DDP (its forward syncs buffers)
    if place.distributed:
        eval_fwd = torch.compile(model) if recipe.speed.compile else model
    return fwd, eval_fwd
