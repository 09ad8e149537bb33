"""Ops of hand-designed networks (ResNet, Inception, MobileNet, ShuffleNet, DenseNet, SENet, VGG).

Same registry and factory signature as NASNet's ops: ``factory(c_in, c_out, stride, **args)``.
Unlike NASNet's ops these use PyTorch's symmetric padding (``padding`` defaults to
``dilation * (kernel - 1) // 2``), because torchvision and timm, the references these networks
are checked against, do. Ops that cannot change the channel count raise when asked to.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.registry import CombineSpec, register_combine, register_op

ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "sigmoid": lambda inplace: nn.Sigmoid(),
    "gelu": lambda inplace: nn.GELU(),  # exact (erf) GELU, airbench's activation
    "none": None,
}


def _activation(name: str, inplace: bool = True):
    """In place only inside an op, on a tensor the op itself made (a graph state may have
    other consumers)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(ACTIVATIONS)})")
    make = ACTIVATIONS[name]
    return make(inplace=inplace) if make else None


def _same_channels(op: str, c_in: int, c_out: int):
    if c_in != c_out:
        raise ValueError(f"{op} cannot change channels ({c_in} -> {c_out})")


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
    act_layer = _activation(act)
    if act_layer is not None:
        layers.append(act_layer)
    return nn.Sequential(*layers)


@register_op("bn_act_conv", family="classic")
def bn_act_conv(c_in, c_out, stride, kernel=3, groups=1, padding=None, bias=False,
                bn_eps=1e-5, act="relu"):
    """Pre-activation order: BN -> activation -> conv (DenseNet, pre-act ResNet)."""
    return nn.Sequential(nn.BatchNorm2d(c_in, eps=bn_eps), _activation(act),  # on BN's output
                         nn.Conv2d(c_in, c_out, kernel, stride, _pad(kernel, 1, padding), 1,
                                   groups, bias))


@register_op("bn_act", family="classic")
def bn_act(c_in, c_out, stride, bn_eps=1e-5, act="relu"):
    """BN -> activation (the closing norm of pre-activation networks)."""
    _same_channels("bn_act", c_in, c_out)
    layers = [nn.BatchNorm2d(c_in, eps=bn_eps)]
    act_layer = _activation(act)
    return nn.Sequential(*layers, *([act_layer] if act_layer else []))


@register_op("act", family="classic", parameter_free=True)
def act(c_in, c_out, stride, act="relu"):
    """An activation alone (e.g. after a residual add)."""
    _same_channels("act", c_in, c_out)
    return _activation(act, inplace=False) or nn.Identity()


@register_op("max_pool", family="classic", parameter_free=True)
def max_pool(c_in, c_out, stride, kernel=3, padding=0, ceil_mode=False):
    """Max pool with explicit padding and ceil mode (PyTorch semantics)."""
    _same_channels("max_pool", c_in, c_out)
    return nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)


@register_op("avg_pool", family="classic", parameter_free=True)
def avg_pool(c_in, c_out, stride, kernel=2, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pool with explicit padding, ceil mode and padding counting."""
    _same_channels("avg_pool", c_in, c_out)
    return nn.AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad)


@register_op("global_avg_pool", family="classic", parameter_free=True)
def global_avg_pool(c_in, c_out, stride, size=1):
    """Adaptive average pool to ``size`` x ``size`` (1: global)."""
    _same_channels("global_avg_pool", c_in, c_out)
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
    _same_channels("global_max_pool", c_in, c_out)
    return nn.AdaptiveMaxPool2d(1)


@register_op("dropout", family="classic", parameter_free=True)
def dropout(c_in, c_out, stride, p=0.5):
    """Dropout with probability ``p``."""
    _same_channels("dropout", c_in, c_out)
    return nn.Dropout(p)


@register_op("lrn", family="classic", parameter_free=True)
def lrn(c_in, c_out, stride, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalization."""
    _same_channels("lrn", c_in, c_out)
    return nn.LocalResponseNorm(size, alpha, beta, k)


class ChannelShuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


@register_op("channel_shuffle", family="classic", parameter_free=True,
             channel_order_sensitive=True)
def channel_shuffle(c_in, c_out, stride, groups=2):
    """ShuffleNet's channel shuffle: (groups, C/groups) -> (C/groups, groups)."""
    _same_channels("channel_shuffle", c_in, c_out)
    return ChannelShuffle(groups)


class ChannelSlice(nn.Module):
    def __init__(self, start, stop):
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x):
        return x[:, self.start:self.stop]


@register_op("channel_split", family="classic", parameter_free=True,
             channel_order_sensitive=True)
def channel_split(c_in, c_out, stride, parts=2, index=0):
    """Part ``index`` of ``parts`` equal channel groups (ShuffleNet v2's split)."""
    if c_in % parts or c_out != c_in // parts:
        raise ValueError(f"channel_split of {c_in} channels into {parts} gives {c_in // parts}, "
                         f"not {c_out}")
    return ChannelSlice(index * c_out, (index + 1) * c_out)


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
    _same_channels("squeeze_excite", c_in, c_out)
    return SqueezeExcite(c_in, squeeze or c_in // reduction)


def _multiply(tensors):
    out = tensors[0]
    for t in tensors[1:]:
        out = out * t
    return out


def _broadcast_channels(channels):
    widths = set(channels) - {1}
    if len(widths) > 1:
        raise ValueError(f"multiply needs equal channel counts (or 1), got {channels}")
    return widths.pop() if widths else 1


MULTIPLY = register_combine(CombineSpec(
    "multiply", apply=_multiply, channels=_broadcast_channels, commutative=True,
    doc="element-wise product (broadcasting, e.g. attention gates)"))


class PadChannels(nn.Module):
    def __init__(self, extra):
        super().__init__()
        self.extra = extra

    def forward(self, x):
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


@register_op("pad_channels", family="classic", parameter_free=True)
def pad_channels(c_in, c_out, stride):
    """Append zero channels up to c_out (PyramidNet's parameter-free shortcut)."""
    if c_out < c_in:
        raise ValueError(f"pad_channels cannot shrink {c_in} -> {c_out} channels")
    return PadChannels(c_out - c_in)
