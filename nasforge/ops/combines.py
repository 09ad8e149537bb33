"""Combine nodes: how a block merges its inputs (registered, so later work adds others)."""
from __future__ import annotations

import torch

from nasforge.registry import CombineSpec, register_combine


def _same_channels(channels: list[int]) -> int:
    if len(set(channels)) != 1:
        raise ValueError(f"add needs equal channel counts, got {channels}")
    return channels[0]


def _add(tensors):
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out


ADD = register_combine(CombineSpec(
    "add", apply=_add, channels=_same_channels, commutative=True,
    doc="element-wise sum"))

CONCAT = register_combine(CombineSpec(
    "concat", apply=lambda tensors: torch.cat(tensors, 1), channels=sum, commutative=False,
    permutes_channels=True,
    min_inputs=1, doc="concatenation along the channel dimension"))
