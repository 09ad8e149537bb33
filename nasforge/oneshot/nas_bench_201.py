"""A weight-sharing supernet of NAS-Bench-201's space (one op per edge), from the space's own
network definition.

The supernet is ``search_spaces.nas_bench_201.network`` with its cells replaced: the chain is
built for two different cells, and the positions where the two differ are the search cells;
every other position (stem, the stride-2 residual blocks, the classifier) is compiled from the
chain's own DSL cell exactly as the stand-alone child compiles it (``CompiledGraph``), so its
state-dict keys are the child's. A search cell holds, for every edge (``EDGES``), one module per
op of ``NB201_OPS`` built by the op registry as the child builds it (``create_op(op, C, C, 1)``).
All cells share one choice per edge (the space has one cell), as NAS-Bench-201's search
models do: the layout has 6 slots of 5 candidates, ``none`` included.

Forward modes as the NASNet supernet's (``supernet.py``): ``arch=`` (a path: only its ops
run), ``arch=`` with ``gates=`` (GDAS: the chosen op's output times its hard weight, plus the
other weights), ``mix=`` (DARTS: node j = sum over its edges and ops of weight x op(node i)).
A path computes what ``child(arch)`` computes with inherited weights (tested).

The search cells' BN is the macro's choice (``SearchBatchNorm``): NAS-Bench-201's search cells
use BN without affine parameters (``affine=False``, the preset); whether they keep running
statistics is its scripts' ``--track_running_stats`` argument (``running_stats``). A child
inherits weight 1, bias 0 for a BN without affine parameters (the same function), and keeps
its fresh running statistics for a BN without them: evaluate it in train mode or recalibrate.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from nasforge.compiler.cell_module import CompiledGraph
from nasforge.compiler.chain import ChainNetwork
from nasforge.dsl import module_key
from nasforge.oneshot.choices import (ChoiceLayout, Slot, SupernetError, SupernetFamily,
                                      register_family)
from nasforge.registry import create_op
from nasforge.search_spaces.nas_bench_201 import (DATASETS, EDGES, NB201_OPS, NUM_NODES,
                                                  STEM_CHANNELS, CELLS_PER_STAGE,
                                                  NasBench201Space, Nb201Cell, cell_graph,
                                                  edge_node_id, network)

GROUP = "cell"  # the one cell's slots (one heatmap)


@dataclass(frozen=True)
class Nb201Macro:
    """The supernet's network: NAS-Bench-201's with ``C`` channels in its first stage and ``N``
    cells per stage, for ``dataset``'s classes, and the search cells' BN."""

    dataset: str = "cifar10"  # a key of search_spaces.nas_bench_201.DATASETS (the classes)
    C: int = STEM_CHANNELS  # channels of the first stage (16 in the table's networks)
    N: int = CELLS_PER_STAGE  # cells per stage (5 in the table's networks)
    input_size: int = 32  # pixels (square)
    in_channels: int = 3
    bn_affine: bool = False  # search cells' BN has weight and bias (NAS-Bench-201: no)
    bn_running_stats: bool = True  # ... keeps running statistics (its scripts' BN=1)

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes

    def chain(self, cell: Nb201Cell):
        """The stand-alone network of ``cell`` at this size (``network``)."""
        return network(cell, self.dataset, C=self.C, N=self.N)


MACRO_OPTIONS = tuple(f.name for f in fields(Nb201Macro) if f.name not in
                      ("dataset", "input_size", "in_channels"))


class Nb201Layout(ChoiceLayout):
    """6 slots (the edges, in ``EDGES`` order, labelled ``j<-i``) of the 5 ops; ``route`` is
    the flat list (all cells share it)."""

    def __init__(self, space: NasBench201Space):
        self.space = space
        self.slots = tuple(Slot(GROUP, f"{j}<-{i}", NB201_OPS) for j, i in EDGES)

    def route(self, values):
        return list(values)

    def arch(self, indices):
        return self.space.decode([int(i) for i in indices])

    def indices(self, arch):
        return self.space.encode(arch)

    def ops(self, arch):
        return list(arch.ops)

    def drawing(self, arch):
        """The cell alone (the whole network is 17 cells: slow to draw, hard to read)."""
        return cell_graph(arch, name=str(arch))


def search_batch_norms(module: nn.Module, affine: bool, running_stats: bool) -> nn.Module:
    """Replace every BatchNorm2d inside ``module`` with one of the same width, eps and
    momentum and the given affine / running-statistics settings; returns ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.BatchNorm2d(child.num_features, child.eps, child.momentum,
                                                 affine=affine,
                                                 track_running_stats=running_stats))
        else:
            search_batch_norms(child, affine, running_stats)
    return module


class EdgeCell(nn.Module):
    """Every op of every edge of one search cell at ``channels`` (``edges[edge][op]``, keys
    ``edge_node_id``'s)."""

    def __init__(self, channels: int, macro: Nb201Macro):
        super().__init__()
        self.edges = nn.ModuleDict()
        for j, i in EDGES:
            self.edges[edge_node_id(j, i)] = nn.ModuleDict({
                op: search_batch_norms(create_op(op, channels, channels, 1), macro.bn_affine,
                                       macro.bn_running_stats) for op in NB201_OPS})

    def forward(self, x, arch: Nb201Cell | None = None, mix=None, gates=None,
                aux_skip: float = 0.0):
        states = [x]
        for j in range(1, NUM_NODES):
            total = 0
            for e, (t, i) in enumerate(EDGES):
                if t != j:
                    continue
                ops = self.edges[edge_node_id(j, i)]
                if arch is not None:
                    y = ops[arch.ops[e]](states[i])
                    if gates is not None:
                        h = gates[e]
                        chosen = NB201_OPS.index(arch.ops[e])
                        y = y * h[chosen] + (h.sum() - h[chosen])
                else:
                    y = sum(w * ops[op](states[i]) for w, op in zip(mix[e], NB201_OPS))
                    if aux_skip:  # DARTS-: an auxiliary skip of weight beta on the edge
                        y = y + aux_skip * states[i]
                total = total + y
            states.append(total)
        return states[-1]


def search_positions(macro: Nb201Macro) -> list[int]:
    """The chain positions whose cell is the searched one: those that differ between the
    networks of two different cells."""
    a = macro.chain(Nb201Cell(("skip_connect",) * len(EDGES)))
    b = macro.chain(Nb201Cell(("nor_conv_3x3",) * len(EDGES)))
    return [k for k, (x, y) in enumerate(zip(a.cells, b.cells)) if x.to_dict() != y.to_dict()]


class Nb201Supernet(nn.Module):
    """Every cell of NAS-Bench-201's space in its network (``macro``), sharing weights."""

    def __init__(self, space: NasBench201Space, macro: Nb201Macro):
        super().__init__()
        check_nb201(space, macro)
        self.space, self.config = space, macro
        chain = macro.chain(Nb201Cell(("nor_conv_3x3",) * len(EDGES)))
        searched = set(search_positions(macro))
        self.blocks = nn.ModuleList()
        width = chain.in_channels
        for k, cell in enumerate(chain.cells):
            compiled = CompiledGraph(cell, None, [width])
            self.blocks.append(EdgeCell(width, macro) if k in searched else compiled)
            width = compiled.out_channels

    def forward(self, x, arch: Nb201Cell | None = None, mix=None, gates=None,
                aux_skip: float = 0.0):
        """``aux_skip``: mixed mode only, DARTS-' auxiliary skip weight on every edge."""
        if (arch is None) == (mix is None):
            raise ValueError("give exactly one of arch (path mode) and mix (mixed mode)")
        for block in self.blocks:
            x = block(x, arch, mix, gates, aux_skip) if isinstance(block, EdgeCell) \
                else block(x)
        return torch.flatten(x, 1)

    def child(self, arch: Nb201Cell, inherit: bool = True) -> ChainNetwork:
        """The stand-alone network of ``arch`` at the supernet's size, with this supernet's
        weights for its choices when ``inherit``."""
        network = ChainNetwork(self.config.chain(arch))
        if inherit:
            inherit_nb201_weights(self, network, arch)
        return network


def inherit_nb201_weights(supernet: Nb201Supernet, network: ChainNetwork,
                          arch: Nb201Cell) -> None:
    """Copy ``arch``'s path (weights, BN statistics) into its stand-alone network: fixed
    blocks whole, each edge's chosen op into the child's op node of that edge. A BN the
    supernet keeps without weight/bias or running statistics leaves the child's defaults
    (1, 0; mean 0, variance 1)."""
    with torch.no_grad():
        for source, target in zip(supernet.blocks, network.blocks):
            if not isinstance(source, EdgeCell):
                target.load_state_dict(source.state_dict())
                continue
            for e, (j, i) in enumerate(EDGES):
                op = source.edges[edge_node_id(j, i)][arch.ops[e]]
                dst = target.ops[module_key(edge_node_id(j, i))]
                state = dst.state_dict()
                state.update(op.state_dict())
                dst.load_state_dict(state)


def check_nb201(space, macro: Nb201Macro) -> None:
    """SupernetError, naming the problem, when the supernet cannot be built."""
    if not isinstance(space, NasBench201Space):
        raise SupernetError(f"the NAS-Bench-201 supernet needs the nas-bench-201 space, got "
                            f"{type(space).__name__}")
    if macro.C < 1 or macro.N < 1:
        raise SupernetError(f"the NAS-Bench-201 supernet needs C >= 1 and N >= 1, got "
                            f"C={macro.C}, N={macro.N}")


def nb201_macro(space: NasBench201Space, setting: str | None, overrides: dict,
                data) -> Nb201Macro:
    """The supernet's network for ``data`` with the recipe's ``overrides`` (``C``, ``N``,
    ``bn_affine``, ``bn_running_stats``); ``setting`` must be ``nb201`` or unset."""
    if setting not in (None, "nb201"):
        raise SupernetError(f"the nas-bench-201 space's supernet is NAS-Bench-201's network "
                            f"(setting nb201), not setting {setting!r}: use a nas-bench-201 "
                            f"recipe (e.g. darts-nb201)", options=("recipe",))
    # a chain has neither drop-path nor an auxiliary head (Recipe.build_overrides turns off)
    overrides = {k: v for k, v in overrides.items() if k not in ("drop_path_keep_prob",
                                                                 "aux_head")}
    unknown = sorted(set(overrides) - set(MACRO_OPTIONS))
    if unknown:
        raise SupernetError(f"unknown NAS-Bench-201 supernet option(s) {', '.join(unknown)} "
                            f"(known: {', '.join(MACRO_OPTIONS)})")
    if DATASETS[space.dataset].num_classes != data.num_classes:
        raise SupernetError(f"the nas-bench-201 space's networks for {space.dataset} have "
                            f"{DATASETS[space.dataset].num_classes} classes, the data has "
                            f"{data.num_classes}", options=("dataset",))
    return Nb201Macro(dataset=space.dataset, input_size=data.image_size[0],
                      in_channels=data.channels, **overrides)


NB201_FAMILY = register_family(SupernetFamily(
    "nas-bench-201", NasBench201Space, Nb201Layout, Nb201Supernet, nb201_macro, check_nb201,
    setting="nb201", children_sized_by_recipe=False, aux_skip=True))
