"""Ops of the early and attention-era hand-designed networks: LeNet-5 (LeCun et al. 1998) and the
Residual Attention Network (Wang et al. 2017).

Same registry and factory signature as the other ops: ``factory(c_in, c_out, stride, **args)``.
Two activations join the classic ones (``ACTIVATIONS`` is the activation registry every classic
op reads): LeNet-5's scaled hyperbolic tangent and a plain tanh.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.ops.classic import ACTIVATIONS
from nasforge.registry import CombineSpec, register_combine, register_op

LECUN_TANH_AMPLITUDE = 1.7159  # A of f(a) = A tanh(S a), LeCun et al. 1998, appendix A
LECUN_TANH_SLOPE = 2.0 / 3.0  # S


class LeCunTanh(nn.Module):
    """LeNet-5's squashing function f(a) = 1.7159 tanh(2a/3)."""

    def __init__(self, inplace: bool = False):  # ``inplace``: the ACTIVATIONS signature
        super().__init__()

    def forward(self, x):
        return LECUN_TANH_AMPLITUDE * torch.tanh(LECUN_TANH_SLOPE * x)


ACTIVATIONS["lecun_tanh"] = LeCunTanh
ACTIVATIONS["tanh"] = lambda inplace: nn.Tanh()


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(ACTIVATIONS)})")
    make = ACTIVATIONS[name]
    return make(inplace=False) if make else nn.Identity()


# ------------------------------------------------------------------------------ LeNet-5
class ConnectionTableConv(nn.Module):
    """A convolution whose output map j reads only the input maps ``table[j]``.

    Only the connected kernels are parameters (LeNet-5's C3: 60 kernels + 16 biases = 1,516);
    the forward pass scatters them into a dense, zero-elsewhere kernel and runs one
    ``F.conv2d``, because no library offers an arbitrary connection table (grouped convolution
    only covers disjoint, equal groups).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, table):
        super().__init__()
        if len(table) != c_out:
            raise ValueError(f"connection table has {len(table)} rows for {c_out} output maps")
        pairs = [(j, i) for j, row in enumerate(table) for i in row]
        if any(not 0 <= i < c_in for _, i in pairs):
            raise ValueError(f"connection table names an input map outside 0..{c_in - 1}")
        self.c_in, self.kernel, self.stride = c_in, kernel, stride
        self.register_buffer("out_index", torch.tensor([j for j, _ in pairs]))
        self.register_buffer("in_index", torch.tensor([i for _, i in pairs]))
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel, kernel))
        self.bias = nn.Parameter(torch.empty(c_out))
        fan_in = len(pairs) / c_out * kernel * kernel  # mean connections per output map
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def dense_weight(self) -> torch.Tensor:
        """The c_out x c_in x k x k kernel, zero where the table has no connection."""
        full = self.weight.new_zeros(self.bias.shape[0], self.c_in, self.kernel, self.kernel)
        return full.index_put((self.out_index, self.in_index), self.weight)

    def forward(self, x):
        return F.conv2d(x, self.dense_weight(), self.bias, self.stride)


@register_op("connection_table_conv", family="classic")
def connection_table_conv(c_in, c_out, stride, table, kernel=5, act="none"):
    """Convolution (no padding) with a partial connection table: output map j reads the input
    maps ``table[j]`` (LeNet-5's C3); then ``act``."""
    return nn.Sequential(ConnectionTableConv(c_in, c_out, kernel, stride, table),
                         _activation(act))


class TrainableSubsampling(nn.Module):
    """LeNet-5's S2/S4: the sum of each non-overlapping ``kernel`` x ``kernel`` window times a
    trainable per-map coefficient, plus a trainable per-map bias (2 parameters per map)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        window_sum = F.avg_pool2d(x, self.kernel) * self.kernel ** 2
        return window_sum * self.weight[:, None, None] + self.bias[:, None, None]


@register_op("trainable_subsample", family="classic")
def trainable_subsample(c_in, c_out, stride, act="none"):
    """LeNet-5's subsampling layer (stride x stride windows, coefficient and bias per map),
    then ``act``."""
    if c_in != c_out:
        raise ValueError(f"trainable_subsample cannot change channels ({c_in} -> {c_out})")
    return nn.Sequential(TrainableSubsampling(c_in, stride), _activation(act))


class RBFOutput(nn.Module):
    """Euclidean radial basis function units: y_i = sum_j (x_j - w_ij)^2 over the channels j
    (at each position; LeNet-5 applies it to a 1 x 1 map), returned negated as logits (the
    smallest distance wins). The prototypes w_i are fixed +-1 codes, a buffer, not parameters:
    LeCun et al. 1998 (section II.B) chose them by hand (stylized 7x12 bitmaps) and kept them
    fixed; they are drawn here from a seeded generator, as the bitmaps are not published as
    data."""

    def __init__(self, in_features: int, units: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, 2, (units, in_features), generator=generator) * 2.0 - 1.0
        # units x C x 1 x 1, broadcast against N x 1 x C x H x W: the buffer is used as is, so
        # torch.fx (the py export) sees the buffer rather than a derived constant
        self.register_buffer("prototypes", codes[:, :, None, None])

    def forward(self, x):
        return -(torch.unsqueeze(x, 1) - self.prototypes).square().sum(2)


@register_op("rbf_output", family="classic")
def rbf_output(c_in, c_out, stride, seed=0):
    """LeNet-5's output layer: ``c_out`` RBF units with fixed +-1 prototypes (no trainable
    parameters); logits are the negated squared distances."""
    return RBFOutput(c_in, c_out, seed)


# ------------------------------------------------------------- Residual Attention Network
class PreActBottleneck(nn.Module):
    """Identity pre-activation bottleneck unit, BN-ReLU-1x1 (c/4)-BN-ReLU-3x3-BN-ReLU-1x1 (c)
    plus the input, the unit of the authors' Attention-56/92 prototxt. The DSL writes these
    units as graph nodes; inside the soft mask branch they are modules, because the branch
    up-samples, which a DSL cell (one resolution per merge) cannot express."""

    def __init__(self, channels: int):
        super().__init__()
        mid = channels // 4
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, channels, 1, bias=False))

    def forward(self, x):
        return x + self.body(x)


def _units(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(PreActBottleneck(channels) for _ in range(count)))


def _upsample_to(x, like):
    # Caffe's Interp layer (the authors' prototxt) is bilinear with corner alignment
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class SoftMaskBranch(nn.Module):
    """The soft mask branch M(x) of an attention module (Wang et al. 2017, Fig. 3; the authors'
    prototxt): ``pools`` times [3x3/2 max pool (ceil mode, Caffe's rounding) -> ``units`` units]
    (the innermost level 2 x ``units``), then back up: bilinear up-sampling to the next level's
    size + a skip unit on that level's features -> ``units`` units; up-sampling to the input
    size -> BN-ReLU-1x1-BN-ReLU-1x1 (no biases) -> ``act``."""

    def __init__(self, channels: int, pools: int, units: int, act: str):
        super().__init__()
        if pools < 1:
            raise ValueError(f"a soft mask branch needs at least one pooling level, got {pools}")
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True),
                          _units(channels, units * (2 if level == pools - 1 else 1)))
            for level in range(pools))
        self.skip = nn.ModuleList(_units(channels, 1) for _ in range(pools - 1))
        self.up = nn.ModuleList(_units(channels, units) for _ in range(pools - 1))
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False),
            _activation(act))

    def forward(self, x):
        levels, y = [], x
        for down in self.down:
            y = down(y)
            levels.append(y)
        for level in reversed(range(len(self.skip))):
            y = self.up[level](_upsample_to(y, levels[level]) + self.skip[level](levels[level]))
        return self.head(_upsample_to(y, x))


@register_op("soft_mask_branch", family="classic")
def soft_mask_branch(c_in, c_out, stride, pools=1, units=1, act="sigmoid"):
    """Residual Attention Network soft mask branch: bottom-up/top-down with ``pools`` levels and
    ``units`` residual units between poolings; output at the input's size, squashed by ``act``
    (see ``SoftMaskBranch``)."""
    if c_in != c_out or stride != 1:
        raise ValueError(f"soft_mask_branch keeps shape (got {c_in} -> {c_out}, stride {stride})")
    return SoftMaskBranch(c_in, pools, units, act)


def _attention_residual(tensors):
    trunk, mask = tensors
    return trunk * (1 + mask)


def _equal_channels(channels):
    if len(set(channels)) != 1:
        raise ValueError(f"attention_residual needs equal channel counts, got {channels}")
    return channels[0]


ATTENTION_RESIDUAL = register_combine(CombineSpec(
    "attention_residual", apply=_attention_residual, channels=_equal_channels,
    commutative=False, min_inputs=2, max_inputs=2,
    doc="attention residual learning (1 + M(x)) * T(x); inputs (trunk T, mask M)"))
