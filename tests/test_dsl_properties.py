"""Properties of the cell DSL over generated cells (Hypothesis).

Valid cells come from two generators: NASNet block cells sampled by the search space
(random B, op set and combines) and hand-style cells with free node ids (strings over
``a``, ``b``, ``0``, ``.``, ``_``, ``-``). Every valid cell validates, round-trips through
JSON to the same hash, compiles to one module per op node and trains one step; relabeled and
operand-permuted copies share its hash, a changed op or input changes it; each kind of invalid cell is refused by
``validate()`` with its own message naming the problem and the node.

Examples per property (deterministic: ``derandomize=True``, so CI sees the same cells on
every run): graph-only properties 200 each, compile/forward/backward of a cell 100, of a cell
pair (a whole network) 30. The file takes about 45 s of one core (most of it Hypothesis
generating cells), plus about 8 s of imports.
"""
from __future__ import annotations

import json
from dataclasses import replace
from itertools import product

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nasforge.compiler import CompiledGraph, Network
from nasforge.dsl import Cell, CellError, CellPair, module_key
from nasforge.dsl.cell import RESERVED_MODULE_KEYS
from nasforge.ops import NASNET_OPS
from nasforge.registry import COMBINES, OPS, create_op
from nasforge.search_spaces.nasnet import NasNetSpace
from nasforge.zoo import SETTINGS

# Deterministic in CI: the same examples on every run, no example database between runs.
DETERMINISTIC = settings(derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.too_slow])
# 100 examples per graph-level property (200 before: these 11 tests took about 2 minutes of
# the default suite on 2 busy cores); the compile and network properties keep their counts
# the counts, not a time per example, bound these tests: a deadline fails on a busy machine
GRAPH = settings(DETERMINISTIC, max_examples=100, deadline=None)
COMPILE = settings(DETERMINISTIC, max_examples=100, deadline=None)
NETWORK = settings(DETERMINISTIC, max_examples=30, deadline=None)

CELL_OPS = NASNET_OPS + ("dil_sep_conv_3x3",)  # ops that take (c_in, c_out, stride) only
F = 4  # filters of compiled cells: tiny, the properties are about wiring
SIZE = 8  # pixels of the test input


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ strategies
# A NASNet block merges two op outputs of equal width: every registered combine that can.
BLOCK_COMBINES = tuple(sorted(name for name, spec in COMBINES.items()
                              if spec.min_inputs <= 2 <= (spec.max_inputs or 2)))
# Hand-style cells merge states of any width and count: the general-purpose merges (the family
# combines -- highway, sk_select, ... -- have fixed arities and layouts, checked by their tests).
HAND_COMBINES = ("add", "concat", "multiply")


def sampled_space(draw, max_blocks: int, combines=BLOCK_COMBINES) -> NasNetSpace:
    """A NASNet search space with a drawn block count, op set and combine set."""
    return NasNetSpace(draw(st.integers(1, max_blocks)),
                       draw(st.lists(st.sampled_from(CELL_OPS), min_size=1, max_size=5,
                                     unique=True)),
                       draw(st.lists(st.sampled_from(combines), min_size=1, unique=True)))


def sampled_pair(draw, space: NasNetSpace) -> CellPair:
    """A pair the space samples with its own sampler from a drawn seed: one draw instead of
    10B (generation, not the properties, is what costs time here); B, the op set and the
    combines still shrink."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    return space.to_graph(space.sample(rng), name="sampled")


@st.composite
def block_cells(draw):
    """A NASNet cell as the search space samples it: B blocks of two ops and a combine."""
    pair = sampled_pair(draw, sampled_space(draw, max_blocks=5))
    return pair.reduction if draw(st.booleans()) else pair.normal


@st.composite
def cell_pairs(draw, max_blocks=3):
    return sampled_pair(draw, sampled_space(draw, max_blocks, combines=("add", "concat")))


# Free node ids: every string of up to 3 of these characters (one draw each, and pairs
# such as 'a.b' / 'a_b' that share a module key are among them).
ID_POOL = ["".join(chars) for k in (1, 2, 3) for chars in product("ab0.-_", repeat=k)]
node_ids = st.sampled_from(ID_POOL)


@st.composite
def hand_cells(draw):
    """A cell written by hand: ops on any state, add/multiply of ops (one width), concat of
    any states, explicit output of every sink plus any other states; ids free but distinct as
    module names (what ``validate`` asks)."""
    steps = []  # ("op", name, source) | ("combine", name, sources); states 0, 1 = inputs
    num_steps = draw(st.integers(1, 8))
    for _ in range(num_steps):
        n_states = 2 + len(steps)
        ops_so_far = [2 + j for j, s in enumerate(steps) if s[0] == "op"]
        if len(ops_so_far) >= 2 and draw(st.booleans()):
            name = draw(st.sampled_from(HAND_COMBINES))
            pool = ops_so_far if name != "concat" else list(range(n_states))
            sources = draw(st.lists(st.sampled_from(pool), min_size=2, max_size=3,
                                    unique=True))
            steps.append(("combine", name, sources))
        else:
            steps.append(("op", draw(st.sampled_from(CELL_OPS)),
                          draw(st.integers(0, n_states - 1))))
    ids = draw(st.lists(node_ids, min_size=len(steps) + 3, max_size=len(steps) + 3,
                        unique_by=module_key))
    cell = Cell("hand")
    state = [cell.input(0, node_id=ids[0]), cell.input(1, node_id=ids[1])]
    for k, step in enumerate(steps):
        if step[0] == "op":
            state.append(cell.op(step[1], state[step[2]], node_id=ids[2 + k]))
        else:
            state.append(cell.combine(step[1], *(state[s] for s in step[2]),
                                      node_id=ids[2 + k]))
    consumed = {u for u, _ in cell.graph.edges}
    sinks = [s for s in state[2:] if s not in consumed]
    extra = draw(st.lists(st.sampled_from(state), unique=True, max_size=3))
    outputs = sinks + [s for s in extra if s not in sinks]
    cell.set_output(outputs, node_id=ids[-1])
    return cell


valid_cells = st.one_of(block_cells(), hand_cells())


# --------------------------------------------------------------------------------- helpers
def relabeled(cell: Cell, new_ids: list[str], order: list[int]) -> Cell:
    """The same cell with node ids replaced and nodes listed in another order (via JSON)."""
    data = cell.to_dict()
    mapping = {e["id"]: new_ids[i] for i, e in enumerate(data["nodes"])}
    for e in data["nodes"]:
        e["id"] = mapping[e["id"]]
        if "inputs" in e:
            e["inputs"] = [mapping[s] for s in e["inputs"]]
    data["nodes"] = [data["nodes"][i] for i in order]
    return Cell.from_dict(data)


def permuted_operands(cell: Cell, draw_permutation) -> Cell:
    """The same cell with the operands of every order-free merge permuted: add/multiply,
    and concat and the output when no op sees channel positions."""
    out = cell.copy()
    order_free = not cell.channel_order_matters()
    for n, d in out.graph.nodes(data=True):
        if d["kind"] == "combine":
            spec = COMBINES[d["combine"]]
            free = spec.commutative or (spec.permutes_channels and order_free)
        else:
            free = d["kind"] == "output" and order_free
        if free:
            sources = out.operands(n)
            for slot, src in zip(draw_permutation(len(sources)), sources):
                out.graph.edges[src, n]["slot"] = slot
    return out


def output_width(cell: Cell) -> int:
    """Output channels in units of F, counted from the graph: an input, op, add or multiply
    is one unit, a concat the sum of its operands."""
    width: dict[str, int] = {}
    for n in nx.topological_sort(cell.graph):
        d = cell.graph.nodes[n]
        if d["kind"] == "combine" and d["combine"] == "concat" or d["kind"] == "output":
            width[n] = sum(width[s] for s in cell.graph.predecessors(n))
        else:
            width[n] = 1
    return width[cell.output_node]


def rebuilt_without(cell: Cell, ids_to_drop=()) -> dict:
    data = cell.to_dict()
    data["nodes"] = [e for e in data["nodes"] if e["id"] not in ids_to_drop]
    return data


# ------------------------------------------------------------------------ valid cells
@GRAPH
@given(valid_cells)
def test_every_generated_cell_validates_and_round_trips_through_json(cell):
    cell.validate()
    text = cell.to_json()
    back = Cell.from_json(text)
    assert back == cell and back.to_json() == text
    assert back.validate().canonical_hash() == cell.canonical_hash()


@GRAPH
@given(cell_pairs())
def test_every_generated_pair_validates_and_round_trips_through_json(pair):
    pair.validate()
    back = CellPair.from_json(pair.to_json())
    assert back == pair and back.validate().canonical_hash() == pair.canonical_hash()
    data = json.loads(pair.to_json())
    data["normal"], data["reduction"] = data["reduction"], data["normal"]
    if pair.normal.canonical_hash() != pair.reduction.canonical_hash():
        assert CellPair.from_dict(data).canonical_hash() != pair.canonical_hash()


@GRAPH
@given(valid_cells, st.data())
def test_relabeled_and_reordered_cells_share_the_hash(cell, data):
    n = len(cell.graph)
    new_ids = data.draw(st.lists(node_ids, min_size=n, max_size=n, unique_by=module_key))
    order = data.draw(st.permutations(range(n)))
    twin = relabeled(cell, new_ids, list(order))
    assert twin.validate().canonical_hash() == cell.canonical_hash()


@GRAPH
@given(valid_cells, st.data())
def test_operand_permuted_cells_share_the_hash(cell, data):
    twin = permuted_operands(cell, lambda k: data.draw(st.permutations(range(k))))
    assert twin.validate().canonical_hash() == cell.canonical_hash()


@GRAPH
@given(valid_cells, st.data())
def test_a_changed_op_changes_the_hash(cell, data):
    node = data.draw(st.sampled_from(cell.nodes("op")))
    old = cell.graph.nodes[node]["op"]
    changed = cell.copy()
    changed.graph.nodes[node]["op"] = data.draw(st.sampled_from(
        [o for o in CELL_OPS if o != old]))
    assert changed.validate().canonical_hash() != cell.canonical_hash()


@GRAPH
@given(valid_cells, st.data())
def test_a_changed_input_changes_the_hash(cell, data):
    """Rewire one op to a state that computes something else (another node hash: rewiring
    to an identical twin state is the same computation, and hashes equal by design)."""
    hashes = cell.node_hashes()
    levels = cell.resolution_levels()
    candidates = []
    for node in cell.nodes("op"):
        source = cell.operands(node)[0]
        below = nx.descendants(cell.graph, node) | {node}
        candidates += [(node, s) for s in cell.graph.nodes
                       if s not in below and cell.graph.nodes[s]["kind"] != "output"
                       and hashes[s] != hashes[source] and levels[s] == levels[source]]
    assume(candidates)
    node, new_source = data.draw(st.sampled_from(candidates))
    changed = cell.copy()
    changed.graph.remove_edge(cell.operands(node)[0], node)
    changed.graph.add_edge(new_source, node, slot=0)
    try:
        changed.validate()
    except CellError:
        assume(False)  # the old source now reaches nothing: not a cell any more
    assert changed.canonical_hash() != cell.canonical_hash()


@COMPILE
@given(valid_cells, st.integers(1, 2))
def test_every_generated_cell_compiles_to_one_module_per_op_and_trains(cell, batch):
    body = CompiledGraph(cell, F, [F, F])
    op_nodes = cell.nodes("op")
    # one module per op node: as many distinct modules as op nodes, each with the
    # parameters of its op built alone (a lost module would be missing from the count)
    assert len(body.ops) == len(op_nodes)
    assert len({id(m) for m in body.ops.values()}) == len(op_nodes)
    assert sorted(n for n, _ in body.op_modules()) == sorted(op_nodes)
    widths = {}
    for n in cell.topological_order():
        d = cell.graph.nodes[n]
        srcs = cell.operands(n)
        widths[n] = (F if d["kind"] in ("input", "op") else
                     sum(widths[s] for s in srcs) if d.get("combine") == "concat" else
                     widths[srcs[0]] if d["kind"] == "combine" else None)
    expected = sum(sum(p.numel() for p in create_op(
        cell.graph.nodes[n]["op"], widths[cell.operands(n)[0]], F,
        cell.graph.nodes[n]["stride"]).parameters()) for n in op_nodes)
    assert sum(p.numel() for p in body.ops.parameters()) == expected

    inputs = [torch.randn(batch + 1, F, SIZE, SIZE, requires_grad=True) for _ in range(2)]
    y = body(*inputs)
    side = SIZE // 2 if cell.reduction else SIZE  # block cells stride every op on an input
    assert y.shape == (batch + 1, F * output_width(cell), side, side)
    y.square().mean().backward()
    for name, p in body.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@NETWORK
@given(cell_pairs())
def test_every_generated_pair_compiles_to_a_network_that_trains(pair):
    config = replace(SETTINGS["cifar"], N=1, filters=F, stem_multiplier=1.0,
                     drop_path_keep_prob=1.0, input_size=SIZE)
    model = Network(pair, config)
    for slot, module in zip(model.schedule.slots, model.cells):
        cell = pair.normal if slot.kind == "normal" else pair.reduction
        assert len(module.body.ops) == len(cell.nodes("op"))
    logits = model(torch.randn(2, 3, SIZE, SIZE))
    assert logits.shape == (2, config.num_classes)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------- invalid cells
def refusal(data: dict) -> CellError:
    with pytest.raises(CellError) as err:
        Cell.from_dict(data).validate()
    return err.value


def assert_names_node(err: CellError, node: str):
    assert err.node == node and f"node {node!r}" in str(err)


@GRAPH
@given(valid_cells, st.data())
def test_a_cycle_is_refused_naming_a_node_on_it(cell, data):
    node = data.draw(st.sampled_from(cell.nodes("op")))
    below = [n for n in nx.descendants(cell.graph, node) | {node}
             if cell.graph.nodes[n]["kind"] != "output"]
    loop_back = data.draw(st.sampled_from(sorted(below)))
    d = cell.to_dict()
    next(e for e in d["nodes"] if e["id"] == node)["inputs"] = [loop_back]
    err = refusal(d)
    assert "is on a cycle" in str(err)
    assert err.node in nx.descendants(cell.graph, node) | {node}
    assert_names_node(err, err.node)


@GRAPH
@given(valid_cells, st.data())
def test_a_dangling_input_is_refused_naming_the_missing_node(cell, data):
    node = data.draw(st.sampled_from(cell.nodes("op") + cell.nodes("combine")))
    ghost = data.draw(st.sampled_from([i for i in ID_POOL if i not in cell.graph]))
    d = cell.to_dict()
    entry = next(e for e in d["nodes"] if e["id"] == node)
    entry["inputs"][data.draw(st.integers(0, len(entry["inputs"]) - 1))] = ghost
    err = refusal(d)  # JSON: refused while reading
    assert f"unknown input {ghost!r}" in str(err)
    assert_names_node(err, node)
    # a graph edited in memory: refused by validate
    edited = cell.copy()
    edited.graph.add_edge(ghost, node, slot=99)
    with pytest.raises(CellError) as err:
        edited.validate()
    assert f"undefined node, read by {node!r}" in str(err.value)
    assert_names_node(err.value, ghost)


@GRAPH
@given(valid_cells, st.data())
def test_an_unknown_op_is_refused_naming_it(cell, data):
    node = data.draw(st.sampled_from(cell.nodes("op")))
    name = data.draw(st.text(alphabet="abcxyz_13", min_size=1, max_size=8).filter(
        lambda o: o not in OPS))
    d = cell.to_dict()
    next(e for e in d["nodes"] if e["id"] == node)["op"] = name
    err = refusal(d)
    assert f"unknown op {name!r}" in str(err)
    assert_names_node(err, node)


@GRAPH
@given(valid_cells, st.data())
def test_a_bad_input_index_is_refused_naming_it(cell, data):
    node = data.draw(st.sampled_from(cell.nodes("input")))
    index = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=2)))
    d = cell.to_dict()
    next(e for e in d["nodes"] if e["id"] == node)["index"] = index
    err = refusal(d)
    assert f"input index {index} out of range" in str(err)
    assert_names_node(err, node)


@GRAPH
@given(valid_cells)
def test_a_missing_output_is_refused(cell):
    err = refusal(rebuilt_without(cell, [cell.output_node]))
    assert "missing output node" in str(err) and err.node is None


@GRAPH
@given(valid_cells, st.data())
def test_ids_sharing_a_module_are_refused_naming_both(cell, data):
    first, second = data.draw(st.lists(st.sampled_from(list(cell.graph.nodes)), min_size=2,
                                       max_size=2, unique=True))
    stem = data.draw(st.sampled_from([i for i in ID_POOL if "." in i]))
    dotted, underscored = stem, stem.replace(".", "_")
    assume(not {module_key(i) for i in (dotted, underscored)} & set(map(
        module_key, cell.graph.nodes)))
    mapping = {first: dotted, second: underscored}
    ids = [mapping.get(e["id"], e["id"]) for e in cell.to_dict()["nodes"]]
    with pytest.raises(CellError) as err:
        relabeled(cell, ids, list(range(len(ids)))).validate()
    message = str(err.value)
    assert f"both compile to module {underscored!r}" in message
    assert repr(dotted) in message.split("both")[0] and repr(underscored) in message


@GRAPH
@given(valid_cells, st.data())
def test_ids_torch_reserves_are_refused(cell, data):
    node = data.draw(st.sampled_from(list(cell.graph.nodes)))
    reserved = data.draw(st.sampled_from(sorted(k for k in RESERVED_MODULE_KEYS
                                                if k[0] != "_")))
    assume(reserved not in cell.graph)
    ids = [reserved if n == node else n for n in (e["id"] for e in cell.to_dict()["nodes"])]
    with pytest.raises(CellError) as err:
        relabeled(cell, ids, list(range(len(ids)))).validate()
    assert "is an attribute of torch.nn.ModuleDict" in str(err.value)
    assert_names_node(err.value, reserved)


@GRAPH
@given(valid_cells, st.data())
def test_an_op_whose_result_goes_nowhere_is_refused_naming_it(cell, data):
    source = data.draw(st.sampled_from(list(cell.nodes("input") + cell.nodes("op"))))
    d = cell.to_dict()
    taken = set(map(module_key, cell.graph.nodes))
    orphan = data.draw(st.sampled_from([i for i in ID_POOL if module_key(i) not in taken]))
    d["nodes"].append({"id": orphan, "kind": "op", "op": "conv_1x1", "stride": 1,
                       "inputs": [source]})
    err = refusal(d)
    assert "never reaches the output" in str(err)
    assert_names_node(err, orphan)
