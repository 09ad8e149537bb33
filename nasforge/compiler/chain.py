"""Compile a CellChain (hand-designed networks) into a module."""
from __future__ import annotations

import torch
from torch import nn

from nasforge.compiler.cell_module import CompiledGraph
from nasforge.dsl.chain import CellChain


class ChainNetwork(nn.Module):
    """Cells applied one after the other; the last one ends in the classifier.

    ``forward`` returns logits (N x classes), or ``(logits, aux_logits)`` in training mode when
    the chain has an auxiliary branch.
    """

    def __init__(self, chain: CellChain):
        super().__init__()
        chain.validate()
        self.arch_name = chain.name
        self.aux_after = chain.aux_after
        self.blocks = nn.ModuleList()
        width = chain.in_channels
        for cell in chain.cells:
            self.blocks.append(CompiledGraph(cell, None, [width]))
            width = self.blocks[-1].out_channels
            if len(self.blocks) - 1 == chain.aux_after:
                self.aux = CompiledGraph(chain.aux, None, [width])
        self.num_outputs = width

    def forward(self, x):
        aux = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.aux_after and self.training:
                aux = torch.flatten(self.aux(x), 1)
        logits = torch.flatten(x, 1)
        return (logits, aux) if aux is not None else logits
