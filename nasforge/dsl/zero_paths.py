"""A cell without its zero paths: what the canonical hash compares when a cell has ops whose
output is always zero (``OpSpec.zero_output``, NAS-Bench-201's ``none``).

Two cells that differ only by such edges, or by nodes whose result reaches the output only
through them, compute the same function and are one architecture. The reduction:

* a zero op is zero; an op reading a zero state is zero too (NAS-Bench-201's convention: an
  op of a zero tensor is counted as zero, although ReLU -> conv -> BN of zeros is BN's shift);
* an ``add`` drops its zero inputs (x + 0 = x); with none left it is zero, with one left it is
  that input;
* every node but the inputs whose result no longer reaches the output is dropped.

Other merges keep a zero input in its place (a zero slice of a concat still has channels).
Called by ``Cell.canonical_hash``; cells without zero ops are hashed as written.
"""
from __future__ import annotations

import networkx as nx

from nasforge.registry import OPS

ZERO_CELL = "zero"  # what a cell whose output is identically zero reduces to


def has_zero_ops(cell) -> bool:
    """Whether ``cell`` has an op registered with ``zero_output``."""
    return any(d["kind"] == "op" and getattr(OPS.get(d["op"]), "zero_output", False)
               for _, d in cell.graph.nodes(data=True))


def without_zero_paths(cell):
    """A copy of ``cell`` (a validated ``Cell``) reduced as the module docstring says, or
    ``ZERO_CELL`` when its output is zero. A reduction that would make a node read the same
    state twice (not expressible in a cell) is not done: the cell is returned as written."""
    g = cell.graph
    same_as: dict[str, str | None] = {}  # node -> the node it equals (None: zero)
    for n in cell.topological_order():
        d, srcs = g.nodes[n], [same_as[s] for s in cell.operands(n)]
        if d["kind"] == "op":
            same_as[n] = None if OPS[d["op"]].zero_output or srcs[0] is None else n
        elif d["kind"] == "combine" and d["combine"] == "add":
            live = [s for s in srcs if s is not None]
            same_as[n] = None if not live else live[0] if len(live) == 1 else n
        else:
            same_as[n] = n
    output = cell.output_node
    if all(same_as[s] is None for s in cell.operands(output)):
        return ZERO_CELL

    def reads(n: str) -> list[str]:
        d, srcs = g.nodes[n], cell.operands(n)
        if same_as[n] is not None and d["kind"] == "combine" and d["combine"] == "add":
            return [same_as[s] for s in srcs if same_as[s] is not None]
        return [s if same_as[s] is None else same_as[s] for s in srcs]

    kept, stack = set(cell.nodes("input")), [output]  # inputs are the cell's interface
    while stack:
        n = stack.pop()
        if n in kept:
            continue
        kept.add(n)
        stack += reads(n)
    reduced = nx.DiGraph()
    for n in cell.topological_order():
        if n in kept:
            reduced.add_node(n, **g.nodes[n])
    for n in kept:
        sources = reads(n)
        if len(set(sources)) != len(sources):
            return cell
        for slot, s in enumerate(sources):
            reduced.add_edge(s, n, slot=slot)
    return type(cell)(cell.name, cell.reduction, reduced)
