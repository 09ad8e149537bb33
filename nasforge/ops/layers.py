"""Building blocks shared by the registered ops and the network compiler.

Padding follows TensorFlow's ``SAME`` rule, because the NASNet family was defined (and its
published weights trained) in TensorFlow: output size ``ceil(in / stride)``, and when the total
padding is odd the extra row/column goes at the bottom/right. When the padding is symmetric
(always the case at stride 1 with odd kernels) the layers use PyTorch's own padding argument, so
the common path has no extra copy.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# TF reference BN settings (nasnet_utils / timm / pretrainedmodels all use these).
BN_EPS = 1e-3
BN_MOMENTUM = 0.1


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TF 'SAME' for one spatial dimension."""
    effective = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _static_padding(kernel, stride, dilation) -> tuple[int, int] | None:
    """Symmetric padding when it does not depend on the input size, else None."""
    k, s, d = _pair(kernel), _pair(stride), _pair(dilation)
    pads = []
    for kk, ss, dd in zip(k, s, d):
        if ss != 1 or ((kk - 1) * dd) % 2:
            return None
        pads.append((kk - 1) * dd // 2)
    return tuple(pads)


def _same_total(size, effective: int, stride: int):
    """``same_padding``'s total as integer arithmetic with no control flow on ``size``, so
    that torch.fx can trace it (``nasforge.export``) with identical results.

    ``ceil(size / stride) * stride - size == (-size) % stride``, so the total is
    ``max((-size) % stride + effective - stride, 0)``. The max can only bind when
    ``effective < stride``, which is known without the input; then it is ``(t + |t|) // 2``.
    """
    total = (-size) % stride + effective - stride
    if effective < stride:
        total = (total + abs(total)) // 2
    return total


def _dynamic_pads(x: torch.Tensor, kernel, stride, dilation) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) of TF 'SAME' for ``x`` (see ``same_padding``)."""
    k, s, d = _pair(kernel), _pair(stride), _pair(dilation)
    height = _same_total(x.shape[-2], (k[0] - 1) * d[0] + 1, s[0])
    width = _same_total(x.shape[-1], (k[1] - 1) * d[1] + 1, s[1])
    return width // 2, width - width // 2, height // 2, height - height // 2


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TF 'SAME' padding (dynamic only where the input size decides it)."""

    def __init__(self, c_in, c_out, kernel, stride=1, dilation=1, groups=1, bias=False):
        static = _static_padding(kernel, stride, dilation)
        super().__init__(c_in, c_out, kernel, stride=stride, dilation=dilation, groups=groups,
                         bias=bias, padding=static if static is not None else 0)
        self._dynamic = static is None

    def forward(self, x):
        if self._dynamic:
            x = F.pad(x, _dynamic_pads(x, self.kernel_size, self.stride, self.dilation))
        return super().forward(x)


class MaxPool2dSame(nn.Module):
    """Max pool with TF 'SAME' padding (padding never wins the max)."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self._static = _static_padding(kernel, stride, 1)

    def forward(self, x):
        if self._static is not None:
            return F.max_pool2d(x, self.kernel, self.stride, self._static)
        x = F.pad(x, _dynamic_pads(x, self.kernel, self.stride, 1), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


class AvgPool2dSame(nn.Module):
    """Average pool with TF 'SAME' padding; padded positions are excluded from the average.

    ``count_pad_when_strided=True`` reproduces timm's ``AvgPool2dSame`` (used by timm's
    ``nasnetalarge``/``pnasnet5large``), which zero-pads strided pools explicitly and so counts the
    padding. TF itself does not; the flag exists only so timm's numbers can be matched exactly.
    """

    def __init__(self, kernel: int, stride: int, count_pad_when_strided: bool = False):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.count_pad_when_strided = count_pad_when_strided
        self._static = _static_padding(kernel, stride, 1)

    def forward(self, x):
        if self._static is not None:
            return F.avg_pool2d(x, self.kernel, self.stride, self._static, count_include_pad=False)
        pads = _dynamic_pads(x, self.kernel, self.stride, 1)
        if self.count_pad_when_strided:
            return F.avg_pool2d(F.pad(x, pads), self.kernel, self.stride)
        # Sum over the window, divided by the number of real (unpadded) inputs in it.
        summed = F.avg_pool2d(F.pad(x, pads), self.kernel, self.stride, divisor_override=1)
        ones = torch.ones_like(x[:1, :1])
        count = F.avg_pool2d(F.pad(ones, pads), self.kernel, self.stride, divisor_override=1)
        return summed / count


def require_same_channels(op: str, c_in: int, c_out: int) -> None:
    """Called by the factory of an op that cannot change the channel count: ValueError when
    it is asked to."""
    if c_in != c_out:
        raise ValueError(f"{op} cannot change channels ({c_in} -> {c_out})")


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN, the reference order for every NASNet convolution."""

    def __init__(self, c_in, c_out, kernel=1, stride=1, dilation=1):
        super().__init__(nn.ReLU(inplace=False),
                         Conv2dSame(c_in, c_out, kernel, stride, dilation),
                         batch_norm(c_out))


class ConvBN(nn.Sequential):
    """conv -> BN without activation (stems, 1x1 projections after pools)."""

    def __init__(self, c_in, c_out, kernel=1, stride=1):
        super().__init__(Conv2dSame(c_in, c_out, kernel, stride), batch_norm(c_out))


class FactorizedReduction(nn.Module):
    """TF ``factorized_reduction``: halves the resolution without losing every other pixel.

    stride 2: path 1 = subsample -> 1x1 conv to C/2; path 2 = shift one pixel (pad bottom/right,
    drop top/left) -> subsample -> 1x1 conv to C/2; concat -> BN. stride 1: 1x1 conv -> BN.
    Callers put the ReLU in front where the reference does.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.stride = stride
        if stride == 1:
            self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        else:
            self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, bias=False)
            self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, bias=False)
        self.bn = batch_norm(c_out)

    def forward(self, x):
        if self.stride == 1:
            return self.bn(self.conv(x))
        path_1 = x[:, :, ::2, ::2]
        path_2 = F.pad(x, (0, 1, 0, 1))[:, :, 1::2, 1::2]
        return self.bn(torch.cat([self.conv_1(path_1), self.conv_2(path_2)], 1))


class DropPath(nn.Module):
    """ScheduledDropPath [TF]: drops a whole op output per example, rescaling by 1/keep.

    ``keep_prob`` is this cell's final keep probability (already scaled by cell depth); the
    trainer moves ``progress`` from 0 to 1 over training, so the effective keep probability goes
    linearly from 1 to ``keep_prob``. Inactive in eval mode.
    """

    def __init__(self, keep_prob: float = 1.0):
        super().__init__()
        self.keep_prob = keep_prob
        self.progress = 1.0

    def forward(self, x):
        keep = 1.0 - self.progress * (1.0 - self.keep_prob)
        if not self.training or keep >= 1.0:
            return x
        mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        # in place on the product (autograd keeps only the mask): one batch-sized tensor
        # fewer per op output, the same values as ``x * mask / keep``
        return (x * mask).div_(keep)
