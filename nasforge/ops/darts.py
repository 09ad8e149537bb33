"""The DARTS space's cell operations, built as DARTS' evaluation network builds them
(Liu et al. 2019, quark0/darts ``operations.py``; docs/reference.md section 12).

They are registered under ``darts_*`` names because NASNet's ops of the same names differ:
TF 'SAME' padding (asymmetric at stride 2, so a strided op reads other pixels), a bottlenecked
``dil_conv_3x3``, and an identity that reduces with a strided 1x1 conv. Here, as in DARTS:

* ``darts_sep_conv_KxK``: [ReLU -> depthwise KxK -> pointwise 1x1 -> BN] twice, stride on the
  first, symmetric padding K//2; the first pointwise keeps ``c_in`` channels;
* ``darts_dil_conv_KxK``: once ReLU -> depthwise KxK (dilation 2, padding K-1) -> pointwise
  -> BN;
* ``darts_max_pool_3x3``/``darts_avg_pool_3x3``: padding 1, no BN (DARTS adds BN to pools in
  its search network only); the average excludes the padding (``count_include_pad=False``);
* ``darts_skip_connect``: the identity at stride 1, ReLU -> FactorizedReduce at stride 2.

BN layers use PyTorch's defaults (eps 1e-5, momentum 0.1, affine), as DARTS' do. DARTS never
changes the channel count inside a cell; should a caller ask, pools add a 1x1 conv + BN and
the identity a 1x1 conv + BN, as NASNet's ops do.
"""
from __future__ import annotations

from torch import nn

from nasforge.ops.layers import FactorizedReduction
from nasforge.registry import register_op

FAMILY = "darts"


class DartsSepConv(nn.Sequential):
    """DARTS' ``SepConv``: two stacked ReLU -> depthwise -> pointwise -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        pad = kernel // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, bias=False), nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, 1, pad, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class DartsDilConv(nn.Sequential):
    """DARTS' ``DilConv``: ReLU -> dilated depthwise -> pointwise -> BN, once."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int = 2):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, dilation * (kernel - 1) // 2,
                      dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


def _projected(pool: nn.Module, c_in: int, c_out: int) -> nn.Module:
    if c_in == c_out:
        return pool
    return nn.Sequential(pool, nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


@register_op("darts_max_pool_3x3", family=FAMILY, parameter_free=True)
def darts_max_pool_3x3(c_in, c_out, stride):
    """DARTS' max_pool_3x3: 3x3 max pool, padding 1, no BN."""
    return _projected(nn.MaxPool2d(3, stride, 1), c_in, c_out)


@register_op("darts_avg_pool_3x3", family=FAMILY, parameter_free=True)
def darts_avg_pool_3x3(c_in, c_out, stride):
    """DARTS' avg_pool_3x3: 3x3 average pool, padding 1 excluded from the average, no BN."""
    return _projected(nn.AvgPool2d(3, stride, 1, count_include_pad=False), c_in, c_out)


@register_op("darts_skip_connect", family=FAMILY, parameter_free=True)
def darts_skip_connect(c_in, c_out, stride):
    """DARTS' skip_connect: the identity; ReLU -> FactorizedReduce (two stride-2 1x1 convs,
    one shifted by a pixel, concatenated, BN) at stride 2."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()  # the compiler applies no drop path to it, as DARTS does
    if stride == 1:
        return FactorizedReduction(c_in, c_out, 1)
    return nn.Sequential(nn.ReLU(inplace=False), FactorizedReduction(c_in, c_out, 2))


def _sep(kernel):
    def factory(c_in, c_out, stride):
        return DartsSepConv(c_in, c_out, kernel, stride)
    factory.__doc__ = (f"DARTS' sep_conv_{kernel}x{kernel}: [ReLU -> depthwise -> pointwise -> "
                       f"BN] twice, padding {kernel // 2}.")
    return factory


def _dil(kernel):
    def factory(c_in, c_out, stride):
        return DartsDilConv(c_in, c_out, kernel, stride)
    factory.__doc__ = (f"DARTS' dil_conv_{kernel}x{kernel}: ReLU -> depthwise (dilation 2) "
                       f"-> pointwise -> BN.")
    return factory


for _k in (3, 5):
    register_op(f"darts_sep_conv_{_k}x{_k}", family=FAMILY)(_sep(_k))
    register_op(f"darts_dil_conv_{_k}x{_k}", family=FAMILY)(_dil(_k))
