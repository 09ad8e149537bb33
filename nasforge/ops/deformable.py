"""Deformable convolutions (Dai et al. 2017, DCN; Zhu et al. 2019, DCNv2's modulated version)
on ``torchvision.ops.DeformConv2d``, with the FLOP formula torch's counter lacks for it.

``deform_conv_3x3``/``deform_conv_v2_3x3`` are searchable cell ops (NASNet op conventions,
``nasforge.ops.nasnet``: ReLU -> conv -> BN); ``deform_conv`` is the hand-designed-network
flavour (conv -> BN -> activation, the order of ResNet's blocks), used by the deformable
ResNet-50 of the zoo. The convolutions use PyTorch's symmetric padding, as torchvision (the
reference they are checked against) does; it equals TF 'SAME' at stride 1 and gives the same
output size at stride 2.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.flop_counter import register_flop_formula
from torchvision.ops import DeformConv2d

from nasforge.ops.layers import batch_norm
from nasforge.registry import create_activation, register_op


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
    act_layer = create_activation(act, inplace=True)
    if act_layer is not None:
        layers.append(act_layer)
    return nn.Sequential(*layers)
