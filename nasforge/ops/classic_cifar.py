"""Ops and combines of the CIFAR families of the CNN-design surveys: FractalNet, CondenseNet,
Merge-and-Run (DMRNet), Highway networks and stochastic depth.

Same factory signature as the other classic ops: ``factory(c_in, c_out, stride, **args)``,
PyTorch's symmetric padding. Interleaved group convolutions need nothing new: a grouped
``conv`` and ShuffleNet's ``channel_shuffle`` are IGC's primary/secondary convolutions and its
permutations.
"""
from __future__ import annotations

import torch
from torch import nn

from nasforge.ops.classic import ChannelShuffle
from nasforge.registry import CombineSpec, register_combine, register_op


def _mean(tensors):
    return torch.stack(tensors).mean(0)


def _same_channels(channels):
    if len(set(channels)) != 1:
        raise ValueError(f"mean needs equal channel counts, got {channels}")
    return channels[0]


MEAN = register_combine(CombineSpec(
    "mean", apply=_mean, channels=_same_channels, commutative=True,
    doc="element-wise mean (FractalNet's join, merge-and-run's average of two streams)"))


def _highway(tensors):
    transform, gate, carry = tensors
    # Srivastava et al. 2015, eq. 3: y = H(x) T(x) + x (1 - T(x)); written as a lerp so the
    # carry term is exact when the gate saturates at 0
    return torch.lerp(carry, transform, gate)


HIGHWAY = register_combine(CombineSpec(
    "highway", apply=_highway, channels=_same_channels, commutative=False,
    min_inputs=3, max_inputs=3,
    doc="highway layer output H*T + x*(1-T) of the inputs (H, T, x), in that order"))


@register_op("fractal_conv", family="classic")
def fractal_conv(c_in, c_out, stride, kernel=3, dropout=0.0):
    """FractalNet's conv unit as its authors' Caffe generator wires it: conv (with bias) ->
    dropout -> BatchNorm without a learned scale/shift (Caffe's BatchNorm layer) -> ReLU."""
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.BatchNorm2d(c_out, affine=False), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class HighwayGate(nn.Sequential):
    """sigmoid(conv(x) + b_T), b_T initialised negative so that a fresh layer mostly carries."""

    def __init__(self, c_in, c_out, kernel, stride, bias_init):
        conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=True)
        nn.init.constant_(conv.bias, bias_init)
        super().__init__(conv, nn.Sigmoid())


@register_op("highway_gate", family="classic")
def highway_gate(c_in, c_out, stride, kernel=3, bias_init=-2.0):
    """The transform gate T(x) of a convolutional highway layer (a conv with bias, sigmoid);
    ``bias_init`` is the initial gate bias (Srivastava et al. use negative values)."""
    return HighwayGate(c_in, c_out, kernel, stride, bias_init)


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


class StochasticDepth(nn.Module):
    """Huang et al. 2016: in training, the whole mini-batch's residual branch survives with
    probability ``survival`` (else it is zero, so the block is its identity shortcut); in
    evaluation the branch is scaled by ``survival``, its expectation.

    One draw per mini-batch as in the paper (timm's ``drop_path`` draws per example), on the
    CPU from torch's global generator, which ``train``'s seed sets (as for ``nn.Dropout``).
    """

    def __init__(self, survival: float):
        super().__init__()
        self.survival = survival

    def forward(self, x):
        if not self.training:
            return x * self.survival
        if torch.rand(()) < self.survival:
            return x
        # The branch is already computed here (the op sits at its end), so dropping saves no
        # time; multiplying keeps the graph, and the branch's gradients are zeros, not absent.
        return x * 0.0

    def extra_repr(self):
        return f"survival={self.survival}"


@register_op("stochastic_depth", family="classic", parameter_free=True)
def stochastic_depth(c_in, c_out, stride, survival=1.0):
    """Stochastic depth on a residual branch: kept with probability ``survival`` per
    mini-batch in training, scaled by ``survival`` in evaluation."""
    if c_in != c_out or stride != 1:
        raise ValueError(f"stochastic_depth keeps its input's shape ({c_in} -> {c_out}, "
                         f"stride {stride})")
    if not 0.0 < survival <= 1.0:
        raise ValueError(f"stochastic_depth survival must be in (0, 1], got {survival}")
    return StochasticDepth(survival)
