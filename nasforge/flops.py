"""Parameter and multiply-add counts, using torch's own flop counter.

``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-add of convolutions
and matrix products (pooling, BN and element-wise ops are not counted), which is the
convention of the published "multiply-adds" figures; so mult-adds = FLOPs / 2.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Trainable parameters (BN running statistics are buffers and excluded, as in PyTorch)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_mult_adds(model: nn.Module, input_size: int, in_channels: int = 3) -> tuple[int, tuple]:
    """(multiply-adds, output shape) of one forward pass on a 1 x C x S x S input, eval mode."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_channels, input_size, input_size)
        with FlopCounterMode(display=False) as counter:
            out = model(x)
        return counter.get_total_flops() // 2, tuple(out.shape)
    finally:
        model.train(was_training)


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of ``model(x)``
    (``saved_tensors_hooks``; a tensor saved by several ops counts once): the activation
    memory of a training step, as the shared-ReLU and recomputed-cell figures measure it."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(storages.values())
