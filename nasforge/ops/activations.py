"""The activations an op's ``act`` argument names, registered here and nowhere else.

Every op factory builds them with ``nasforge.registry.create_activation(name, inplace=...)``;
the table is ``nasforge.registry.ACTIVATIONS``. A factory takes ``inplace`` (ignored by the
activations that have no in-place form) and returns the layer, or None for ``"none"``.
"""
from __future__ import annotations

import torch
from torch import nn

from nasforge.registry import register_activation

LECUN_TANH_AMPLITUDE = 1.7159  # A of f(a) = A tanh(S a), LeCun et al. 1998, appendix A
LECUN_TANH_SLOPE = 2.0 / 3.0  # S


class LeCunTanh(nn.Module):
    """LeNet-5's squashing function f(a) = 1.7159 tanh(2a/3)."""

    def __init__(self, inplace: bool = False):  # ``inplace``: the activation factory signature
        super().__init__()

    def forward(self, x):
        return LECUN_TANH_AMPLITUDE * torch.tanh(LECUN_TANH_SLOPE * x)


for _name, _layer in (("relu", nn.ReLU), ("relu6", nn.ReLU6), ("hardswish", nn.Hardswish)):
    register_activation(_name)(_layer)


@register_activation("sigmoid")
def sigmoid(inplace: bool) -> nn.Module:
    return nn.Sigmoid()


@register_activation("gelu")
def gelu(inplace: bool) -> nn.Module:
    return nn.GELU()  # exact (erf) GELU, airbench's activation


@register_activation("none")
def no_activation(inplace: bool) -> None:
    return None


register_activation("lecun_tanh")(LeCunTanh)


@register_activation("tanh")
def tanh(inplace: bool) -> nn.Module:
    return nn.Tanh()
