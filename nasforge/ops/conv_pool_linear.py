"""The single layers of hand-designed networks (ResNet, Inception, MobileNet, DenseNet, VGG,
AlexNet, FractalNet) as ops: conv -> BN -> activation, pre-activation BN -> activation -> conv,
an activation alone, pools, a linear classifier, dropout and local response normalization.

Same registry and factory signature as NASNet's ops: ``factory(c_in, c_out, stride, **args)``.
Unlike NASNet's ops these use PyTorch's symmetric padding (``padding`` defaults to
``dilation * (kernel - 1) // 2``), because torchvision and timm, the references these networks
are checked against, do. Ops that cannot change the channel count raise when asked to.
"""
from __future__ import annotations

import torch
from torch import nn

from nasforge.ops.layers import require_same_channels
from nasforge.registry import create_activation, register_op


def _pad(kernel, dilation, padding):
    if padding is not None:
        return padding
    k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    return tuple(dilation * (kk - 1) // 2 for kk in k)


@register_op("conv", family="classic")
def conv(c_in, c_out, stride, kernel=3, groups=1, dilation=1, padding=None, bias=False,
         bn=True, bn_eps=1e-5, act="relu", init="default"):
    """conv -> BN -> activation (each optional); ``groups="depthwise"`` means groups = c_in.
    ``init="dirac"``: the first ``min(c_in, c_out)`` filters start as the identity (partial
    Dirac init, airbench), the others as PyTorch's default."""
    groups = c_in if groups == "depthwise" else groups
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, _pad(kernel, dilation, padding), dilation,
                        groups, bias)]
    if init == "dirac":
        if groups != 1:
            raise ValueError("conv init='dirac' needs groups=1")
        with torch.no_grad():
            nn.init.dirac_(layers[0].weight[:min(c_in, c_out)])
    elif init != "default":
        raise ValueError(f"conv init must be 'default' or 'dirac', got {init!r}")
    if bn:
        layers.append(nn.BatchNorm2d(c_out, eps=bn_eps))
    act_layer = create_activation(act, inplace=True)
    if act_layer is not None:
        layers.append(act_layer)
    return nn.Sequential(*layers)


@register_op("bn_act_conv", family="classic")
def bn_act_conv(c_in, c_out, stride, kernel=3, groups=1, padding=None, bias=False,
                bn_eps=1e-5, act="relu"):
    """Pre-activation order: BN -> activation -> conv (DenseNet, pre-act ResNet)."""
    return nn.Sequential(nn.BatchNorm2d(c_in, eps=bn_eps),
                         create_activation(act, inplace=True),  # on BN's output
                         nn.Conv2d(c_in, c_out, kernel, stride, _pad(kernel, 1, padding), 1,
                                   groups, bias))


@register_op("bn_act", family="classic")
def bn_act(c_in, c_out, stride, bn_eps=1e-5, act="relu"):
    """BN -> activation (the closing norm of pre-activation networks)."""
    require_same_channels("bn_act", c_in, c_out)
    layers = [nn.BatchNorm2d(c_in, eps=bn_eps)]
    act_layer = create_activation(act, inplace=True)
    return nn.Sequential(*layers, *([act_layer] if act_layer else []))


@register_op("act", family="classic", parameter_free=True)
def act(c_in, c_out, stride, act="relu"):
    """An activation alone (e.g. after a residual add)."""
    require_same_channels("act", c_in, c_out)
    return create_activation(act, inplace=False) or nn.Identity()


@register_op("fractal_conv", family="classic")
def fractal_conv(c_in, c_out, stride, kernel=3, dropout=0.0):
    """FractalNet's conv unit as its authors' Caffe generator wires it: conv (with bias) ->
    dropout -> BatchNorm without a learned scale/shift (Caffe's BatchNorm layer) -> ReLU."""
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.BatchNorm2d(c_out, affine=False), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


@register_op("max_pool", family="classic", parameter_free=True)
def max_pool(c_in, c_out, stride, kernel=3, padding=0, ceil_mode=False):
    """Max pool with explicit padding and ceil mode (PyTorch semantics)."""
    require_same_channels("max_pool", c_in, c_out)
    return nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)


@register_op("avg_pool", family="classic", parameter_free=True)
def avg_pool(c_in, c_out, stride, kernel=2, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pool with explicit padding, ceil mode and padding counting."""
    require_same_channels("avg_pool", c_in, c_out)
    return nn.AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad)


@register_op("global_avg_pool", family="classic", parameter_free=True)
def global_avg_pool(c_in, c_out, stride, size=1):
    """Adaptive average pool to ``size`` x ``size`` (1: global)."""
    require_same_channels("global_avg_pool", c_in, c_out)
    return nn.AdaptiveAvgPool2d(size)


class Linear(nn.Module):
    """flatten -> Linear, output kept as N x C x 1 x 1 so it stays a feature map in the graph."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1))[:, :, None, None]


@register_op("linear", family="classic")
def linear(c_in, c_out, stride, spatial=1, bias=True):
    """Fully connected layer over a ``spatial`` x ``spatial`` map (flattened)."""
    return Linear(c_in * spatial * spatial, c_out, bias)


@register_op("global_max_pool", family="classic", parameter_free=True)
def global_max_pool(c_in, c_out, stride):
    """Global max pool to 1 x 1."""
    require_same_channels("global_max_pool", c_in, c_out)
    return nn.AdaptiveMaxPool2d(1)


@register_op("dropout", family="classic", parameter_free=True)
def dropout(c_in, c_out, stride, p=0.5):
    """Dropout with probability ``p``."""
    require_same_channels("dropout", c_in, c_out)
    return nn.Dropout(p)


@register_op("lrn", family="classic", parameter_free=True)
def lrn(c_in, c_out, stride, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalization."""
    require_same_channels("lrn", c_in, c_out)
    return nn.LocalResponseNorm(size, alpha, beta, k)
