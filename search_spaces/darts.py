"""The DARTS search space (Liu et al. 2019; NAS-Bench-301's convention, Siems et al. 2020;
docs/reference.md section 12) as DSL data.

A cell has two input states, c_{k-2} and c_{k-1}, and four intermediate nodes; node j
(2..5) sums two ops, each applied to a different earlier state (0 = c_{k-2}, 1 = c_{k-1},
2.. = earlier nodes), each op one of ``DARTS_OPS``. The cell's output concatenates the four
nodes. A normal and a reduction cell (its ops on the cell inputs have stride 2).

DARTS writes a cell pair as its ``Genotype``::

    Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ...], normal_concat=range(2, 6),
             reduce=[...], reduce_concat=range(2, 6))

each list holding two ``(op, input)`` pairs per node, node 2 first. ``parse_genotype`` reads
that text with Python's ``ast`` (literals only, never evaluated) and ``format_genotype``
writes it. ``DartsGenotype`` keeps each node's two edges ordered by input, so one cell has
one form: the sum does not depend on the order.

Decisions: per cell and node, which pair of distinct earlier states it reads (1, 3, 6, 10
choices for nodes 2..5, NAS-Bench-301's count) then the op on the smaller and on the larger
input (7 each): 12 decisions per cell, 24 in all, (1*3*6*10 * 7^8)^2 ~ 1.1e18 sequences.
``to_graph`` builds the cells with the ``darts_*`` ops (``nasforge.ops.darts``, DARTS' own
construction) and carries ``network={"macro": "darts"}``, DARTS' ``NetworkCIFAR`` wiring.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np

from nasforge.dsl import CellError, CellPair, cell_from_blocks
from nasforge.search_spaces.base import SearchSpace

# DARTS' op names, in genotypes.py's PRIMITIVES order ('none' is DARTS' search-only op)
DARTS_OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
# the registered op (nasforge.ops.darts) of each DARTS op
REGISTRY_OPS: dict[str, str] = {op: f"darts_{op}" for op in DARTS_OPS}
NUM_NODES = 4  # intermediate nodes per cell
NUM_INPUTS = 2  # c_{k-2}, c_{k-1}
CONCAT: tuple[int, ...] = tuple(range(NUM_INPUTS, NUM_INPUTS + NUM_NODES))  # range(2, 6)
# the input pairs node k (0-based) may read, in the order of its decision's values
INPUT_PAIRS: tuple[tuple[tuple[int, int], ...], ...] = tuple(
    tuple(combinations(range(NUM_INPUTS + k), 2)) for k in range(NUM_NODES))
DECISIONS_PER_NODE = 3  # input pair, op on the smaller input, op on the larger
CELL_KINDS = ("normal", "reduce")  # DARTS' field names


class DartsGenotypeError(CellError):
    """A DARTS genotype (text or edges) that is malformed, names an unknown op, or breaks the
    space's rules."""


Edge = tuple[str, int]  # (DARTS op, input state)


def _check_cell(kind: str, edges) -> tuple[Edge, ...]:
    """``edges`` as a canonical cell (each node's edges ordered by input), or
    DartsGenotypeError naming the first problem."""
    if not isinstance(edges, (list, tuple)) or len(edges) != 2 * NUM_NODES:
        count = len(edges) if isinstance(edges, (list, tuple)) else type(edges).__name__
        raise DartsGenotypeError(f"{kind}: expected {2 * NUM_NODES} (op, input) pairs "
                                 f"({NUM_NODES} nodes x 2), got {count}")
    out: list[Edge] = []
    for k in range(NUM_NODES):
        node = []
        for edge in edges[2 * k:2 * k + 2]:
            if not (isinstance(edge, (list, tuple)) and len(edge) == 2 and
                    isinstance(edge[0], str) and isinstance(edge[1], int) and
                    not isinstance(edge[1], bool)):
                raise DartsGenotypeError(f"{kind}: node {k + NUM_INPUTS}: {edge!r} is not an "
                                         f"('op', input) pair")
            op, source = edge
            if op not in DARTS_OPS:
                raise DartsGenotypeError(f"{kind}: node {k + NUM_INPUTS}: unknown op {op!r} "
                                         f"(known: {', '.join(DARTS_OPS)})")
            if not 0 <= source < NUM_INPUTS + k:
                raise DartsGenotypeError(f"{kind}: node {k + NUM_INPUTS}: input {source} out "
                                         f"of range (it reads states 0..{NUM_INPUTS + k - 1})")
            node.append((op, source))
        if node[0][1] == node[1][1]:
            raise DartsGenotypeError(f"{kind}: node {k + NUM_INPUTS} reads input "
                                     f"{node[0][1]} twice (its two inputs must differ)")
        out += sorted(node, key=lambda e: e[1])
    return tuple(out)


@dataclass(frozen=True)
class DartsGenotype:
    """A DARTS cell pair: two ``(op, input)`` edges per node, node 2 first, each node's edges
    ordered by input (``make`` orders and checks them)."""

    normal: tuple[Edge, ...]
    reduce: tuple[Edge, ...]

    @classmethod
    def make(cls, normal, reduce) -> "DartsGenotype":
        """A checked genotype from DARTS' lists (any edge order within a node)."""
        return cls(_check_cell("normal", normal), _check_cell("reduce", reduce))

    def cells(self) -> tuple[tuple[Edge, ...], tuple[Edge, ...]]:
        return self.normal, self.reduce

    def __str__(self) -> str:
        return format_genotype(self)


def format_genotype(genotype: DartsGenotype) -> str:
    """DARTS' ``Genotype(...)`` text of ``genotype``."""
    concat = f"range({CONCAT[0]}, {CONCAT[-1] + 1})"
    parts = [f"{kind}={list(edges)!r}, {kind}_concat={concat}"
             for kind, edges in zip(CELL_KINDS, genotype.cells())]
    return f"Genotype({', '.join(parts)})"


def _literal(node: ast.AST, what: str):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise DartsGenotypeError(f"{what} is not a literal list of ('op', input) pairs") \
            from None


def _concat(node: ast.AST, kind: str) -> None:
    """Check a ``*_concat`` value: ``range(2, 6)`` or the literal ``[2, 3, 4, 5]``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == "range" and not node.keywords:
        value = tuple(range(*[_literal(a, f"{kind}_concat") for a in node.args])) \
            if all(isinstance(a, ast.Constant) and type(a.value) is int for a in node.args) \
            and 1 <= len(node.args) <= 3 else None
    else:
        value = _literal(node, f"{kind}_concat")
        value = tuple(value) if isinstance(value, (list, tuple)) else None
    if value != CONCAT:
        raise DartsGenotypeError(f"{kind}_concat must be range({CONCAT[0]}, {CONCAT[-1] + 1}) "
                                 f"(the space's cell outputs all four nodes), got "
                                 f"{ast.unparse(node)}")


def is_genotype_text(text) -> bool:
    """Whether ``text`` is meant as a DARTS genotype (it starts with ``Genotype(``); a
    malformed one still is, so its error names the problem."""
    return isinstance(text, str) and text.lstrip().startswith("Genotype(")


def parse_genotype(text: str) -> DartsGenotype:
    """Read DARTS' ``Genotype(normal=[...], normal_concat=range(2, 6), reduce=[...],
    reduce_concat=range(2, 6))`` (keywords or positional, as DARTS' namedtuple takes them)
    without evaluating anything; DartsGenotypeError (one line) when it is malformed, names
    an unknown op, has the wrong number of nodes, an input out of range or a node reading the
    same input twice."""
    if not isinstance(text, str):
        raise DartsGenotypeError(f"a DARTS genotype is a string, got {type(text).__name__}")
    if len(text) > 10_000:
        raise DartsGenotypeError(f"a DARTS genotype of {len(text)} characters is too long")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise DartsGenotypeError(f"malformed DARTS genotype: {e.msg} at column "
                                 f"{e.offset}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, deep nesting
        raise DartsGenotypeError(f"malformed DARTS genotype: {type(e).__name__}") from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and
            tree.func.id == "Genotype"):
        raise DartsGenotypeError("malformed DARTS genotype: expected Genotype(normal=..., "
                                 "normal_concat=..., reduce=..., reduce_concat=...)")
    names = ("normal", "normal_concat", "reduce", "reduce_concat")
    if len(tree.args) > len(names):
        raise DartsGenotypeError(f"malformed DARTS genotype: {len(tree.args)} positional "
                                 f"fields (it has {len(names)})")
    fields = dict(zip(names, tree.args))
    for kw in tree.keywords:
        if kw.arg not in names or kw.arg in fields:
            raise DartsGenotypeError(f"malformed DARTS genotype: unexpected or repeated field "
                                     f"{kw.arg!r} (fields: {', '.join(names)})")
        fields[kw.arg] = kw.value
    missing = [n for n in names if n not in fields]
    if missing:
        raise DartsGenotypeError(f"malformed DARTS genotype: missing {', '.join(missing)}")
    for kind in CELL_KINDS:
        _concat(fields[f"{kind}_concat"], kind)
    return DartsGenotype.make(_literal(fields["normal"], "normal"),
                              _literal(fields["reduce"], "reduce"))


def genotype_pair(genotype: DartsGenotype | str, name: str = "darts_cell") -> CellPair:
    """The genotype as a DSL cell pair (nasforge's state order: 0 = h_i = c_{k-1},
    1 = h_{i-1} = c_{k-2}), with DARTS' macro as its network option."""
    if isinstance(genotype, str):
        genotype = parse_genotype(genotype)
    swap = {0: 1, 1: 0}
    cells = []
    for kind, edges in zip(("normal", "reduction"), genotype.cells()):
        cells.append(cell_from_blocks(f"{name}/{kind}", [REGISTRY_OPS[op] for op, _ in edges],
                                      [swap.get(i, i) for _, i in edges], output=list(CONCAT),
                                      reduction=kind == "reduction"))
    return CellPair(*cells, name=name, network={"macro": "darts"})


class DartsSpace(SearchSpace):
    """DARTS' cell space: 24 decisions (``DECISIONS_PER_NODE`` per node, normal cell first);
    ``mutate`` re-draws one decision among its other values, so the child always differs."""

    name = "darts"

    def decisions(self) -> list[int]:
        per_cell = []
        for pairs in INPUT_PAIRS:
            per_cell += [len(pairs), len(DARTS_OPS), len(DARTS_OPS)]
        return per_cell * len(CELL_KINDS)

    def encode(self, arch: DartsGenotype) -> list[int]:
        tokens = []
        for edges in arch.cells():
            for k in range(NUM_NODES):
                (op_a, a), (op_b, b) = edges[2 * k:2 * k + 2]
                tokens += [INPUT_PAIRS[k].index((a, b)), DARTS_OPS.index(op_a),
                           DARTS_OPS.index(op_b)]
        return tokens

    def decode(self, tokens: Sequence[int]) -> DartsGenotype:
        tokens = self.check_tokens(tokens)
        cells = []
        per_cell = DECISIONS_PER_NODE * NUM_NODES
        for c in range(len(CELL_KINDS)):
            edges: list[Edge] = []
            for k in range(NUM_NODES):
                pair, op_a, op_b = (int(t) for t in tokens[c * per_cell + 3 * k:
                                                            c * per_cell + 3 * k + 3])
                a, b = INPUT_PAIRS[k][pair]
                edges += [(DARTS_OPS[op_a], a), (DARTS_OPS[op_b], b)]
            cells.append(tuple(edges))
        return DartsGenotype(*cells)

    def sample(self, rng: np.random.Generator) -> DartsGenotype:
        return self.decode([int(rng.integers(n)) for n in self.decisions()])

    def mutate(self, arch: DartsGenotype, rng: np.random.Generator) -> DartsGenotype:
        tokens = self.encode(arch)
        sizes = self.decisions()
        open_ = [i for i, n in enumerate(sizes) if n > 1]  # node 2's single pair is fixed
        position = open_[int(rng.integers(len(open_)))]
        new = int(rng.integers(sizes[position] - 1))  # among the other values: a change
        tokens[position] = new if new < tokens[position] else new + 1
        return self.decode(tokens)

    def to_graph(self, arch: DartsGenotype, name: str = "darts_sample") -> CellPair:
        return genotype_pair(arch, name)
