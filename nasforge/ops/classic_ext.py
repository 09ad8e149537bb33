"""Ops and combines of further hand-designed families: Inception-ResNet's scaled residual,
Dual Path Networks' channel slices and Selective Kernel Networks' attention-weighted sum.

Same conventions as ``nasforge.ops.classic`` (``factory(c_in, c_out, stride, **args)``,
PyTorch padding). These are the pieces that a chain of cells cannot express with the existing
ops; everything else in those networks (the convs, the branches, the concatenations, the
global pooling and 1x1 convs of SK's attention) is ordinary graph structure.
"""
from __future__ import annotations

import torch
from torch import nn

from nasforge.ops.classic import ChannelSlice
from nasforge.registry import CombineSpec, register_combine, register_op


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
    if c_in != c_out:
        raise ValueError(f"residual_scale cannot change channels ({c_in} -> {c_out})")
    return Scale(float(factor))


@register_op("channel_slice", family="classic", parameter_free=True,
             channel_order_sensitive=True)
def channel_slice(c_in, c_out, stride, start=0):
    """Channels ``start`` .. ``start + c_out`` of the input (DPN's split of a state into its
    residual and densely connected parts; SK's split of the input between its paths)."""
    if start < 0 or start + c_out > c_in:
        raise ValueError(f"channel_slice [{start}, {start + c_out}) is outside the input's "
                         f"{c_in} channels")
    return ChannelSlice(start, start + c_out)


def _sk_select(tensors):
    """``tensors`` = [attention logits (N x M*C x 1 x 1), path_1 .. path_M (N x C x H x W)]:
    softmax over the M paths per channel, then the weighted sum of the paths."""
    logits, paths = tensors[0], tensors[1:]
    n, mc = logits.shape[:2]
    weights = torch.softmax(logits.reshape(n, len(paths), mc // len(paths), 1, 1), dim=1)
    out = paths[0] * weights[:, 0]
    for m, path in enumerate(paths[1:], 1):
        out = out + path * weights[:, m]
    return out


def _sk_channels(channels: list[int]) -> int:
    attention, paths = channels[0], channels[1:]
    if len(set(paths)) != 1 or attention != sum(paths):
        raise ValueError(f"sk_select needs M equal paths and M x C attention channels, got "
                         f"attention {attention} and paths {paths}")
    return paths[0]


SK_SELECT = register_combine(CombineSpec(
    "sk_select", apply=_sk_select, channels=_sk_channels, commutative=False, min_inputs=3,
    doc="selective kernel fuse (Li et al. 2019, Fig. 1): inputs [attention logits, paths...]; "
        "per-channel softmax over the paths weights their sum"))
