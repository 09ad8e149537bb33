"""A weight-sharing supernet of the DARTS space (``search_spaces.darts``): DARTS' search cell
in DARTS' macro (``MACROS["darts"]``), from the same op registry as the stand-alone children.

Every cell position of the macro's schedule holds DARTS' search cell: each intermediate node
(2..5) sums, over every earlier state (``EDGES``: 2 + 3 + 4 + 5 = 14 edges), one module per
op of ``DARTS_OPS`` built as the child builds it (``create_op(darts_<op>, C, C, stride)``,
stride 2 on a reduction cell's inputs). The stem, each cell's input adjustments (DARTS'
``preprocess0/1``, the compiler's ``NasNetCell.pre0/pre1``) and the classifier are the
modules of the compiler's ``Network`` itself, so their state-dict keys are the child's.

The layout (``DartsLayout``) has one slot per edge and cell kind (28 slots), whose candidates
are ``none`` then the 7 ops (DARTS' ``PRIMITIVES``): ``none`` is how an edge says "not one of
the node's two inputs". A path (an architecture of the space: two inputs per node) runs only
its 16 ops. Mixed mode (``mix=``): node j = sum over its edges and ops of weight x op(state
i); ``none`` adds zeros (not computed). The derived architecture follows DARTS' rule
(``DartsLayout.derive``): per node, the two incoming edges whose strongest non-``none`` op
weighs most, each with that op; always a valid architecture of the space. Slot values
that do not keep exactly two edges per node (a per-slot sample, GDAS') are no architecture,
so gdas is not offered on this family (``slot_samples_are_paths``).

The search cells' BN (the edges' ops and the input adjustments, as DARTS' search network,
whose ``MixedOp`` and ``preprocess`` use ``affine=False``) is the macro's choice
(``DartsMacro.bn_affine``, ``bn_running_stats``; preset: no affine parameters, running
statistics kept); the stem's BN is the child's. DARTS' search network also puts a BN after
the pools of a mixed op; here a path's pool is the child's (no BN), so a path computes what
its stand-alone child computes with inherited weights (tested).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import nn

from nasforge.compiler.network import Network, NetworkConfig
from nasforge.dsl import module_key
from nasforge.oneshot.choices import (ChoiceLayout, Slot, SupernetError, SupernetFamily,
                                      register_family)
from nasforge.oneshot.nas_bench_201 import search_batch_norms
from nasforge.registry import create_op
from nasforge.search_spaces.darts import (CELL_KINDS, DARTS_OPS, NUM_INPUTS, NUM_NODES,
                                          REGISTRY_OPS, DartsGenotype, DartsSpace)
from nasforge.zoo import SETTINGS

NONE = "none"  # DARTS' search-only op: the edge is not one of the node's inputs
CANDIDATES: tuple[str, ...] = (NONE,) + DARTS_OPS  # DARTS' PRIMITIVES order
# (node, source) per edge in DARTS' numbering (0 = c_{k-2}, 1 = c_{k-1}, 2.. = nodes), node by
# node, sources ascending: DARTS' alpha rows
EDGES: tuple[tuple[int, int], ...] = tuple(
    (NUM_INPUTS + k, i) for k in range(NUM_NODES) for i in range(NUM_INPUTS + k))
KEPT_INPUTS = 2  # edges a node keeps in the derived cell
# an architecture of the space for the reference network (any one: the fixed parts are equal)
REFERENCE = DartsGenotype.make(*[[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)] * NUM_NODES] * 2)


def edge_key(node: int, source: int) -> str:
    """The ModuleDict key of an edge."""
    return f"{node}_from{source}"


@dataclass(frozen=True)
class DartsMacro:
    """The supernet's network: DARTS' macro (``network``, a ``NetworkConfig`` with ``macro =
    "darts"``) and the search cells' BN."""

    network: NetworkConfig
    bn_affine: bool = False  # search cells' BN has weight and bias (DARTS' search: no)
    bn_running_stats: bool = True  # ... keeps running statistics

    @property
    def input_size(self) -> int:  # pixels (square)
        return self.network.input_size

    @property
    def in_channels(self) -> int:
        return self.network.in_channels

    @property
    def num_classes(self) -> int:
        return self.network.num_classes


BN_OPTIONS = tuple(f.name for f in fields(DartsMacro) if f.name != "network")
NETWORK_OPTIONS = tuple(f.name for f in fields(NetworkConfig))


class DartsLayout(ChoiceLayout):
    """28 slots, normal cell then reduction cell, an edge each (``EDGES`` order, labelled
    ``j<-i``), of ``CANDIDATES`` (``none`` first); ``route`` nests them ``[cell kind][edge]``."""

    def __init__(self, space: DartsSpace):
        self.space = space
        self.slots = tuple(Slot(kind, f"{j}<-{i}", CANDIDATES)
                           for kind in CELL_KINDS for j, i in EDGES)

    def route(self, values):
        values = list(values)
        return [values[c * len(EDGES):(c + 1) * len(EDGES)] for c in range(len(CELL_KINDS))]

    def arch(self, indices):
        """The architecture whose kept edges are the non-``none`` slots; SupernetError unless
        every node keeps exactly two."""
        cells = []
        for kind, row in zip(CELL_KINDS, self.route([int(i) for i in indices])):
            edges = []
            for k in range(NUM_NODES):
                node = [(CANDIDATES[row[e]], i) for e, (j, i) in enumerate(EDGES)
                        if j == NUM_INPUTS + k and row[e] != 0]
                if len(node) != KEPT_INPUTS:
                    raise SupernetError(f"{kind} cell: node {NUM_INPUTS + k} keeps {len(node)} "
                                        f"edges, an architecture of the darts space keeps "
                                        f"{KEPT_INPUTS}")
                edges += node
            cells.append(edges)
        return DartsGenotype.make(*cells)

    def derive(self, probabilities):
        """DARTS' rule (``genotype()`` in its ``model_search.py``): per node, the two incoming
        edges whose strongest non-``none`` op weighs most (the lower source on ties), each
        with that op."""
        probabilities = [[float(v) for v in p.detach().flatten()] for p in probabilities]
        indices = [0] * len(self.slots)
        for c in range(len(CELL_KINDS)):
            for k in range(NUM_NODES):
                edges = [e for e, (j, _) in enumerate(EDGES) if j == NUM_INPUTS + k]
                best = {e: max(range(1, len(CANDIDATES)),
                               key=lambda o, e=e: (probabilities[c * len(EDGES) + e][o], -o))
                        for e in edges}
                strength = {e: probabilities[c * len(EDGES) + e][best[e]] for e in edges}
                for e in sorted(edges, key=lambda e: -strength[e])[:KEPT_INPUTS]:
                    indices[c * len(EDGES) + e] = best[e]
        return self.arch(indices)

    def indices(self, arch):
        out = []
        for edges in arch.cells():
            chosen = {(NUM_INPUTS + n // 2, source): op for n, (op, source) in enumerate(edges)}
            out += [CANDIDATES.index(chosen[edge]) if edge in chosen else 0 for edge in EDGES]
        return out

    def ops(self, arch):
        return [op for edges in arch.cells() for op, _ in edges]


class DartsSearchCell(nn.Module):
    """One cell position: the child's input adjustments (``pre0`` on c_{k-1}, ``pre1`` on
    c_{k-2}) and every op of every edge (``edges[edge_key][op]``)."""

    def __init__(self, pre0: nn.Module, pre1: nn.Module, channels: int, reduction: bool):
        super().__init__()
        self.pre0, self.pre1 = pre0, pre1
        self.edges = nn.ModuleDict()
        for j, i in EDGES:
            stride = 2 if reduction and i < NUM_INPUTS else 1
            self.edges[edge_key(j, i)] = nn.ModuleDict({
                op: create_op(REGISTRY_OPS[op], channels, channels, stride) for op in DARTS_OPS})

    def forward(self, h_i, h_prev, edges=None, mix=None):
        """Path mode with ``edges`` (the cell's ``(op, input)`` pairs, two per node), mixed
        mode with ``mix`` (a probability per candidate, per edge)."""
        states = [self.pre1(h_prev), self.pre0(h_i)]  # DARTS' order: c_{k-2}, c_{k-1}
        for k in range(NUM_NODES):
            j = NUM_INPUTS + k
            if edges is not None:
                total = sum(self.edges[edge_key(j, i)][op](states[i])
                            for op, i in edges[2 * k:2 * k + 2])
            else:
                total = 0
                for e, (t, i) in enumerate(EDGES):
                    if t == j:
                        ops = self.edges[edge_key(j, i)]
                        total = total + sum(w * ops[op](states[i])
                                            for w, op in zip(mix[e][1:], DARTS_OPS))
            states.append(total)
        return torch.cat(states[NUM_INPUTS:], 1)


class DartsSupernet(nn.Module):
    """Every architecture of the DARTS space in DARTS' macro (``macro``), sharing weights."""

    def __init__(self, space: DartsSpace, macro: DartsMacro):
        super().__init__()
        check_darts(space, macro)
        self.space, self.config = space, macro
        reference = Network(space.to_graph(REFERENCE), self.child_config())
        self.schedule = reference.schedule
        self.stem, self.classifier = reference.stem, reference.classifier
        self.cells = nn.ModuleList(
            search_batch_norms(DartsSearchCell(cell.pre0, cell.pre1, slot.filters,
                                               slot.kind == "reduction"),
                               macro.bn_affine, macro.bn_running_stats)
            for slot, cell in zip(self.schedule.slots, reference.cells))

    def child_config(self) -> NetworkConfig:
        """The stand-alone children's network: the macro without aux head or drop-path."""
        return replace(self.config.network, aux_head=False, drop_path_keep_prob=1.0)

    def forward(self, x, arch: DartsGenotype | None = None, mix=None, gates=None):
        if (arch is None) == (mix is None):
            raise ValueError("give exactly one of arch (path mode) and mix (mixed mode)")
        if gates is not None:
            raise SupernetError("the darts-space supernet has no gated paths (gdas)")
        outputs = [self.stem(x)]
        for slot, cell in zip(self.schedule.slots, self.cells):
            kind = 0 if slot.kind == "normal" else 1
            outputs.append(cell(outputs[slot.cur], outputs[slot.prev],
                                None if arch is None else arch.cells()[kind],
                                None if mix is None else mix[kind]))
        return self.classifier(torch.flatten(outputs[-1].mean((2, 3)), 1))

    def child(self, arch: DartsGenotype, inherit: bool = True) -> Network:
        """The stand-alone network of ``arch`` at the supernet's size, with this supernet's
        weights for its choices when ``inherit``."""
        network = Network(self.space.to_graph(arch), self.child_config())
        if inherit:
            inherit_darts_weights(self, network, arch)
        return network


def _copy_into(source: nn.Module, target: nn.Module) -> None:
    """``source``'s state into ``target``; a BN that ``source`` keeps without weight/bias or
    running statistics leaves ``target``'s (1, 0; mean 0, variance 1)."""
    state = target.state_dict()
    state.update(source.state_dict())
    target.load_state_dict(state)


def inherit_darts_weights(supernet: DartsSupernet, network: Network,
                          arch: DartsGenotype) -> None:
    """Copy ``arch``'s path (weights, BN statistics) into its stand-alone network: stem and
    classifier whole, each cell's input adjustments, and each node's two ops into the child's
    op nodes (``b<node>_a``/``_b``: ``genotype_pair``'s names, edges in genotype order)."""
    with torch.no_grad():
        network.stem.load_state_dict(supernet.stem.state_dict())
        network.classifier.load_state_dict(supernet.classifier.state_dict())
        for slot, source, target in zip(supernet.schedule.slots, supernet.cells, network.cells):
            _copy_into(source.pre0, target.pre0)
            _copy_into(source.pre1, target.pre1)
            edges = arch.cells()[0 if slot.kind == "normal" else 1]
            for n, (op, i) in enumerate(edges):
                k, side = divmod(n, 2)
                _copy_into(source.edges[edge_key(NUM_INPUTS + k, i)][op],
                           target.body.ops[module_key(f"b{k}_{'ab'[side]}")])


def check_darts(space, macro: DartsMacro) -> None:
    """SupernetError, naming the problem, when the supernet cannot be built."""
    if not isinstance(space, DartsSpace):
        raise SupernetError(f"the darts-space supernet needs the darts space, got "
                            f"{type(space).__name__}")
    if macro.network.macro != "darts" or macro.network.reduction_layout != "insert":
        raise SupernetError(f"the darts-space supernet is DARTS' network (macro darts, "
                            f"reduction layout insert), not macro {macro.network.macro!r}, "
                            f"layout {macro.network.reduction_layout!r}")


def darts_macro(space: DartsSpace, setting: str | None, overrides: dict, data) -> DartsMacro:
    """The supernet's network for ``data``: the zoo ``setting`` (default darts; one with DARTS'
    macro) with the recipe's ``overrides`` (``N``, ``filters``, ... and ``bn_affine``,
    ``bn_running_stats``)."""
    setting = setting or "darts"
    if setting not in SETTINGS or SETTINGS[setting].macro != "darts":
        darts_settings = [n for n, c in SETTINGS.items() if c.macro == "darts"]
        raise SupernetError(f"the darts space's supernet is DARTS' network (setting "
                            f"{' or '.join(darts_settings)}), not setting {setting!r}: use a "
                            f"darts-space recipe (e.g. oneshot-darts-smoke)", options=("recipe",))
    unknown = sorted(set(overrides) - set(BN_OPTIONS) - set(NETWORK_OPTIONS))
    if unknown:
        raise SupernetError(f"unknown darts-space supernet option(s) {', '.join(unknown)} "
                            f"(known: {', '.join(BN_OPTIONS + NETWORK_OPTIONS)})")
    bn = {k: v for k, v in overrides.items() if k in BN_OPTIONS}
    network = replace(SETTINGS[setting], **{k: v for k, v in overrides.items()
                                            if k not in BN_OPTIONS},
                      num_classes=data.num_classes, input_size=data.image_size[0],
                      in_channels=data.channels)
    return DartsMacro(network, **bn)


DARTS_FAMILY = register_family(SupernetFamily(
    "darts", DartsSpace, DartsLayout, DartsSupernet, darts_macro, check_darts,
    setting="darts", slot_samples_are_paths=False))
