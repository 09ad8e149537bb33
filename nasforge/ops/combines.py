"""Combine nodes: how a block merges its inputs (registered, so later work adds others).

The element-wise merges any network uses are here; a combine that belongs to one family of
ops (``highway``, ``sk_select``, ``attention_residual``) is registered next to those ops.
"""
from __future__ import annotations

from typing import Callable

import torch

from nasforge.registry import CombineSpec, register_combine


def equal_channels(combine: str) -> Callable[[list[int]], int]:
    """``CombineSpec.channels`` of a combine whose inputs all have one channel count."""

    def channels(counts: list[int]) -> int:
        if len(set(counts)) != 1:
            raise ValueError(f"{combine} needs equal channel counts, got {counts}")
        return counts[0]

    return channels


def _add(tensors):
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out


ADD = register_combine(CombineSpec(
    "add", apply=_add, channels=equal_channels("add"), commutative=True,
    doc="element-wise sum"))

CONCAT = register_combine(CombineSpec(
    "concat", apply=lambda tensors: torch.cat(tensors, 1), channels=sum, commutative=False,
    permutes_channels=True,
    min_inputs=1, doc="concatenation along the channel dimension"))


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


def _mean(tensors):
    return torch.stack(tensors).mean(0)


MEAN = register_combine(CombineSpec(
    "mean", apply=_mean, channels=equal_channels("mean"), commutative=True,
    doc="element-wise mean (FractalNet's join, merge-and-run's average of two streams)"))
