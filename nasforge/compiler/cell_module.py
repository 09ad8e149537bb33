"""Compile one DSL cell into a ``torch.nn.Module`` (any valid cell, not only reference ones).

``CompiledGraph`` is the graph itself, fed with ready inputs; ``NasNetCell`` adds the input
adjustments of the NASNet family around it. Hand-designed blocks use ``CompiledGraph`` directly.
"""
from __future__ import annotations

from itertools import islice
from typing import Sequence

import torch
from torch import nn

from nasforge.dsl.cell import Cell, module_key
from nasforge.ops.layers import DropPath, FactorizedReduction, ReLUConvBN
from nasforge.registry import COMBINES, create_op


def starts_with_relu(module: nn.Module | None) -> bool:
    """Whether ``module`` is a sequence whose first layer is a ReLU (ReLU -> conv -> BN,
    separable and bottleneck convs, ReLU -> factorized reduction): the ops whose ReLU can be
    shared with every other such op reading the same tensor."""
    return isinstance(module, nn.Sequential) and len(module) > 1 and \
        type(module[0]) is nn.ReLU


def after_relu(module: nn.Sequential, relu_x: torch.Tensor) -> torch.Tensor:
    """``module`` (``starts_with_relu``) applied to an input whose ReLU is ``relu_x``: every
    layer but the first, so the result equals ``module(x)``."""
    for layer in islice(module, 1, None):
        relu_x = layer(relu_x)
    return relu_x


class CompiledGraph(nn.Module):
    """A validated cell as a module; ``forward(*inputs)`` takes one tensor per input index.

    Each op maps to its node's ``channels``; when the node leaves it open, to ``filters`` (the
    NASNet convention), or with ``filters=None`` (hand-designed blocks) to its input's width.
    The output concatenates its states; a state at a lower resolution than the others is
    factorized-reduced, and a cell input whose channels differ from ``filters`` is projected
    (1x1 conv + BN), as TF's ``_combine_unused_states`` does.
    ScheduledDropPath (``drop_path_keep_prob``) applies to every op output but identities [TF]
    (the ``identity`` op, and ops built as ``nn.Identity`` such as DARTS' ``skip_connect``).

    Shared ReLUs (``share_relu``, on unless ``set_relu_sharing(model, False)``): in training
    mode, the ops that start with a ReLU and read the same state (in NASNet-A's normal cell,
    three ops read h_{i-1} and two h_i) take one ReLU of it, computed once, instead of one
    each; the values are the same, and each duplicate ReLU output a batch kept for the
    backward pass and its backward are saved. Evaluation mode calls every op module whole
    (forward hooks, the latency tables and ``nasforge export`` see the modules as built).
    """

    share_relu = True  # see set_relu_sharing

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
                module = create_op(d["op"], channels[srcs[0]], c_out, d["stride"],
                                   **d.get("args", {}))
                self.ops[module_key(n)] = module
                channels[n] = c_out
                self.op_nodes.append(n)
                # drop path on every op output but identities ([TF]; DARTS: nn.Identity ops)
                plan.append((n, "op", srcs[0],
                             d["op"] != "identity" and not isinstance(module, nn.Identity)))
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
        # the input indices that an op starting with a ReLU reads (NasNetCell then hands over
        # the ReLU it computes anyway)
        self._relu_first = frozenset(n for n in self.op_nodes
                                     if starts_with_relu(self.ops[module_key(n)]))
        input_index = {n: arg for n, kind, arg, _ in plan if kind == "input"}
        self.relu_read_inputs = frozenset(input_index[arg] for n, kind, arg, _ in plan
                                          if n in self._relu_first and arg in input_index)

    def op_modules(self) -> list[tuple[str, nn.Module]]:
        """(node id, module) of every op node in topological order; called by the weight
        importers, which name the reference's modules after our node ids."""
        return [(n, self.ops[module_key(n)]) for n in self.op_nodes]

    def forward(self, *inputs, relus: Sequence[torch.Tensor | None] = ()):
        """``inputs``: one tensor per input index; ``relus``: their ReLUs where the caller
        has them already (used in training mode with ``share_relu``; None entries: unknown)."""
        states = {}
        shared = self.training and self.share_relu
        relu_of = {}  # state -> its ReLU, computed once (shared mode)
        for node, kind, arg, extra in self._plan:
            if kind == "input":
                states[node] = inputs[arg]
                if shared and arg < len(relus) and relus[arg] is not None:
                    relu_of[node] = relus[arg]
            elif kind == "op":
                module = self.ops[module_key(node)]
                if shared and node in self._relu_first:
                    r = relu_of.get(arg)
                    if r is None:
                        r = relu_of[arg] = torch.relu(states[arg])
                    y = after_relu(module, r)
                else:
                    y = module(states[arg])
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
      its resolution is twice h_i's; ReLU -> 1x1 -> BN when only channels differ (or always,
      with ``project_prev``: DARTS' ``preprocess0``); else raw.

    ``forward(h_i, h_prev)`` is called once per cell application by the network.
    """

    def __init__(self, cell: Cell, filters: int, c_cur: int, c_prev: int | None,
                 prev_is_larger: bool = False, drop_path_keep_prob: float = 1.0,
                 project_prev: bool = False):
        super().__init__()
        self.pre0 = ReLUConvBN(c_cur, filters, 1)
        if c_prev is None:
            self.pre1, c_h1 = None, c_cur
        elif prev_is_larger:
            self.pre1, c_h1 = nn.Sequential(nn.ReLU(inplace=False),
                                            FactorizedReduction(c_prev, filters, 2)), filters
        elif c_prev != filters or project_prev:
            self.pre1, c_h1 = ReLUConvBN(c_prev, filters, 1), filters
        else:
            self.pre1, c_h1 = nn.Identity(), filters
        self.body = CompiledGraph(cell, filters, [filters, c_h1], drop_path_keep_prob)
        self.out_channels = self.body.out_channels
        self.drop_path = self.body.drop_path
        # shared-ReLU mode: whether the ReLU of h_{i-1} is used (by pre1, or by the body's
        # ops when h_{i-1} enters it raw), so the network hands it over
        self.reads_relu_prev = starts_with_relu(self.pre1) or (
            isinstance(self.pre1, nn.Identity) and 1 in self.body.relu_read_inputs)

    def forward(self, h_i, h_prev=None, relu_i=None, relu_prev=None):
        """``relu_i``/``relu_prev``: the ReLUs of ``h_i``/``h_prev`` when the network has
        them (shared-ReLU training, ``CompiledGraph``); the result does not depend on them."""
        if not (self.training and self.body.share_relu):
            h_prev = h_i if self.pre1 is None else self.pre1(h_prev)
            return self.body(self.pre0(h_i), h_prev)
        relu_i = torch.relu(h_i) if relu_i is None else relu_i
        h0 = after_relu(self.pre0, relu_i) if starts_with_relu(self.pre0) else self.pre0(h_i)
        if self.pre1 is None:
            h1, relu_1 = h_i, relu_i
        elif isinstance(self.pre1, nn.Identity):
            h1, relu_1 = h_prev, relu_prev
        elif starts_with_relu(self.pre1):
            h1, relu_1 = after_relu(self.pre1, torch.relu(h_prev) if relu_prev is None
                                    else relu_prev), None
        else:
            h1, relu_1 = self.pre1(h_prev), None
        return self.body(h0, h1, relus=(None, relu_1))


def set_relu_sharing(model: nn.Module, on: bool) -> nn.Module:
    """Turn shared ReLUs (``CompiledGraph``) on or off in every compiled graph of ``model``;
    called by ``nasforge.train.train`` with ``Recipe.speed.share_relu`` (off: every op computes its
    own ReLU, as before). Returns ``model``."""
    for m in model.modules():
        if isinstance(m, CompiledGraph):
            m.share_relu = bool(on)
    return model
