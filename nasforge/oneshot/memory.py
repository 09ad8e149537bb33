"""How much memory a supernet step needs, measured before anything real is allocated.

The supernet is built on PyTorch's ``meta`` device (shapes, no storage) and one training
forward of a single image runs there under ``saved_tensors_hooks``, which sees every tensor
autograd keeps for the backward pass: their bytes are the activation memory per image. A
mixture (darts) keeps every candidate's activations, a path (enas, gdas, spos) one
candidate's per slot, so the estimate follows the method's mode. The total (weights, their
gradients and two optimiser moments, plus a batch of activations) is compared with the memory
the device has free.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from nasforge.oneshot.supernet import ArchitectureParameters, Supernet, SupernetError

log = logging.getLogger(__name__)

# weights + gradients + momentum (SGD) -- with Adam's two moments it would be 4
WEIGHT_COPIES = 3
# the allocator's slack, the evaluation pass, the data on the device: measured peaks of small
# CPU runs stayed below 1.5 x the estimate (README, one-shot section)
SAFETY = 1.5


@dataclass(frozen=True)
class MemoryEstimate:
    params: int  # parameters of the supernet
    weight_bytes: int  # parameters x WEIGHT_COPIES x 4 bytes
    activation_bytes_per_image: int  # tensors saved for the backward pass, one image
    batch: int  # images per step on one process

    @property
    def total_bytes(self) -> int:
        return int(SAFETY * (self.weight_bytes + self.activation_bytes_per_image * self.batch))


def estimate(space, config, batch: int, mixed: bool) -> MemoryEstimate:
    """The memory of one training step of the supernet of ``space`` under ``config``."""
    with torch.device("meta"):
        supernet = Supernet(space, config).train()
        params = sum(p.numel() for p in supernet.parameters())
        x = torch.empty(1, 3, config.input_size, config.input_size)
        saved = [0]

        def pack(t):
            saved[0] += t.numel() * t.element_size()
            return t

        if mixed:
            kwargs = {"mix": ArchitectureParameters(space, init_scale=0.0).probabilities()}
        else:  # the largest path: every block reads a fresh op of the first candidate kind
            kwargs = {"arch": space.decode([0] * len(space.decisions()))}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            supernet(x.requires_grad_(), **kwargs)
    return MemoryEstimate(params, params * WEIGHT_COPIES * 4, saved[0], batch)


def available_bytes(device: torch.device) -> int:
    """Free memory of ``device``: CUDA's free memory, else the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_fits(space, config, batch: int, mixed: bool, device: torch.device,
               processes: int = 1) -> MemoryEstimate:
    """Raise SupernetError (one line, sizes in GiB) when ``processes`` copies of a supernet
    step do not fit in ``device``'s free memory; return the estimate otherwise."""
    est = estimate(space, config, batch, mixed)
    need = est.total_bytes * (processes if device.type != "cuda" else 1)
    have = available_bytes(device)
    log.info("supernet: %d parameters, %.1f MiB activations per image, %.2f GiB needed, "
             "%.2f GiB free", est.params, est.activation_bytes_per_image / 2 ** 20,
             need / 2 ** 30, have / 2 ** 30)
    if need > have:
        copies = f" x {processes} processes" if processes > 1 and device.type != "cuda" else ""
        raise SupernetError(
            f"the supernet does not fit in memory: about {need / 2 ** 30:.1f} GiB needed "
            f"({est.params / 1e6:.1f}M parameters, {est.activation_bytes_per_image / 2 ** 20:.1f}"
            f" MiB of activations per image x batch {batch}{copies}), {have / 2 ** 30:.1f} GiB "
            f"free on {device.type}: use fewer blocks/ops, a smaller N/filters or batch")
    return est
