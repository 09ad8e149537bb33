"""What sits on a residual branch or gates it: stochastic depth (Huang et al. 2016),
Inception-ResNet's residual scaling, and the highway layer's transform gate with the combine
that joins its carry and transform paths (Srivastava et al. 2015).

The plain joins of multi-path blocks (``add``, ``mean``) are in ``nasforge.ops.combines``. Same
factory signature as the other classic ops: ``factory(c_in, c_out, stride, **args)``,
PyTorch's symmetric padding.
"""
from __future__ import annotations

import torch
from torch import nn

from nasforge.ops.combines import equal_channels
from nasforge.ops.layers import require_same_channels
from nasforge.registry import CombineSpec, register_combine, register_op


def _highway(tensors):
    transform, gate, carry = tensors
    # Srivastava et al. 2015, eq. 3: y = H(x) T(x) + x (1 - T(x)); written as a lerp so the
    # carry term is exact when the gate saturates at 0
    return torch.lerp(carry, transform, gate)


HIGHWAY = register_combine(CombineSpec(
    "highway", apply=_highway, channels=equal_channels("highway"), commutative=False,
    min_inputs=3, max_inputs=3,
    doc="highway layer output H*T + x*(1-T) of the inputs (H, T, x), in that order"))


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


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def extra_repr(self):
        return f"factor={self.factor}"


@register_op("residual_scale", family="classic", parameter_free=True)
def residual_scale(c_in, c_out, stride, factor=1.0):
    """Multiply by a constant ``factor`` (Inception-ResNet scales its residual branch by
    0.1 to 0.3 before the add, Szegedy et al. 2016 section 3.3)."""
    require_same_channels("residual_scale", c_in, c_out)
    return Scale(float(factor))


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
