"""NASNet's 13 operations, built as the reference code builds them (docs/reference.md section 1).

Every factory has the registry signature ``(c_in, c_out, stride, **args)``. ``c_in`` may differ
from ``c_out`` (the raw h_{i-1} of a first cell, a concat-combined state); each op then maps to
``c_out`` the way the reference does. Decisions where references disagree:

* 1x3_3x1, 1x7_7x1 and the dilated 3x3 follow the AmoebaNet TPU code (bottleneck to F/4, 3F/8
  for 1x3), the only reference that defines them for this search space and the one AmoebaNet-A's
  published cells were trained with; DARTS' variants are not used.
* conv_3x3 and conv_1x1 are plain ReLU -> conv -> BN (the paper's "3x3 conv"/"1x1 conv").
* identity under stride 2 or a channel change is ReLU -> strided 1x1 conv -> BN [TF], not DARTS'
  FactorizedReduce; the published parameter counts (timm, Keras) follow [TF].
* dilated 3x3 uses rate 2 (the paper's "3x3 dilated conv").
"""
from __future__ import annotations

from torch import nn

from nasforge.ops.layers import (AvgPool2dSame, Conv2dSame, MaxPool2dSame, ReLUConvBN, batch_norm,
                                 ConvBN)
from nasforge.registry import register_op


class SeparableConv(nn.Sequential):
    """[ReLU -> depthwise KxK -> pointwise 1x1 -> BN] x repeats, stride on the first repetition.

    The first pointwise conv maps c_in -> c_out (as TF's ``separable_conv2d`` with c_out filters).
    No BN/ReLU between depthwise and pointwise.
    """

    def __init__(self, c_in, c_out, kernel, stride, repeats=2, dilation=1):
        layers = []
        for i in range(repeats):
            c = c_in if i == 0 else c_out
            layers += [nn.ReLU(inplace=False),
                       Conv2dSame(c, c, kernel, stride if i == 0 else 1, dilation, groups=c),
                       nn.Conv2d(c, c_out, 1, bias=False),
                       batch_norm(c_out)]
        super().__init__(*layers)


class Pool(nn.Sequential):
    """Pool with the op's stride, then 1x1 conv + BN (no ReLU) when channels change."""

    def __init__(self, pool: nn.Module, c_in, c_out):
        layers = [pool]
        if c_in != c_out:
            layers.append(ConvBN(c_in, c_out, 1))
        super().__init__(*layers)


class Bottleneck(nn.Sequential):
    """[TPU] ReLU -> 1x1 to c_mid -> BN -> ReLU -> body -> BN -> ReLU -> 1x1 to c_out -> BN."""

    def __init__(self, c_in, c_out, c_mid, body: list[nn.Module]):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_mid, 1, bias=False),
                         batch_norm(c_mid), nn.ReLU(inplace=False), *body, batch_norm(c_mid),
                         nn.ReLU(inplace=False), nn.Conv2d(c_mid, c_out, 1, bias=False),
                         batch_norm(c_out))


def _factorized_body(k, stride):
    """1xk (stride along width) -> BN -> ReLU -> kx1 (stride along height) [TPU]."""
    return lambda a, b: [Conv2dSame(a, b, (1, k), (1, stride)), batch_norm(b),
                         nn.ReLU(inplace=False), Conv2dSame(b, b, (k, 1), (stride, 1))]


def _bottlenecked(c_in, c_out, mid_ratio, make_body):
    """``make_body(a, b)`` builds the middle layers mapping a -> b channels."""
    c_mid = int(c_out * mid_ratio)
    if c_mid < 1:  # [TPU]: too few channels for a bottleneck -> ReLU -> body -> BN
        return nn.Sequential(nn.ReLU(inplace=False), *make_body(c_in, c_out), batch_norm(c_out))
    return Bottleneck(c_in, c_out, c_mid, make_body(c_mid, c_mid))


class Identity(nn.Module):
    def forward(self, x):
        return x


@register_op("identity", parameter_free=True)
def identity(c_in, c_out, stride):
    """Identity; ReLU -> strided 1x1 conv -> BN when it must reduce or change channels [TF]."""
    if stride == 1 and c_in == c_out:
        return Identity()
    return ReLUConvBN(c_in, c_out, 1, stride)


@register_op("conv_1x3_3x1")
def conv_1x3_3x1(c_in, c_out, stride):
    """1x3 then 3x1 conv in a 3F/8 bottleneck [TPU]."""
    return _bottlenecked(c_in, c_out, 3 / 8, _factorized_body(3, stride))


@register_op("conv_1x7_7x1")
def conv_1x7_7x1(c_in, c_out, stride):
    """1x7 then 7x1 conv in an F/4 bottleneck [TPU]."""
    return _bottlenecked(c_in, c_out, 1 / 4, _factorized_body(7, stride))


@register_op("dil_conv_3x3")
def dil_conv_3x3(c_in, c_out, stride):
    """3x3 conv with dilation rate 2 in an F/4 bottleneck [TPU]."""
    return _bottlenecked(c_in, c_out, 1 / 4,
                         lambda a, b: [Conv2dSame(a, b, 3, stride, dilation=2)])


def _avg_pool(kernel):
    def factory(c_in, c_out, stride, count_pad_when_strided: bool = False):
        return Pool(AvgPool2dSame(kernel, stride, count_pad_when_strided), c_in, c_out)
    factory.__doc__ = (f"{kernel}x{kernel} average pool (SAME, padding excluded from the "
                       "average); 1x1 conv + BN when channels change. "
                       "count_pad_when_strided=True reproduces timm's AvgPool2dSame.")
    return factory


def _max_pool(kernel):
    def factory(c_in, c_out, stride):
        return Pool(MaxPool2dSame(kernel, stride), c_in, c_out)
    factory.__doc__ = f"{kernel}x{kernel} max pool (SAME); 1x1 conv + BN when channels change."
    return factory


register_op("avg_pool_3x3", parameter_free=True)(_avg_pool(3))
for _k in (3, 5, 7):
    register_op(f"max_pool_{_k}x{_k}", parameter_free=True)(_max_pool(_k))


@register_op("conv_1x1")
def conv_1x1(c_in, c_out, stride):
    """ReLU -> 1x1 conv -> BN."""
    return ReLUConvBN(c_in, c_out, 1, stride)


@register_op("conv_3x3")
def conv_3x3(c_in, c_out, stride):
    """ReLU -> 3x3 conv -> BN."""
    return ReLUConvBN(c_in, c_out, 3, stride)


def _sep_conv(kernel):
    def factory(c_in, c_out, stride):
        return SeparableConv(c_in, c_out, kernel, stride, repeats=2)
    factory.__doc__ = (f"{kernel}x{kernel} depthwise-separable conv applied twice "
                       "(ReLU -> depthwise -> pointwise -> BN), stride on the first.")
    return factory


for _k in (3, 5, 7):
    register_op(f"sep_conv_{_k}x{_k}")(_sep_conv(_k))


@register_op("dil_sep_conv_3x3", family="darts")
def dil_sep_conv_3x3(c_in, c_out, stride):
    """DARTS' dil_conv_3x3: one ReLU -> depthwise 3x3 (dilation 2) -> pointwise -> BN."""
    return SeparableConv(c_in, c_out, 3, stride, repeats=1, dilation=2)


@register_op("dil_sep_conv_5x5", family="darts")
def dil_sep_conv_5x5(c_in, c_out, stride):
    """DARTS' dil_conv_5x5 (Liu et al. 2019): ReLU -> depthwise 5x5 (dilation 2) -> pointwise
    -> BN."""
    return SeparableConv(c_in, c_out, 5, stride, repeats=1, dilation=2)


# The search space's vocabulary, in the order of the paper's list (docs/reference.md section 1).
NASNET_OPS: tuple[str, ...] = (
    "identity", "conv_1x3_3x1", "conv_1x7_7x1", "dil_conv_3x3", "avg_pool_3x3", "max_pool_3x3",
    "max_pool_5x5", "max_pool_7x7", "conv_1x1", "conv_3x3", "sep_conv_3x3", "sep_conv_5x5",
    "sep_conv_7x7",
)
# The building blocks of the CNN-design literature as searchable cell ops (issue 15), in the
# order of its list; they follow the conventions above and live with their kind of op
# (nasforge.ops.attention, deformable, selective_kernel, channel_groups).
EXTENDED_OPS: tuple[str, ...] = (
    "se_gate", "cbam_gate", "bam_gate", "deform_conv_3x3", "deform_conv_v2_3x3",
    "sk_conv_3x3_5x5", "dil_sep_conv_5x5", "shuffle_conv_3x3",
)
# The nasnet-ext vocabulary: NASNet's 13, DARTS' dilated separable 3x3 (the 5x5's sibling),
# then the literature's ops.
NASNET_EXT_OPS: tuple[str, ...] = NASNET_OPS + ("dil_sep_conv_3x3",) + EXTENDED_OPS
