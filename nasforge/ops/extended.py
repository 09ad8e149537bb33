"""The building blocks of the CNN-design literature as searchable cell ops (issue 15).

Every op follows the NASNet op conventions of ``nasforge.ops.nasnet``: ``factory(c_in, c_out,
stride)``, the stride is applied only when asked, the output has ``c_out`` channels and
``ceil(size / stride)`` pixels, and an op that reads a cell state starts with a ReLU (states are
sums of BN outputs). Attention gates (SE, CBAM, BAM) keep their input's shape; under a stride or
a channel change they first adapt it the way the ``identity`` op does (ReLU -> strided 1x1 conv
-> BN), so a gate is "identity with attention".

Convolutions checked against a PyTorch reference (deformable: torchvision; selective kernel:
timm) use PyTorch's symmetric padding, as those references do; it equals TF 'SAME' at stride 1
and gives the same output size at stride 2. Internal layer widths of the gates and the selective
kernel follow the papers: ``channels // reduction`` (r = 16), floored at ``MIN_HIDDEN`` so the
narrow cells of a CIFAR search (F = 8..44) keep a usable bottleneck; at the ImageNet widths of the
zoo (>= 256 channels) the floor never binds.

``deform_conv`` is the hand-designed-network flavour of the deformable convolution (conv -> BN
-> activation, the order of ResNet's blocks), used by the deformable ResNet-50 of the zoo.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import register_flop_formula
from torchvision.ops import DeformConv2d

from nasforge.ops.classic import ACTIVATIONS, ChannelShuffle, SqueezeExcite
from nasforge.ops.layers import Conv2dSame, batch_norm
from nasforge.ops.nasnet import NASNET_OPS, SeparableConv
from nasforge.registry import create_op, register_op

REDUCTION = 16  # SE/CBAM/BAM/SKNet papers' reduction ratio r
MIN_HIDDEN = 8  # channels: floor of a gate's bottleneck (timm's rd_divisor; see module doc)
SK_MIN_ATTENTION = 32  # channels: SKNet's L, the floor of the selection bottleneck d


def hidden_width(channels: int, reduction: int = REDUCTION, floor: int = MIN_HIDDEN) -> int:
    """Bottleneck width of a gate: ``max(channels // reduction, floor)``."""
    return max(channels // reduction, floor)


def _adapted(gate: nn.Module, c_in: int, c_out: int, stride: int) -> nn.Module:
    """The gate alone, or after the identity op's adaptation under a stride/channel change."""
    if stride == 1 and c_in == c_out:
        return gate
    return nn.Sequential(create_op("identity", c_in, c_out, stride), gate)


# ------------------------------------------------------------------------- attention gates
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


# ------------------------------------------------------------------- deformable convolution
class DeformConv(nn.Module):
    """A KxK deformable convolution (Dai et al. 2017) on ``torchvision.ops.DeformConv2d``;
    ``modulated=True``: DCNv2's modulated version (Zhu et al. 2019).

    The offsets (2 per kernel tap; v2: then one mask logit per tap, mask = sigmoid) are predicted
    by a KxK conv with the same stride, padding and dilation, initialised to zero as in the DCN
    papers' code: a new layer starts as the plain convolution (v2: half of it, sigmoid(0) = 0.5).
    Submodule order (weight, then ``conv_offset``) is mmdetection's, so state dicts line up.
    """

    def __init__(self, c_in, c_out, kernel=3, stride=1, padding=None, dilation=1, groups=1,
                 modulated=False, bias=False):
        super().__init__()
        padding = dilation * (kernel - 1) // 2 if padding is None else padding
        self.conv = DeformConv2d(c_in, c_out, kernel, stride, padding, dilation, groups, bias)
        self.modulated = modulated
        self.taps = kernel * kernel
        self.conv_offset = nn.Conv2d(c_in, (3 if modulated else 2) * self.taps, kernel, stride,
                                     padding, dilation, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x):
        out = self.conv_offset(x)
        if not self.modulated:
            return self.conv(x, out)
        offset, mask = out[:, :2 * self.taps], torch.sigmoid(out[:, 2 * self.taps:])
        return self.conv(x, offset, mask)


@register_flop_formula(torch.ops.torchvision.deform_conv2d)
def _deform_conv_flops(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of a deformable conv for ``nasforge.flops`` (torch's counter has no formula for
    torchvision's op): those of the plain conv with the same weights, 2 per multiply-add; the
    bilinear sampling is not counted, as pooling and BN are not."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


def _deform_cell_op(modulated: bool):
    def factory(c_in, c_out, stride):
        return nn.Sequential(nn.ReLU(inplace=False),
                             DeformConv(c_in, c_out, 3, stride, modulated=modulated),
                             batch_norm(c_out))
    factory.__doc__ = ("ReLU -> 3x3 deformable conv -> BN (" +
                       ("Zhu et al. 2019, DCNv2: modulated" if modulated else
                        "Dai et al. 2017, DCN") + "; offsets from a zero-initialised 3x3 conv).")
    return factory


register_op("deform_conv_3x3", family="dcn")(_deform_cell_op(False))
register_op("deform_conv_v2_3x3", family="dcn")(_deform_cell_op(True))


@register_op("deform_conv", family="dcn")
def deform_conv(c_in, c_out, stride, kernel=3, groups=1, modulated=False, bn_eps=1e-5,
                act="relu"):
    """Deformable conv (Dai et al. 2017; ``modulated``: DCNv2, Zhu et al. 2019) -> BN ->
    activation: the classic-network order (deformable ResNet)."""
    layers = [DeformConv(c_in, c_out, kernel, stride, groups=groups, modulated=modulated),
              nn.BatchNorm2d(c_out, eps=bn_eps)]
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r} (known: {', '.join(ACTIVATIONS)})")
    if ACTIVATIONS[act] is not None:
        layers.append(ACTIVATIONS[act](inplace=True))
    return nn.Sequential(*layers)


# -------------------------------------------------------------------------- selective kernel
class SelectiveKernel(nn.Module):
    """SKNet's selective-kernel convolution (Li et al. 2019): split, fuse, select.

    Split: a 3x3 and a dilated 3x3 branch (dilation 2, the paper's 5x5 receptive field), each
    conv -> BN -> ReLU on the whole input. Fuse: s = avg pool of their sum, z = ReLU(BN(W s))
    with d = max(C / r, L) channels. Select: per-channel softmax over the branches from a second
    1x1. timm's ``SelectiveKernel`` with ``split_input=False`` is the same network (timm splits
    the input between the branches by default, which the paper does not); timm is only a test
    dependency, hence this copy of the structure.
    """

    def __init__(self, c_in, c_out, stride=1, dilations=(1, 2), groups=1,
                 attention: int | None = None):
        super().__init__()
        self.paths = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, d, d, groups, bias=False),
                          batch_norm(c_out), nn.ReLU(inplace=True)) for d in dilations)
        attention = attention or max(c_out // REDUCTION, SK_MIN_ATTENTION)
        self.fc_reduce = nn.Conv2d(c_out, attention, 1, bias=False)
        self.bn = batch_norm(attention)
        self.fc_select = nn.Conv2d(attention, c_out * len(dilations), 1, bias=False)

    def forward(self, x):
        paths = torch.stack([p(x) for p in self.paths], 1)  # N x paths x C x H x W
        z = F.relu(self.bn(self.fc_reduce(paths.sum(1).mean((2, 3), keepdim=True))))
        n, c = z.shape[0], paths.shape[2]
        weights = torch.softmax(self.fc_select(z).view(n, len(self.paths), c, 1, 1), 1)
        return (paths * weights).sum(1)


@register_op("sk_conv_3x3_5x5", family="sknet")
def sk_conv_3x3_5x5(c_in, c_out, stride):
    """ReLU -> selective kernel over a 3x3 and a 5x5-field (dilated 3x3) branch (Li et al.
    2019, SKNet)."""
    return nn.Sequential(nn.ReLU(inplace=False), SelectiveKernel(c_in, c_out, stride))


# ------------------------------------------------------------------ dilated separable 5x5
@register_op("dil_sep_conv_5x5", family="darts")
def dil_sep_conv_5x5(c_in, c_out, stride):
    """DARTS' dil_conv_5x5 (Liu et al. 2019): ReLU -> depthwise 5x5 (dilation 2) -> pointwise
    -> BN."""
    return SeparableConv(c_in, c_out, 5, stride, repeats=1, dilation=2)


# ------------------------------------------------------------ grouped conv + channel shuffle
SHUFFLE_GROUPS = 4  # ShuffleNet's g; the op uses gcd(g, c_in, c_out) so any width compiles


class ShuffleConv(nn.Sequential):
    """ShuffleNet unit body (Zhang et al. 2018) without its shortcut: ReLU -> 1x1 group conv ->
    BN -> ReLU -> channel shuffle -> 3x3 depthwise (stride) -> BN -> 1x1 group conv -> BN."""

    def __init__(self, c_in, c_out, stride, groups):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, 1, groups=groups,
                                                           bias=False),
                         batch_norm(c_out), nn.ReLU(inplace=True), ChannelShuffle(groups),
                         Conv2dSame(c_out, c_out, 3, stride, groups=c_out), batch_norm(c_out),
                         nn.Conv2d(c_out, c_out, 1, groups=groups, bias=False),
                         batch_norm(c_out))


@register_op("shuffle_conv_3x3", family="shufflenet", channel_order_sensitive=True)
def shuffle_conv_3x3(c_in, c_out, stride, groups=SHUFFLE_GROUPS):
    """Grouped 1x1 -> channel shuffle -> depthwise 3x3 -> grouped 1x1 (Zhang et al. 2018,
    ShuffleNet); ``gcd(groups, c_in, c_out)`` groups."""
    return ShuffleConv(c_in, c_out, stride, math.gcd(groups, c_in, c_out))


# The new cell ops, in the order of issue 15's list.
EXTENDED_OPS: tuple[str, ...] = (
    "se_gate", "cbam_gate", "bam_gate", "deform_conv_3x3", "deform_conv_v2_3x3",
    "sk_conv_3x3_5x5", "dil_sep_conv_5x5", "shuffle_conv_3x3",
)
# The nasnet-ext vocabulary: NASNet's 13, DARTS' dilated separable 3x3 (the 5x5's sibling,
# already registered), then the new ops.
NASNET_EXT_OPS: tuple[str, ...] = NASNET_OPS + ("dil_sep_conv_3x3",) + EXTENDED_OPS
