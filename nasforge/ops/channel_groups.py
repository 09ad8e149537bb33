"""Ops that split, reorder, select or pad channels, and the grouped convolutions built on them:
ShuffleNet's channel shuffle, split and unit, DPN's and SKNet's channel slices, PyramidNet's
zero-padded shortcut and CondenseNet's learned group convolution and classifier.

Interleaved group convolutions need nothing more: a grouped ``conv`` and ``channel_shuffle``
are IGC's primary/secondary convolutions and its permutations. The ops that take the family
"classic" use PyTorch's symmetric padding, ``shuffle_conv_3x3`` (a cell op) the NASNet op
conventions (``nasforge.ops.nasnet``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.ops.layers import Conv2dSame, batch_norm, require_same_channels
from nasforge.registry import register_op


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
    require_same_channels("channel_shuffle", c_in, c_out)
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


@register_op("channel_slice", family="classic", parameter_free=True,
             channel_order_sensitive=True)
def channel_slice(c_in, c_out, stride, start=0):
    """Channels ``start`` .. ``start + c_out`` of the input (DPN's split of a state into its
    residual and densely connected parts; SK's split of the input between its paths)."""
    if start < 0 or start + c_out > c_in:
        raise ValueError(f"channel_slice [{start}, {start + c_out}) is outside the input's "
                         f"{c_in} channels")
    return ChannelSlice(start, start + c_out)


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


class IndexSelectConv(nn.Module):
    """CondenseNet's learned group convolution after conversion (``CondenseConv`` in the
    authors' code): index-select the input channels the training kept, BN -> ReLU -> grouped
    conv -> channel shuffle. ``index`` is a buffer: which channels each group reads is learned
    during training and arrives with the weights; fresh it is 0, 1, 2, ... (mod c_in)."""

    def __init__(self, c_in, c_out, kernel, stride, groups, condense_factor):
        super().__init__()
        selected = c_in * groups // condense_factor
        self.register_buffer("index", torch.arange(selected) % c_in)
        self.norm = nn.BatchNorm2d(selected)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(selected, c_out, kernel, stride, kernel // 2, groups=groups,
                              bias=False)
        self.shuffle = ChannelShuffle(groups)

    def forward(self, x):
        x = torch.index_select(x, 1, self.index)
        return self.shuffle(self.conv(self.relu(self.norm(x))))


@register_op("condense_conv", family="classic", channel_order_sensitive=True)
def condense_conv(c_in, c_out, stride, kernel=1, groups=4, condense_factor=4):
    """CondenseNet's learned group convolution in its test-time form (index select + grouped
    conv + shuffle); each of ``groups`` groups reads c_in / ``condense_factor`` channels."""
    if (c_in * groups) % condense_factor or c_out % groups:
        raise ValueError(f"condense_conv: {c_in} -> {c_out} channels do not split into "
                         f"{groups} groups at condense factor {condense_factor}")
    return IndexSelectConv(c_in, c_out, kernel, stride, groups, condense_factor)


class IndexSelectLinear(nn.Module):
    """CondenseNet's classifier after conversion (``CondenseLinear``): a fully connected
    layer over the ``index`` buffer's subset of the features; output kept N x C x 1 x 1."""

    def __init__(self, c_in, c_out, keep):
        super().__init__()
        selected = int(c_in * keep)
        self.register_buffer("index", torch.arange(selected))
        self.fc = nn.Linear(selected, c_out)

    def forward(self, x):
        x = torch.index_select(torch.flatten(x, 1), 1, self.index)
        return self.fc(x)[:, :, None, None]


@register_op("condense_linear", family="classic", channel_order_sensitive=True)
def condense_linear(c_in, c_out, stride, keep=0.5):
    """CondenseNet's classifier: a linear layer over a learned ``keep`` fraction of the
    (globally pooled) features."""
    return IndexSelectLinear(c_in, c_out, keep)


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
