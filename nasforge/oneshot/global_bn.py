"""Batch normalisation over the global batch of a data-parallel step, on CPU as on GPU.

A supernet trained on 1 or N workers must make the same architecture decisions, so every
quantity a step computes must be a function of the global batch, not of a rank's share. Batch
statistics are the one exception DDP leaves: each rank normalises with its own share's mean
and variance. ``torch.nn.SyncBatchNorm`` fixes that on CUDA only (its kernels have no CPU
implementation), so this module does it by hand: per channel, the local sum, sum of squares
and count are summed over ranks with the autograd-aware ``torch.distributed.nn.functional
.all_reduce`` (its backward all-reduces the gradients, which is the exact gradient of the
global statistics), With one process the native batch norm runs instead (the same statistics, computed
by a fused kernel: the hand-written formula's forward and backward cost about twice as much on
CPU), so 1 and N workers differ only by floating-point rounding.
"""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import nn


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state-dict keys) whose training-mode
    statistics are those of the global batch; inside ``local_batch_statistics`` those of the
    batch this rank holds."""

    local_statistics = False  # set by local_batch_statistics

    def forward(self, x):
        if not self.training or self.local_statistics or _world() == 1:
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()  # statistics in float32 also under bf16 autocast
        count = torch.full((1,), x.numel() // c, dtype=xf.dtype, device=x.device)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        if _world() > 1:
            from torch.distributed.nn.functional import all_reduce

            stats = all_reduce(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.momentum != 0:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * unbiased)
        scale = torch.rsqrt(var + self.eps)
        y = (xf - mean[None, :, None, None]) * scale[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


@contextlib.contextmanager
def local_batch_statistics(model: nn.Module):
    """Every GlobalBatchNorm2d of ``model`` normalises with the statistics of the batch its
    rank holds while inside: for evaluations that give each rank whole batches of their own
    (the trainer's ``evaluate`` takes batches ``rank, rank + world, ...``), whose counts may
    differ between ranks, so a collective there would pair unrelated calls; the statistics
    are those one process would compute for the same batch."""
    norms = [m for m in model.modules() if isinstance(m, GlobalBatchNorm2d)]
    for m in norms:
        m.local_statistics = True
    try:
        yield
    finally:
        for m in norms:
            m.local_statistics = False


def use_global_batch_norm(model: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` of ``model`` by a GlobalBatchNorm2d holding the same
    tensors (in place); returns ``model``."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.BatchNorm2d:
                new = GlobalBatchNorm2d(child.num_features, eps=child.eps,
                                        momentum=child.momentum, affine=child.affine,
                                        track_running_stats=child.track_running_stats)
                new.load_state_dict(child.state_dict())
                setattr(module, child_name, new)
    return model
