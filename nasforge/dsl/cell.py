"""The cell DSL: one representation for every architecture.

A cell is a networkx ``DiGraph`` with typed nodes:

* ``input``   -- a cell input; ``index`` 0 is h_i (the most recent state), 1 is h_{i-1};
* ``op``      -- a registered op (``op`` name, ``stride``, ``args``) applied to one input;
  ``channels`` fixes its output width (hand-designed blocks); left out, the op outputs the
  cell's filter count F (NASNet cells, which the network scales);
* ``combine`` -- a registered combine (``add``, ``concat``, ...) of two or more inputs;
* ``output``  -- exactly one; concatenates its inputs. Its input set is explicit
  (``policy="explicit"``, reference cells name theirs) or "every state nothing else consumes"
  (``policy="unused"``, the NASNet rule for searched cells), resolved into edges either way.

Edges carry ``slot`` (the input position), so order-sensitive merges stay exact in JSON.
Node ids are free strings; the canonical hash ignores them.
"""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Iterable

import networkx as nx
from torch import nn

from nasforge import ops as _ops  # noqa: F401  (fills the registries)
from nasforge.dsl.zero_paths import ZERO_CELL, has_zero_ops, without_zero_paths
from nasforge.errors import NasforgeError
from nasforge.registry import COMBINES, OPS

CELL_FORMAT = "nasforge.cell/1"
PAIR_FORMAT = "nasforge.cellpair/1"
NUM_INPUTS = 2  # h_i and h_{i-1}
NODE_KINDS = ("input", "op", "combine", "output")
# Names a torch.nn.ModuleDict refuses as keys (its own attributes: "to", "keys", "training").
RESERVED_MODULE_KEYS = frozenset(dir(nn.ModuleDict()))


def module_key(node_id: str) -> str:
    """The name of a node's module in a compiled cell (``ops.<key>``, ``adapt.<key>``), hence
    of its state-dict keys; called by the compiler and the weight importers, the one place
    for this rule. torch module names cannot contain ``.``, so it becomes ``_``.

    This is not injective (``p.q`` and ``p_q`` share ``p_q``); ``Cell.validate`` rejects a
    cell whose ids clash, so in a valid cell every node has a module of its own. Why not an
    injective encoding: the zoo's ids take both forms -- NASNet-style ``b0_a`` and
    torchvision-named ``features.3`` -- and any injective map must change the key of one of
    them (``b0_a`` and ``b0.a`` cannot both keep ``b0_a``), which would rename the state-dict
    keys of saved checkpoints, imported weights and exported PyTorch files.
    """
    return node_id.replace(".", "_")


class CellError(NasforgeError, ValueError):
    """An invalid cell; ``node`` names the offending node (None for cell-wide problems)."""

    def __init__(self, message: str, node: str | None = None, cell: str | None = None):
        where = f"node {node!r}: " if node is not None else ""
        owner = f"cell {cell!r}: " if cell else ""
        super().__init__(f"{owner}{where}{message}")
        self.node = node


class JsonRecord:
    """JSON text and equality, both defined by ``to_dict``/``from_dict``."""

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(parse_json(text))

    def __eq__(self, other):
        return type(other) is type(self) and self.to_dict() == other.to_dict()


def check_format(data, expected: str):
    if not isinstance(data, dict):
        raise CellError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("format") != expected:
        raise CellError(f"unknown format {data.get('format')!r}, expected {expected!r}")


class Cell(JsonRecord):
    """A cell graph plus the builder API to write one by hand.

    >>> c = Cell("example")
    >>> h0, h1 = c.inputs()
    >>> b0 = c.combine("add", c.op("sep_conv_3x3", h0), c.op("identity", h1))
    >>> c.set_output()          # concat of unused states: [b0]
    """

    def __init__(self, name: str = "", reduction: bool = False, graph: nx.DiGraph | None = None):
        self.name = name
        self.reduction = reduction
        self.graph = graph if graph is not None else nx.DiGraph()
        self._counter = len(self.graph)

    # ---------------------------------------------------------------- builder
    def _new_id(self, prefix: str, node_id: str | None) -> str:
        if node_id is None:
            while f"{prefix}{self._counter}" in self.graph:
                self._counter += 1
            node_id = f"{prefix}{self._counter}"
        if node_id in self.graph:
            raise CellError("duplicate node id", node_id, self.name)
        return node_id

    def _connect(self, sources: Iterable[str], target: str):
        sources = list(sources)
        for slot, src in enumerate(sources):
            if src not in self.graph:
                raise CellError(f"unknown input {src!r}", target, self.name)
            # a DiGraph holds one edge per node pair: a second read would silently replace
            # the first (add(a, a) would become add(a))
            if sources.index(src) != slot:
                raise CellError(f"reads {src!r} twice (a node can read a state once)", target,
                                self.name)
            self.graph.add_edge(src, target, slot=slot)

    def input(self, index: int, node_id: str | None = None) -> str:
        node_id = node_id or f"h{index}"
        self.graph.add_node(self._new_id("h", node_id), kind="input", index=index)
        return node_id

    def inputs(self) -> tuple[str, str]:
        """Add (or return) the two cell inputs h0 = h_i and h1 = h_{i-1}."""
        return tuple(f"h{i}" if f"h{i}" in self.graph else self.input(i)
                     for i in range(NUM_INPUTS))

    def op(self, name: str, source: str, stride: int | None = None, node_id: str | None = None,
           channels: int | None = None, **args) -> str:
        """Add an op node; ``stride`` defaults to 2 in reduction cells when ``source`` is a cell
        input (the NASNet rule), else 1. ``channels``: output width (None: the cell's F)."""
        if stride is None:
            is_input = self.graph.nodes.get(source, {}).get("kind") == "input"
            stride = 2 if (self.reduction and is_input) else 1
        node_id = self._new_id("op", node_id)
        self.graph.add_node(node_id, kind="op", op=name, stride=int(stride), args=dict(args))
        if channels is not None:
            self.graph.nodes[node_id]["channels"] = int(channels)
        self._connect([source], node_id)
        return node_id

    def combine(self, name: str, *sources: str, node_id: str | None = None) -> str:
        node_id = self._new_id("c", node_id)
        self.graph.add_node(node_id, kind="combine", combine=name)
        self._connect(sources, node_id)
        return node_id

    def unused_states(self) -> list[str]:
        """Inputs and combines that no op, combine or output consumes, in insertion order."""
        return [n for n, d in self.graph.nodes(data=True)
                if d["kind"] in ("input", "combine")
                and not any(self.graph.nodes[s]["kind"] != "output"
                            for s in self.graph.successors(n))]

    def set_output(self, states: Iterable[str] | None = None, node_id: str = "out") -> str:
        """Set the output: the given states, or (None) every unused state."""
        old = [n for n, d in self.graph.nodes(data=True) if d["kind"] == "output"]
        self.graph.remove_nodes_from(old)
        policy = "explicit" if states is not None else "unused"
        states = list(states) if states is not None else self.unused_states()
        self.graph.add_node(node_id, kind="output", policy=policy)
        self._connect(states, node_id)
        return node_id

    # ------------------------------------------------------------- accessors
    def nodes(self, kind: str | None = None) -> list[str]:
        return [n for n, d in self.graph.nodes(data=True) if kind is None or d["kind"] == kind]

    def operands(self, node: str) -> list[str]:
        """The node's inputs in slot order."""
        edges = self.graph.in_edges(node, data="slot")
        return [src for src, _, _ in sorted(edges, key=lambda e: e[2])]

    @property
    def output_node(self) -> str:
        outs = self.nodes("output")
        if len(outs) != 1:
            raise CellError("missing output node" if not outs else
                            f"{len(outs)} output nodes, expected one", None, self.name)
        return outs[0]

    def topological_order(self) -> list[str]:
        """Nodes in a deterministic topological order (insertion order breaks ties)."""
        position = {n: i for i, n in enumerate(self.graph.nodes)}
        return list(nx.lexicographical_topological_sort(self.graph, key=position.__getitem__))

    def copy(self) -> "Cell":
        return Cell(self.name, self.reduction, copy.deepcopy(self.graph))

    def as_reduction(self, name: str | None = None) -> "Cell":
        """The strided variant (PNASNet-style): stride 2 on every op that reads a cell input."""
        cell = Cell(name or self.name, True, copy.deepcopy(self.graph))
        for n, d in cell.graph.nodes(data=True):
            if d["kind"] == "op":
                source = cell.operands(n)[0]
                d["stride"] = 2 if cell.graph.nodes[source]["kind"] == "input" else 1
        return cell

    def output_level(self) -> int:
        """How many times the cell halves the resolution (0 normal, 1 reduction)."""
        levels = self.resolution_levels()
        return max(levels[s] for s in self.operands(self.output_node)).bit_length() - 1

    def __repr__(self):
        return f"Cell({self.name!r}, reduction={self.reduction}, nodes={len(self.graph)})"

    # ------------------------------------------------------------ validation
    def validate(self) -> "Cell":
        """Raise CellError naming the first offending node; return self when valid."""
        g, name = self.graph, self.name
        for n, d in g.nodes(data=True):
            kind = d.get("kind")
            if kind is None:  # networkx creates the node an edge reads if it is missing
                readers = ", ".join(repr(s) for s in g.successors(n))
                raise CellError(f"undefined node, read by {readers}", n, name)
            if kind not in NODE_KINDS:
                raise CellError(f"unknown node kind {kind!r}", n, name)
        self._check_module_keys()
        outputs = self.nodes("output")
        if not outputs:
            raise CellError("missing output node", None, name)
        if len(outputs) > 1:
            raise CellError(f"{len(outputs)} output nodes, expected one", outputs[1], name)
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            raise CellError("is on a cycle: " + " -> ".join(u for u, _ in cycle) +
                            f" -> {cycle[0][0]}", cycle[0][0], name)
        if not self.nodes("input"):
            raise CellError("no input nodes", None, name)
        for n in self.topological_order():
            d, arity = g.nodes[n], g.in_degree(n)
            kind = d["kind"]
            if kind == "input":
                if d.get("index") not in range(NUM_INPUTS):
                    raise CellError(f"input index {d.get('index')!r} out of range (a cell has "
                                    f"inputs 0 = h_i and 1 = h_(i-1))", n, name)
                if arity:
                    raise CellError(f"an input node takes no inputs, got {arity}", n, name)
            elif kind == "op":
                if d.get("op") not in OPS:
                    raise CellError(f"unknown op {d.get('op')!r}", n, name)
                if arity != 1:
                    raise CellError(f"op takes exactly 1 input, got {arity}", n, name)
                stride = d.get("stride")
                if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
                    raise CellError(f"stride must be a positive integer, got {stride!r}", n,
                                    name)
                channels = d.get("channels")
                if channels is not None and (not isinstance(channels, int) or channels < 1):
                    raise CellError(f"channels must be a positive integer, got {channels!r}",
                                    n, name)
            elif kind == "combine":
                spec = COMBINES.get(d.get("combine"))
                if spec is None:
                    raise CellError(f"unknown combine {d.get('combine')!r}", n, name)
                if arity < spec.min_inputs or (spec.max_inputs and arity > spec.max_inputs):
                    raise CellError(f"{spec.name} takes at least {spec.min_inputs} inputs, "
                                    f"got {arity}", n, name)
            elif kind == "output" and arity == 0:
                raise CellError("empty output (no states to concatenate)", n, name)
        # With arities checked, every node descends from an input (in a DAG, walking back
        # from any node ends at an in-degree-0 node, and only inputs may have none); what can
        # still be unreachable is the output, from a node whose result goes nowhere.
        reaches_output = nx.ancestors(g, outputs[0])
        for n in self.topological_order():
            if n not in reaches_output and g.nodes[n]["kind"] not in ("input", "output"):
                raise CellError("unreachable: its result never reaches the output", n, name)
        self.resolution_levels()
        return self

    def _check_module_keys(self):
        """Every node id must be a module name (``module_key``) no other node of the cell has
        and ``torch.nn.ModuleDict`` accepts."""
        owner: dict[str, str] = {}
        for n in self.graph.nodes:
            key = module_key(n)
            if not key or key in RESERVED_MODULE_KEYS:
                why = "it is empty" if not key else (
                    f"{key!r} is an attribute of torch.nn.ModuleDict")
                raise CellError(f"node id cannot name a module ({why}): rename the node", n,
                                self.name)
            if key in owner:
                raise CellError(f"node ids {owner[key]!r} and {n!r} both compile to module "
                                f"{key!r} ('.' becomes '_' in module names): rename one", n,
                                self.name)
            owner[key] = n

    def resolution_levels(self) -> dict[str, int]:
        """The downsampling factor (product of strides) of each node relative to the cell
        inputs; raises CellError when a merge sees two resolutions. Called by ``validate`` and
        by the compiler (which reduces output states at twice the resolution)."""
        level: dict[str, int] = {}
        for n in self.topological_order():
            d, srcs = self.graph.nodes[n], self.operands(n)
            if d["kind"] == "input":
                level[n] = 1
            elif d["kind"] == "op":
                level[n] = level[srcs[0]] * d["stride"]
            elif d["kind"] == "combine":
                levels = {level[s] for s in srcs}
                if len(levels) > 1:
                    raise CellError(f"merges inputs of different resolutions "
                                    f"({', '.join(srcs)})", n, self.name)
                level[n] = levels.pop()
            else:  # output: states at twice the resolution are reduced by the compiler
                if max(level[s] for s in srcs) not in (min(level[s] for s in srcs),
                                                       2 * min(level[s] for s in srcs)):
                    raise CellError("output states differ by more than one 2x reduction", n,
                                    self.name)
        return level

    # --------------------------------------------------------------- hashing
    def channel_order_matters(self) -> bool:
        """True when an op of this cell sees channel positions (see OpSpec)."""
        return any(OPS[d["op"]].channel_order_sensitive
                   for _, d in self.graph.nodes(data=True) if d["kind"] == "op")

    def node_hashes(self, ordered_concat: bool | None = None) -> dict[str, str]:
        """Merkle hash of each node: its label plus its inputs' hashes, sorted when the merge
        is commutative, or only permutes channels (concat, the output) and channel order does
        not matter (``ordered_concat``; default: ``channel_order_matters()``). Independent of
        node ids and insertion order."""
        if ordered_concat is None:
            ordered_concat = self.channel_order_matters()
        out: dict[str, str] = {}
        for n in self.topological_order():
            d = self.graph.nodes[n]
            srcs = [out[s] for s in self.operands(n)]
            if d["kind"] == "input":
                label = ("input", d["index"])
            elif d["kind"] == "op":
                label = ("op", d["op"], d["stride"], d.get("channels"),
                         sorted(d.get("args", {}).items()))
            elif d["kind"] == "combine":
                label = ("combine", d["combine"])
                spec = COMBINES[d["combine"]]
                if spec.commutative or (spec.permutes_channels and not ordered_concat):
                    srcs = sorted(srcs)
            else:
                label = ("output",)
                if not ordered_concat:
                    srcs = sorted(srcs)
            out[n] = sha256_hex(json.dumps([label, srcs], default=str))
        return out

    def canonical_hash(self, ordered_concat: bool | None = None) -> str:
        """Equal for isomorphic cells: the output's Merkle hash plus the multiset of node hashes
        (which tells a shared op from two identical ones). A cell with zero ops (NAS-Bench-201's
        ``none``) is hashed without its zero paths (``nasforge.dsl.zero_paths``)."""
        if has_zero_ops(self):
            reduced = without_zero_paths(self)
            if reduced is ZERO_CELL:
                return sha256_hex(json.dumps([ZERO_CELL]))
            return reduced.graph_hash(ordered_concat)
        return self.graph_hash(ordered_concat)

    def graph_hash(self, ordered_concat: bool | None = None) -> str:
        """``canonical_hash`` of the graph as written (zero ops hashed like any other op)."""
        hashes = self.node_hashes(ordered_concat)
        return sha256_hex(json.dumps([hashes[self.output_node], sorted(hashes.values())]))

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        nodes = []
        for n in self.graph.nodes:
            d = self.graph.nodes[n]
            entry = {"id": n, "kind": d["kind"]}
            if d["kind"] == "input":
                entry["index"] = d["index"]
            elif d["kind"] == "op":
                entry.update(op=d["op"], stride=d["stride"])
                if d.get("channels") is not None:
                    entry["channels"] = d["channels"]
                if d.get("args"):
                    entry["args"] = dict(d["args"])
            elif d["kind"] == "combine":
                entry["combine"] = d["combine"]
            else:
                entry["policy"] = d.get("policy", "explicit")
            if d["kind"] != "input":
                entry["inputs"] = self.operands(n)
            nodes.append(entry)
        return {"format": CELL_FORMAT, "name": self.name, "reduction": self.reduction,
                "nodes": nodes}

    @classmethod
    def from_dict(cls, data: dict) -> "Cell":
        """Inverse of ``to_dict``; raises CellError on malformed input (not yet validated)."""
        check_format(data, CELL_FORMAT)
        cell = cls(str(data.get("name", "")), bool(data.get("reduction", False)))
        nodes = data.get("nodes")
        if not isinstance(nodes, list):
            raise CellError("'nodes' must be a list", None, cell.name)
        for entry in nodes:
            if not isinstance(entry, dict) or "id" not in entry or "kind" not in entry:
                raise CellError(f"each node needs 'id' and 'kind', got {entry!r}", None,
                                cell.name)
            n, kind = str(entry["id"]), entry["kind"]
            if n in cell.graph:
                raise CellError("duplicate node id", n, cell.name)
            attrs = {"kind": kind}
            if kind == "input":
                attrs["index"] = entry.get("index")
            elif kind == "op":
                args = entry.get("args", {})
                if not isinstance(args, dict):
                    raise CellError("'args' must be a JSON object", n, cell.name)
                attrs.update(op=entry.get("op"), stride=entry.get("stride", 1), args=dict(args))
                if entry.get("channels") is not None:
                    attrs["channels"] = entry["channels"]
            elif kind == "combine":
                attrs["combine"] = entry.get("combine")
            elif kind == "output":
                attrs["policy"] = entry.get("policy", "explicit")
            cell.graph.add_node(n, **attrs)
        for entry in nodes:
            inputs = entry.get("inputs", [])
            if not isinstance(inputs, list):
                raise CellError("'inputs' must be a list", str(entry["id"]), cell.name)
            cell._connect([str(i) for i in inputs], str(entry["id"]))
        cell._counter = len(cell.graph)
        return cell

    # ---------------------------------------------------------------- render
    def to_dot(self) -> str:
        """Graphviz DOT text (built with pydot; layout is left to Graphviz)."""
        return to_pydot(self).to_string()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse_json(text: str):
    """JSON text as Python data; CellError (one line) when it is malformed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CellError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


_NODE_STYLE = {"input": dict(shape="box", style="filled", fillcolor="lightblue"),
               "op": dict(shape="box", style="rounded"),
               "combine": dict(shape="circle", style="filled", fillcolor="lightyellow"),
               "output": dict(shape="box", style="filled", fillcolor="palegreen")}


def node_label(d: dict) -> str:
    """The text a drawing shows for a node with attributes ``d`` (Graphviz and matplotlib)."""
    if d["kind"] == "input":
        return {0: "h_i", 1: "h_(i-1)"}.get(d["index"], str(d["index"]))
    if d["kind"] == "op":
        return d["op"] + (" /2" if d["stride"] == 2 else "")
    if d["kind"] == "combine":
        return {"add": "+", "concat": "||"}.get(d["combine"], d["combine"])
    return "concat" + ("" if d.get("policy") == "explicit" else " (unused)")


def to_pydot(cell: Cell, prefix: str = "", graph=None):
    """The cell as a pydot graph (or a cluster inside ``graph``)."""
    import pydot

    dot = graph if graph is not None else pydot.Dot(graph_type="digraph", rankdir="TB",
                                                    label=cell.name, labelloc="t")
    for n, d in cell.graph.nodes(data=True):
        label = node_label(d)
        dot.add_node(pydot.Node(f'"{prefix}{n}"', label=f'"{label}"', **_NODE_STYLE[d["kind"]]))
    for u, v, slot in cell.graph.edges(data="slot"):
        dot.add_edge(pydot.Edge(f'"{prefix}{u}"', f'"{prefix}{v}"'))
    return dot


class CellPair(JsonRecord):
    """A (normal, reduction) pair: what a NASNet-style search finds and a network stacks.

    ``network`` holds optional macro-architecture defaults (e.g. PNASNet's reduction layout)
    that travel with the cells in JSON.
    """

    def __init__(self, normal: Cell, reduction: Cell, name: str = "",
                 network: dict | None = None):
        self.normal, self.reduction, self.name = normal, reduction, name
        self.network = dict(network or {})

    def validate(self) -> "CellPair":
        self.normal.validate()
        self.reduction.validate()
        return self

    def canonical_hash(self) -> str:
        return sha256_hex(self.normal.canonical_hash() + self.reduction.canonical_hash())

    def to_dict(self) -> dict:
        d = {"format": PAIR_FORMAT, "name": self.name, "normal": self.normal.to_dict(),
             "reduction": self.reduction.to_dict()}
        if self.network:
            d["network"] = dict(self.network)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "CellPair":
        check_format(data, PAIR_FORMAT)
        for key in ("normal", "reduction"):
            if key not in data:
                raise CellError(f"cell pair has no {key!r} cell")
        network = data.get("network", {})
        if not isinstance(network, dict):
            raise CellError("'network' must be a JSON object of network options")
        return cls(Cell.from_dict(data["normal"]), Cell.from_dict(data["reduction"]),
                   str(data.get("name", "")), network)

    def to_dot(self) -> str:
        import pydot

        dot = pydot.Dot(graph_type="digraph", rankdir="TB", label=self.name, labelloc="t")
        for key, cell in (("normal", self.normal), ("reduction", self.reduction)):
            cluster = pydot.Cluster(key, label=f"{key} cell")
            to_pydot(cell, prefix=f"{key}/", graph=cluster)
            dot.add_subgraph(cluster)
        return dot.to_string()

    def __repr__(self):
        return f"CellPair({self.name!r})"


def render(dot_text: str, fmt: str) -> bytes:
    """Render DOT to ``svg``/``png`` with the Graphviz ``dot`` program (via pydot)."""
    import pydot

    graphs = pydot.graph_from_dot_data(dot_text)
    try:
        return graphs[0].create(format=fmt)
    except FileNotFoundError:
        raise RuntimeError("rendering needs Graphviz's 'dot' program "
                           "(e.g. apt-get install graphviz)") from None
