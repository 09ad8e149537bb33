"""A chain of single-input cells: how hand-designed networks are written in the DSL.

Each cell of a chain is one block (a stem, a residual unit, an Inception module, a head) whose
input 0 is the previous cell's output; its ops carry absolute ``channels``. An optional
auxiliary branch (Inception v3) is a cell fed by the output of cell ``aux_after``.
"""
from __future__ import annotations

import json

from nasforge.dsl.cell import Cell, CellError, JsonRecord, check_format, sha256_hex, to_pydot

CHAIN_FORMAT = "nasforge.chain/1"


class CellChain(JsonRecord):
    def __init__(self, cells: list[Cell], name: str = "", family: str = "",
                 aux: Cell | None = None, aux_after: int | None = None, in_channels: int = 3):
        if (aux is None) != (aux_after is None):
            raise CellError("an auxiliary cell needs aux_after and vice versa", None, name)
        self.cells, self.name, self.family = list(cells), name, family
        self.aux, self.aux_after, self.in_channels = aux, aux_after, in_channels

    def validate(self) -> "CellChain":
        if not self.cells:
            raise CellError("a chain needs at least one cell", None, self.name)
        for cell in self.cells + ([self.aux] if self.aux else []):
            cell.validate()
            if any(cell.graph.nodes[n]["index"] != 0 for n in cell.nodes("input")):
                raise CellError("chain cells have a single input (index 0)", None, cell.name)
        if self.aux_after is not None and not 0 <= self.aux_after < len(self.cells):
            raise CellError(f"aux_after {self.aux_after} out of range", None, self.name)
        return self

    def output_stride(self) -> int:
        """Input pixels per pixel of the final feature map: the product of each cell's
        downsampling (its op strides along the way to its output), e.g. 32 for ResNet-50, 8
        for a dilated residual network. Global pools and unpadded convolutions shrink maps
        without a stride and are not counted."""
        stride = 1
        for cell in self.cells:
            stride *= 2 ** cell.output_level()
        return stride

    def canonical_hash(self) -> str:
        """Hash of the cells in order; concat order counts everywhere when any cell's ops see
        channel positions (a cell's output order reaches the next cell)."""
        ordered = any(c.channel_order_matters() for c in self.cells)
        parts = [c.canonical_hash(ordered) for c in self.cells]
        if self.aux:
            parts.append(f"aux@{self.aux_after}:{self.aux.canonical_hash(ordered)}")
        return sha256_hex(json.dumps(parts))

    def to_dict(self) -> dict:
        d = {"format": CHAIN_FORMAT, "name": self.name, "family": self.family,
             "in_channels": self.in_channels, "cells": [c.to_dict() for c in self.cells]}
        if self.aux:
            d["aux"] = {"after": self.aux_after, "cell": self.aux.to_dict()}
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "CellChain":
        check_format(data, CHAIN_FORMAT)
        cells = data.get("cells")
        if not isinstance(cells, list):
            raise CellError("'cells' must be a list")
        aux = data.get("aux")
        return cls([Cell.from_dict(c) for c in cells], str(data.get("name", "")),
                   str(data.get("family", "")),
                   Cell.from_dict(aux["cell"]) if aux else None,
                   int(aux["after"]) if aux else None, int(data.get("in_channels", 3)))

    def to_dot(self) -> str:
        import pydot

        dot = pydot.Dot(graph_type="digraph", rankdir="TB", label=self.name, labelloc="t",
                        compound="true")
        previous = None
        for i, cell in enumerate(self.cells):
            cluster = pydot.Cluster(f"c{i}", label=cell.name or f"cell {i}")
            to_pydot(cell, prefix=f"{i}/", graph=cluster)
            dot.add_subgraph(cluster)
            if previous is not None:
                dot.add_edge(pydot.Edge(f'"{previous}"', f'"{i}/{cell.nodes("input")[0]}"'))
            previous = f"{i}/{cell.output_node}"
        if self.aux:
            cluster = pydot.Cluster("aux", label="auxiliary head")
            to_pydot(self.aux, prefix="aux/", graph=cluster)
            dot.add_subgraph(cluster)
            dot.add_edge(pydot.Edge(f'"{self.aux_after}/{self.cells[self.aux_after].output_node}"',
                                    f'"aux/{self.aux.nodes("input")[0]}"'))
        return dot.to_string()

    def __repr__(self):
        return f"CellChain({self.name!r}, cells={len(self.cells)})"
