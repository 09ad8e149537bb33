"""Compile one DSL cell into a ``torch.nn.Module`` (any valid cell, not only reference ones).

``CompiledGraph`` is the graph itself, fed with ready inputs; ``NasNetCell`` adds the input
adjustments of the NASNet family around it. Hand-designed blocks use ``CompiledGraph`` directly.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nasforge.dsl.cell import Cell, module_key
from nasforge.ops.layers import DropPath, FactorizedReduction, ReLUConvBN
from nasforge.registry import COMBINES, create_op


class CompiledGraph(nn.Module):
    """A validated cell as a module; ``forward(*inputs)`` takes one tensor per input index.

    Each op maps to its node's ``channels``; when the node leaves it open, to ``filters`` (the
    NASNet convention), or with ``filters=None`` (hand-designed blocks) to its input's width.
    The output concatenates its states; a state at a lower resolution than the others is
    factorized-reduced, and a cell input whose channels differ from ``filters`` is projected
    (1x1 conv + BN), as TF's ``_combine_unused_states`` does.
    ScheduledDropPath (``drop_path_keep_prob``) applies to every op output but identities [TF].
    """

    def __init__(self, cell: Cell, filters: int | None, input_channels: Sequence[int],
                 drop_path_keep_prob: float = 1.0):
        super().__init__()
        cell.validate()
        self.cell_name = cell.name
        self.drop_path = DropPath(drop_path_keep_prob)
        channels: dict[str, int] = {}
        levels = cell.resolution_levels()
        self.ops = nn.ModuleDict()  # op node id -> module, named by module_key
        self.adapt = nn.ModuleDict()
        self.op_nodes: list[str] = []
        plan = []
        for n in cell.topological_order():
            d, srcs = cell.graph.nodes[n], cell.operands(n)
            kind = d["kind"]
            if kind == "input":
                if d["index"] >= len(input_channels):
                    raise ValueError(f"cell {cell.name!r} reads input {d['index']}, but only "
                                     f"{len(input_channels)} input(s) are given")
                channels[n] = input_channels[d["index"]]
                plan.append((n, "input", d["index"], None))
            elif kind == "op":
                c_out = d.get("channels") or filters or channels[srcs[0]]
                self.ops[module_key(n)] = create_op(d["op"], channels[srcs[0]], c_out,
                                                    d["stride"], **d.get("args", {}))
                channels[n] = c_out
                self.op_nodes.append(n)
                plan.append((n, "op", srcs[0], d["op"] != "identity"))
            elif kind == "combine":
                spec = COMBINES[d["combine"]]
                channels[n] = spec.channels([channels[s] for s in srcs])
                plan.append((n, "combine", srcs, spec.apply))
            else:
                top = max(levels[s] for s in srcs)
                for s in srcs:
                    is_input = cell.graph.nodes[s]["kind"] == "input"
                    reshape = filters is not None and is_input and channels[s] != filters
                    if levels[s] < top or reshape:
                        width = filters or channels[s]
                        self.adapt[module_key(s)] = FactorizedReduction(
                            channels[s], width, top // levels[s])
                        channels[s] = width
                self.out_channels = sum(channels[s] for s in srcs)
                self.output_states = srcs
        self._plan = plan

    def op_modules(self) -> list[tuple[str, nn.Module]]:
        """(node id, module) of every op node in topological order; called by the weight
        importers, which name the reference's modules after our node ids."""
        return [(n, self.ops[module_key(n)]) for n in self.op_nodes]

    def forward(self, *inputs):
        states = {}
        for node, kind, arg, extra in self._plan:
            if kind == "input":
                states[node] = inputs[arg]
            elif kind == "op":
                y = self.ops[module_key(node)](states[arg])
                states[node] = self.drop_path(y) if extra else y
            else:
                states[node] = extra([states[s] for s in arg])
        outs = []
        for s in self.output_states:
            key = module_key(s)
            outs.append(self.adapt[key](states[s]) if key in self.adapt else states[s])
        return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


class NasNetCell(nn.Module):
    """A NASNet-family cell at a given filter count, with the input adjustments of [TF]:

    * h_i: ReLU -> 1x1 conv -> BN to ``filters``;
    * h_{i-1}: the raw h_i tensor when absent (first cell); ReLU -> factorized reduction when
      its resolution is twice h_i's; ReLU -> 1x1 -> BN when only channels differ; else raw.

    ``forward(h_i, h_prev)`` is called once per cell application by the network.
    """

    def __init__(self, cell: Cell, filters: int, c_cur: int, c_prev: int | None,
                 prev_is_larger: bool = False, drop_path_keep_prob: float = 1.0):
        super().__init__()
        self.pre0 = ReLUConvBN(c_cur, filters, 1)
        if c_prev is None:
            self.pre1, c_h1 = None, c_cur
        elif prev_is_larger:
            self.pre1, c_h1 = nn.Sequential(nn.ReLU(inplace=False),
                                            FactorizedReduction(c_prev, filters, 2)), filters
        elif c_prev != filters:
            self.pre1, c_h1 = ReLUConvBN(c_prev, filters, 1), filters
        else:
            self.pre1, c_h1 = nn.Identity(), filters
        self.body = CompiledGraph(cell, filters, [filters, c_h1], drop_path_keep_prob)
        self.out_channels = self.body.out_channels
        self.drop_path = self.body.drop_path

    def forward(self, h_i, h_prev=None):
        h_prev = h_i if self.pre1 is None else self.pre1(h_prev)
        return self.body(self.pre0(h_i), h_prev)
