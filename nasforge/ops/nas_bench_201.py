"""NAS-Bench-201's cell operations (Dong & Yang, ICLR 2020), built as its reference network
builds them, so a network written in the DSL has NAS-Bench-201's parameters and FLOPs.

Inside a cell every op maps C -> C at stride 1; ``avg_pool_3x3`` is NASNet's registered op,
which at stride 1 and equal channels is exactly NAS-Bench-201's pool (3x3, padding 1, the
padding excluded from the average), so it is not registered twice. BN layers are PyTorch's
defaults (eps 1e-5, momentum 0.1, affine, running statistics), as NAS-Bench-201's are.
"""
from __future__ import annotations

from torch import nn

from nasforge.registry import register_op

FAMILY = "nas-bench-201"


class ReLUConvBNPlain(nn.Sequential):
    """ReLU -> conv (symmetric padding, no bias) -> BN with PyTorch's BN defaults."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    """A zero tensor of the op's output shape, computed as ``x * 0`` (of a strided slice,
    broadcast to ``c_out`` channels when the width changes), so it stays on the autograd graph
    as NAS-Bench-201's ``Zero`` does at stride 1."""

    def __init__(self, c_out: int, stride: int):
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x):
        zero = x[:, :, ::self.stride, ::self.stride].mul(0.0)
        if zero.shape[1] == self.c_out:
            return zero
        return zero[:, :1].expand(-1, self.c_out, -1, -1)


@register_op("none", family=FAMILY, parameter_free=True, zero_output=True)
def none(c_in, c_out, stride):
    """NAS-Bench-201's ``none``: the edge carries a zero tensor (Dong & Yang 2020)."""
    return Zero(c_out, stride)


@register_op("skip_connect", family=FAMILY, parameter_free=True)
def skip_connect(c_in, c_out, stride):
    """NAS-Bench-201's ``skip_connect`` (Dong & Yang 2020): the identity. Its cells use it
    only at stride 1 between equal widths; anything else is refused rather than guessed."""
    if stride != 1 or c_in != c_out:
        raise ValueError(f"skip_connect is the identity: stride 1 and equal channels only "
                         f"(got {c_in} -> {c_out}, stride {stride})")
    return nn.Identity()


@register_op("nor_conv_1x1", family=FAMILY)
def nor_conv_1x1(c_in, c_out, stride):
    """NAS-Bench-201's ``nor_conv_1x1`` (Dong & Yang 2020): ReLU -> 1x1 conv (no bias) -> BN."""
    return ReLUConvBNPlain(c_in, c_out, 1, stride)


@register_op("nor_conv_3x3", family=FAMILY)
def nor_conv_3x3(c_in, c_out, stride):
    """NAS-Bench-201's ``nor_conv_3x3`` (Dong & Yang 2020): ReLU -> 3x3 conv (padding 1, no
    bias) -> BN; also the two convolutions of its stride-2 residual block."""
    return ReLUConvBNPlain(c_in, c_out, 3, stride)

