"""Attention gates: squeeze-and-excitation (Hu et al. 2018), CBAM (Woo et al. 2018), BAM (Park
et al. 2018) and the Residual Attention Network's soft mask branch with its attention residual
combine (Wang et al. 2017). The element-wise ``multiply`` that applies a gate written as graph
nodes is in ``nasforge.ops.combines``; SKNet's attention over kernels in
``nasforge.ops.selective_kernel``.

``squeeze_excite``, ``soft_mask_branch`` (family "classic") are the hand-designed networks'
layers: ``factory(c_in, c_out, stride, **args)``, PyTorch's padding, no channel change.

``se_gate``, ``cbam_gate`` and ``bam_gate`` are searchable cell ops (issue 15) and follow the
NASNet op conventions of ``nasforge.ops.nasnet``: ``factory(c_in, c_out, stride)``, the stride is
applied only when asked, the output has ``c_out`` channels and ``ceil(size / stride)`` pixels.
A gate keeps its input's shape; under a stride or a channel change it first adapts it the way
the ``identity`` op does (ReLU -> strided 1x1 conv -> BN), so a gate is "identity with
attention". Internal widths follow the papers: ``channels // reduction`` (r = 16), floored at
``MIN_HIDDEN`` so the narrow cells of a CIFAR search (F = 8..44) keep a usable bottleneck; at
the ImageNet widths of the zoo (>= 256 channels) the floor never binds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.ops.combines import equal_channels
from nasforge.ops.layers import require_same_channels
from nasforge.registry import (CombineSpec, create_activation, create_op, register_combine,
                               register_op)

REDUCTION = 16  # SE/CBAM/BAM/SKNet papers' reduction ratio r
MIN_HIDDEN = 8  # channels: floor of a gate's bottleneck (timm's rd_divisor; see module doc)


# ------------------------------------------------------------------- squeeze-and-excitation
class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(global_avg_pool(x))))) with 1x1 convs as the fcs."""

    def __init__(self, channels, squeeze):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


@register_op("squeeze_excite", family="classic")
def squeeze_excite(c_in, c_out, stride, squeeze=None, reduction=16):
    """Squeeze-and-excitation (Hu et al.); ``squeeze`` channels (default c_in // reduction)."""
    require_same_channels("squeeze_excite", c_in, c_out)
    return SqueezeExcite(c_in, squeeze or c_in // reduction)


# ------------------------------------------------------------ gates as searchable cell ops
def hidden_width(channels: int, reduction: int = REDUCTION, floor: int = MIN_HIDDEN) -> int:
    """Bottleneck width of a gate: ``max(channels // reduction, floor)``."""
    return max(channels // reduction, floor)


def _adapted(gate: nn.Module, c_in: int, c_out: int, stride: int) -> nn.Module:
    """The gate alone, or after the identity op's adaptation under a stride/channel change."""
    if stride == 1 and c_in == c_out:
        return gate
    return nn.Sequential(create_op("identity", c_in, c_out, stride), gate)


@register_op("se_gate", family="senet")
def se_gate(c_in, c_out, stride, reduction=REDUCTION):
    """Squeeze-and-excitation gate (Hu et al. 2018, SENet): x * sigmoid(W2 relu(W1 avg(x)))."""
    return _adapted(SqueezeExcite(c_out, hidden_width(c_out, reduction)), c_in, c_out, stride)


class CbamGate(nn.Module):
    """CBAM (Woo et al. 2018): channel attention, then spatial attention, as the authors' code.

    Channel: one MLP (Linear -> ReLU -> Linear, with biases) on the average- and the max-pooled
    vector, summed, sigmoid. Spatial: [max over channels, mean over channels] (that order) ->
    7x7 conv (no bias) -> BN (eps 1e-5, momentum 0.01) -> sigmoid.
    """

    def __init__(self, channels: int, hidden: int, kernel: int = 7):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x):
        channel = self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3)))
        x = x * torch.sigmoid(channel)[:, :, None, None]
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial_bn(self.spatial(pooled)))


@register_op("cbam_gate", family="cbam")
def cbam_gate(c_in, c_out, stride, reduction=REDUCTION):
    """Convolutional block attention module (Woo et al. 2018, CBAM): channel then spatial gate."""
    return _adapted(CbamGate(c_out, hidden_width(c_out, reduction)), c_in, c_out, stride)


class BamGate(nn.Module):
    """BAM (Park et al. 2018): x * (1 + sigmoid(channel(x) + spatial(x))), as the authors' code.

    The paper writes the sum of the two branches; the authors' code, whose models the published
    counts and accuracies come from, multiplies them (broadcast N x C x 1 x 1 by N x 1 x H x W).
    We follow the code. Channel: avg pool -> Linear -> BN1d -> ReLU -> Linear. Spatial: 1x1 conv
    -> BN -> ReLU -> 2 x (3x3 conv, dilation 4 -> BN -> ReLU) -> 1x1 conv to one map; the convs
    and linears have biases.
    """

    def __init__(self, channels: int, hidden: int, dilation: int = 4, dilated_convs: int = 2):
        super().__init__()
        self.channel = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden),
                                     nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        layers = [nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        for _ in range(dilated_convs):
            layers += [nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation),
                       nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(hidden, 1, 1))
        self.spatial = nn.Sequential(*layers)

    def forward(self, x):
        channel = self.channel(x.mean((2, 3)))[:, :, None, None]
        return x * (1 + torch.sigmoid(channel * self.spatial(x)))


@register_op("bam_gate", family="bam")
def bam_gate(c_in, c_out, stride, reduction=REDUCTION):
    """Bottleneck attention module (Park et al. 2018, BAM): channel x spatial (dilated) gate."""
    return _adapted(BamGate(c_out, hidden_width(c_out, reduction)), c_in, c_out, stride)


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
            create_activation(act, inplace=False) or nn.Identity())

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


ATTENTION_RESIDUAL = register_combine(CombineSpec(
    "attention_residual", apply=_attention_residual,
    channels=equal_channels("attention_residual"), commutative=False, min_inputs=2, max_inputs=2,
    doc="attention residual learning (1 + M(x)) * T(x); inputs (trunk T, mask M)"))
