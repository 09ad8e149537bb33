"""NAS-Bench-201's search space (Dong & Yang, ICLR 2020) as DSL data.

The cell has 4 nodes; node 0 is the cell input, node j (1..3) sums one op applied to each
earlier node, and node 3 is the output: 6 edges, each one of 5 ops, 5^6 = 15,625 cells. The
network (``network``) is NAS-Bench-201's: a 3x3 conv + BN stem, three stages of N = 5 cells at
C, 2C, 4C channels (C = 16) with a stride-2 ResNet basic block between stages, then BN, ReLU,
global average pool and a linear classifier.

NAS-Bench-201 writes a cell as ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: node 1, node 2 and
node 3 in turn, each ``op~j`` the op on the edge from node j. ``parse_cell``/``format_cell``
read and write that form; ``Nb201Cell.ops`` lists the 6 ops in the same edge order.

One architecture, many cells: ``none`` is registered as a zero op, so the DSL's canonical
hash drops none edges, what only they feed and nodes that no longer reach the output
(``nasforge.dsl.zero_paths``). Over the 15,625 cells that leaves 8,765 architectures.
NAS-Bench-201 counts 6,466 with its ``to_unique_str(consider_zero=True)``, which in addition
takes ``skip_connect`` for the identity (here it is an op node of the graph: ``skip(x)`` and
``x`` hash apart) and compares cells as sum-of-terms strings without their shared nodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nasforge.dsl import Cell, CellChain, CellError
from nasforge.errors import NasforgeError
from nasforge.search_spaces.base import SearchSpace

# NAS-Bench-201's op names, in its own order (xautodl's NAS_BENCH_201 list)
NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                              "avg_pool_3x3")
NUM_NODES = 4
# (target node, source node) of each edge, in the order the string lists them
EDGES: tuple[tuple[int, int], ...] = tuple((j, i) for j in range(1, NUM_NODES) for i in range(j))
STEM_CHANNELS = 16  # C: channels of the first stage (doubled by each residual block)
CELLS_PER_STAGE = 5  # N
NUM_STAGES = 3
NETWORK_FAMILY = "NAS-Bench-201"  # the family of the network's cell chain


@dataclass(frozen=True)
class Nb201Dataset:
    """One of NAS-Bench-201's three data sets, as the network sees it."""

    num_classes: int
    input_size: int  # pixels (square)


DATASETS: dict[str, Nb201Dataset] = {
    "cifar10": Nb201Dataset(num_classes=10, input_size=32),
    "cifar100": Nb201Dataset(num_classes=100, input_size=32),
    "imagenet16": Nb201Dataset(num_classes=120, input_size=16),  # ImageNet16-120
}
DEFAULT_DATASET = "cifar10"  # the data set when none is given (library and command line)


class UnknownDatasetError(NasforgeError, ValueError, KeyError):
    """A data set outside ``DATASETS``."""

    def __str__(self) -> str:  # a KeyError would quote its message
        return str(self.args[0]) if self.args else ""


def check_dataset(name) -> str:
    """``name`` when it is one of NAS-Bench-201's data sets (``DATASETS``), else
    UnknownDatasetError: the one message for an unknown data set, wherever it is given."""
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown NAS-Bench-201 data set {name!r} (known: "
                                  f"{', '.join(DATASETS)})", options=("dataset",))
    return name


class NasBench201StringError(CellError):
    """A NAS-Bench-201 cell string that is malformed or names an unknown op."""


@dataclass(frozen=True)
class Nb201Cell:
    """A NAS-Bench-201 cell: the op of each edge, in ``EDGES`` order."""

    ops: tuple[str, ...]

    def __str__(self) -> str:
        return format_cell(self)


def format_cell(cell: Nb201Cell) -> str:
    """NAS-Bench-201's string form of ``cell``."""
    nodes = []
    for j in range(1, NUM_NODES):
        nodes.append("|" + "|".join(f"{op}~{i}" for op, (t, i) in zip(cell.ops, EDGES)
                                    if t == j) + "|")
    return "+".join(nodes)


def parse_cell(text: str) -> Nb201Cell:
    """Read NAS-Bench-201's string form; NasBench201StringError (one line naming the problem)
    when it is malformed or names an op outside ``NB201_OPS``. Edges of a node may come in
    any order; each earlier node must be read exactly once."""
    if not isinstance(text, str):
        raise NasBench201StringError(f"a NAS-Bench-201 cell is a string, got "
                                     f"{type(text).__name__}")
    shown = text if len(text) <= 120 else text[:117] + "..."
    nodes = text.strip().split("+")
    if len(nodes) != NUM_NODES - 1:
        raise NasBench201StringError(f"malformed NAS-Bench-201 cell {shown!r}: expected "
                                     f"{NUM_NODES - 1} nodes separated by '+', got {len(nodes)}")
    ops: dict[tuple[int, int], str] = {}
    for j, node in enumerate(nodes, start=1):
        if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
            raise NasBench201StringError(f"malformed NAS-Bench-201 cell {shown!r}: node {j} "
                                         f"{node!r} is not written as |op~i|...|")
        for edge in node[1:-1].split("|"):
            op, sep, source = edge.partition("~")
            if not sep or not source.isdigit():
                raise NasBench201StringError(f"malformed NAS-Bench-201 cell {shown!r}: edge "
                                             f"{edge!r} of node {j} is not op~i")
            i = int(source)
            if i >= j:
                raise NasBench201StringError(f"malformed NAS-Bench-201 cell {shown!r}: node {j} "
                                             f"reads node {i} (only nodes 0..{j - 1} precede it)")
            if (j, i) in ops:
                raise NasBench201StringError(f"malformed NAS-Bench-201 cell {shown!r}: node {j} "
                                             f"reads node {i} twice")
            if op not in NB201_OPS:
                raise NasBench201StringError(f"unknown op {op!r} on the edge {i} -> {j} of "
                                             f"NAS-Bench-201 cell {shown!r} (known: "
                                             f"{', '.join(NB201_OPS)})")
            ops[(j, i)] = op
        missing = [i for i in range(j) if (j, i) not in ops]
        if missing:
            raise NasBench201StringError(f"malformed NAS-Bench-201 cell {shown!r}: node {j} "
                                         f"has no edge from node(s) "
                                         f"{', '.join(map(str, missing))}")
    return Nb201Cell(tuple(ops[e] for e in EDGES))


CELL_FORMAT = "nasforge.nb201/1"  # the format marker of a cell record (``cell_record``)


def cell_record(cell: Nb201Cell, dataset: str = DEFAULT_DATASET,
                arch_index: int | None = None) -> dict:
    """The compact JSON form of a NAS-Bench-201 cell that a search stores (``trials.jsonl``,
    ``pareto.json``, ``best_cell.json``): the format marker, the cell's string, the data set
    whose network it stands for and, where a table was loaded, the table's ``arch_index``.
    ``read_cell_record`` reads it back; ``network`` rebuilds the whole network from it."""
    out = {"format": CELL_FORMAT, "cell": format_cell(cell), "dataset": check_dataset(dataset)}
    if arch_index is not None:
        out["arch_index"] = int(arch_index)
    return out


def is_cell_record(data) -> bool:
    """Whether ``data`` (parsed JSON) claims to be a cell record (its format marker)."""
    return isinstance(data, dict) and data.get("format") == CELL_FORMAT


def read_cell_record(data) -> tuple[Nb201Cell, str, int | None]:
    """(cell, data set, arch_index or None) of a cell record (``cell_record``);
    NasBench201StringError (one line) when a field is missing or malformed."""
    if not is_cell_record(data):
        raise NasBench201StringError(f"not a NAS-Bench-201 cell record (format "
                                     f"{CELL_FORMAT!r})")
    extra = set(data) - {"format", "cell", "dataset", "arch_index"}
    if extra:
        raise NasBench201StringError(f"NAS-Bench-201 cell record: unknown field(s) "
                                     f"{', '.join(sorted(extra))}")
    dataset = data.get("dataset", DEFAULT_DATASET)
    if not isinstance(dataset, str) or dataset not in DATASETS:
        raise NasBench201StringError(f"NAS-Bench-201 cell record: unknown data set "
                                     f"{dataset!r} (known: {', '.join(DATASETS)})")
    index = data.get("arch_index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)
                              or index < 0):
        raise NasBench201StringError(f"NAS-Bench-201 cell record: arch_index {index!r} is "
                                     f"not a non-negative integer")
    return parse_cell(data.get("cell")), dataset, index


def stored_cell(data) -> tuple[str, int | None] | None:
    """(string, arch_index or None) of the NAS-Bench-201 cell an architecture stored by a
    search stands for: a cell record, or the whole network that older runs stored (a cell
    chain of family NAS-Bench-201, named by its string); None for anything else."""
    if is_cell_record(data):
        try:
            cell, _, index = read_cell_record(data)
        except CellError:
            return None
        return format_cell(cell), index
    if isinstance(data, dict) and data.get("family") == NETWORK_FAMILY and \
            isinstance(data.get("name"), str):
        try:
            return format_cell(parse_cell(data["name"])), None
        except CellError:
            return None
    return None


def edge_node_id(target: int, source: int) -> str:
    """The DSL node id of the op on the edge from node ``source`` to node ``target``."""
    return f"e{target}_{source}"


def cell_graph(cell: Nb201Cell, channels: int | None = None, name: str = "nb201_cell") -> Cell:
    """The cell as a DSL graph with a single input: one op node per edge (``e{j}_{i}``: the
    edge from node i to node j) and an ``add`` per node of two or more edges (``node{j}``).
    ``channels`` fixes every op's width (None: the input's, as in a chain)."""
    graph = Cell(name)
    state = {0: graph.input(0)}
    width = {} if channels is None else {"channels": channels}
    for j in range(1, NUM_NODES):
        terms = [graph.op(op, state[i], stride=1, node_id=edge_node_id(j, i), **width)
                 for op, (t, i) in zip(cell.ops, EDGES) if t == j]
        state[j] = terms[0] if len(terms) == 1 else graph.combine("add", *terms,
                                                                    node_id=f"node{j}")
    graph.set_output([state[NUM_NODES - 1]])
    return graph


def _stem(channels: int) -> Cell:
    cell = Cell("stem")
    cell.set_output([cell.op("conv", cell.input(0), channels=channels, kernel=3, bias=False,
                             bn=True, act="none", node_id="conv")])
    return cell


def _residual_block(c_in: int, c_out: int, name: str) -> Cell:
    """NAS-Bench-201's ResNetBasicblock at stride 2: ReLU-conv3x3(stride 2)-BN then
    ReLU-conv3x3-BN, plus a 2x2 average pool and a 1x1 conv (no bias, no BN) shortcut."""
    cell = Cell(name)
    x = cell.input(0)
    a = cell.op("nor_conv_3x3", x, stride=2, channels=c_out, node_id="conv_a")
    b = cell.op("nor_conv_3x3", a, stride=1, channels=c_out, node_id="conv_b")
    pooled = cell.op("avg_pool", x, stride=2, kernel=2, node_id="shortcut_pool")
    shortcut = cell.op("conv", pooled, channels=c_out, kernel=1, bias=False, bn=False,
                       act="none", node_id="shortcut_conv")
    cell.set_output([cell.combine("add", shortcut, b, node_id="sum")])
    return cell


def _head(channels: int, num_classes: int) -> Cell:
    cell = Cell("classifier")
    x = cell.op("bn_act", cell.input(0), node_id="lastact")
    x = cell.op("global_avg_pool", x, node_id="global_pooling")
    cell.set_output([cell.op("linear", x, channels=num_classes, node_id="fc")])
    return cell


def network(cell: Nb201Cell | str, dataset: str = DEFAULT_DATASET, C: int = STEM_CHANNELS,
            N: int = CELLS_PER_STAGE, name: str = "nas-bench-201") -> CellChain:
    """NAS-Bench-201's network around ``cell`` (or its string) for ``dataset`` (a key of
    ``DATASETS``: it fixes the classes; the input size is ``DATASETS[dataset].input_size``)."""
    if isinstance(cell, str):
        cell = parse_cell(cell)
    check_dataset(dataset)
    cells = [_stem(C)]
    for stage in range(NUM_STAGES):
        width = C * 2 ** stage
        if stage:
            cells.append(_residual_block(width // 2, width, f"resblock{stage}"))
        cells += [cell_graph(cell, width, f"stage{stage + 1}_cell{k + 1}") for k in range(N)]
    cells.append(_head(C * 2 ** (NUM_STAGES - 1), DATASETS[dataset].num_classes))
    return CellChain(cells, name=name, family=NETWORK_FAMILY)


class NasBench201Space(SearchSpace):
    """6 decisions (one per edge, in ``EDGES`` order) of 5 choices (``NB201_OPS``);
    ``to_graph`` builds the network for ``dataset``. ``mutate`` is NAS-Bench-201's R_EA
    mutation: one edge re-drawn among the other 4 ops."""

    name = "nas-bench-201"

    def __init__(self, dataset: str = DEFAULT_DATASET):
        self.dataset = check_dataset(dataset)

    def decisions(self) -> list[int]:
        return [len(NB201_OPS)] * len(EDGES)

    def encode(self, arch: Nb201Cell) -> list[int]:
        return [NB201_OPS.index(op) for op in arch.ops]

    def decode(self, tokens: Sequence[int]) -> Nb201Cell:
        return Nb201Cell(tuple(NB201_OPS[t] for t in self.check_tokens(tokens)))

    def sample(self, rng: np.random.Generator) -> Nb201Cell:
        return self.decode([int(rng.integers(n)) for n in self.decisions()])

    def mutate(self, arch: Nb201Cell, rng: np.random.Generator) -> Nb201Cell:
        tokens = self.encode(arch)
        edge = int(rng.integers(len(EDGES)))
        new = int(rng.integers(len(NB201_OPS) - 1))  # among the other ops: always a change
        tokens[edge] = new if new < tokens[edge] else new + 1
        return self.decode(tokens)

    def record(self, arch: Nb201Cell) -> dict:
        """The cell record (``cell_record``) of ``arch`` for this space's data set: what a
        search stores instead of the whole network (about 150 bytes, not 17 KB)."""
        return cell_record(arch, self.dataset)

    def to_graph(self, arch: Nb201Cell, name: str | None = None) -> CellChain:
        """The network of ``arch``, named by its NAS-Bench-201 string unless ``name`` is given
        (a search's records and ``best_cell.json`` carry the string that way)."""
        return network(arch, self.dataset, name=format_cell(arch) if name is None else name)
