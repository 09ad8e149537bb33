"""The cell DSL: builder, JSON, validation messages, canonical hash, DOT."""
import json

import pytest

from nasforge.dsl import Cell, CellError, CellPair, cell_from_blocks, render
from nasforge.zoo import ZOO

from conftest import requires_dot


def small_cell(swap=False, op="sep_conv_3x3"):
    c = Cell("small")
    h0, h1 = c.inputs()
    a, b = c.op(op, h0), c.op("identity", h1)
    b0 = c.combine("add", *((b, a) if swap else (a, b)), node_id="b0")
    c.combine("concat", c.op("max_pool_3x3", b0), c.op("avg_pool_3x3", h1), node_id="b1")
    c.set_output()
    return c


def test_builder_and_default_output_is_unused_states():
    c = small_cell().validate()
    assert c.operands(c.output_node) == ["b1"]  # only the last combine is unconsumed
    assert c.graph.nodes[c.output_node]["policy"] == "unused"


def test_reduction_builder_strides_ops_on_cell_inputs_only():
    c = Cell("r", reduction=True)
    h0, h1 = c.inputs()
    b0 = c.combine("add", c.op("sep_conv_3x3", h0), c.op("identity", h1))
    top = c.op("sep_conv_3x3", b0)
    c.set_output([top])
    assert [c.graph.nodes[n]["stride"] for n in c.nodes("op")] == [2, 2, 1]


def test_json_round_trip_cell_and_pair_is_lossless():
    c = small_cell()
    text = c.to_json()
    assert json.loads(text)["format"] == "nasforge.cell/1"
    back = Cell.from_json(text)
    assert back == c and back.to_json() == text
    for entry in (e for e in ZOO.values() if e.build_pair):
        pair = entry.build_pair()
        again = CellPair.from_json(pair.to_json())
        assert again == pair and again.to_json() == pair.to_json()
        assert again.canonical_hash() == pair.canonical_hash()
        assert json.loads(pair.to_json())["format"] == "nasforge.cellpair/1"


def test_canonical_hash_ignores_operand_order_and_ids():
    assert small_cell().canonical_hash() == small_cell(swap=True).canonical_hash()
    renamed = Cell.from_json(small_cell().to_json().replace('"b1"', '"zzz"'))
    assert renamed.canonical_hash() == small_cell().canonical_hash()
    assert small_cell(op="sep_conv_5x5").canonical_hash() != small_cell().canonical_hash()


def test_canonical_hash_tells_shared_op_from_two_ops():
    def cell(shared):
        c = Cell("s" if shared else "t")
        h0, h1 = c.inputs()
        a = c.op("conv_3x3", h0)
        b = a if shared else c.op("conv_3x3", h0)  # one op read twice, or two equal ops
        c.set_output([c.combine("add", a, c.op("identity", h1)),
                      c.combine("add", b, c.op("max_pool_3x3", h1))])
        return c.validate()
    assert cell(shared=True).canonical_hash() != cell(shared=False).canonical_hash()


def test_a_node_cannot_read_the_same_state_twice():
    # one edge per node pair: add(a, a) would silently become add(a), concat(a, a) concat(a)
    c = Cell("twice")
    h0, _ = c.inputs()
    a = c.op("conv_3x3", h0, node_id="a")
    with pytest.raises(CellError, match=r"node 'c2': reads 'a' twice"):
        c.combine("concat", a, a, node_id="c2")
    with pytest.raises(CellError, match="node 'out': reads 'a' twice"):
        c.set_output([a, a])


def _raw(nodes):
    return {"format": "nasforge.cell/1", "name": "bad", "nodes": nodes}


H = [{"id": "h0", "kind": "input", "index": 0}, {"id": "h1", "kind": "input", "index": 1}]


@pytest.mark.parametrize("nodes,node,words", [
    (H + [{"id": "x", "kind": "op", "op": "conv_9x9", "inputs": ["h0"]},
          {"id": "out", "kind": "output", "inputs": ["x"]}], "x", "unknown op 'conv_9x9'"),
    (H + [{"id": "a", "kind": "op", "op": "conv_1x1", "inputs": ["b"]},
          {"id": "b", "kind": "op", "op": "conv_1x1", "inputs": ["a"]},
          {"id": "out", "kind": "output", "inputs": ["a"]}], "a", "cycle"),
    (H + [{"id": "x", "kind": "op", "op": "conv_1x1", "inputs": ["h0"]},
          {"id": "y", "kind": "op", "op": "conv_1x1", "inputs": ["h1"]},
          {"id": "out", "kind": "output", "inputs": ["x"]}], "y", "never reaches the output"),
    (H + [{"id": "x", "kind": "op", "op": "conv_1x1", "inputs": ["h0", "h1"]},
          {"id": "out", "kind": "output", "inputs": ["x"]}], "x", "exactly 1 input, got 2"),
    (H + [{"id": "s", "kind": "combine", "combine": "add", "inputs": ["h0"]},
          {"id": "out", "kind": "output", "inputs": ["s"]}], "s", "at least 2 inputs"),
    (H + [{"id": "h2", "kind": "input", "index": 2},
          {"id": "out", "kind": "output", "inputs": ["h2"]}], "h2", "input index 2 out of range"),
    (H + [{"id": "x", "kind": "op", "op": "conv_1x1", "inputs": ["h0"]}], None,
     "missing output"),
    (H + [{"id": "out", "kind": "output", "inputs": []}], "out", "empty output"),
])
def test_validate_names_the_offending_node(nodes, node, words):
    with pytest.raises(CellError) as err:
        Cell.from_dict(_raw(nodes)).validate()
    assert words in str(err.value)
    assert err.value.node == node
    if node:
        assert f"node {node!r}" in str(err.value)


def test_block_index_out_of_range_is_named():
    with pytest.raises(CellError, match="'b1_b'.*input index 5 out of range"):
        cell_from_blocks("x", ["identity"] * 4, [0, 1, 0, 5])


def test_mixed_resolutions_are_rejected():
    c = Cell("m")
    h0, h1 = c.inputs()
    c.set_output([c.combine("add", c.op("conv_1x1", h0, stride=2), c.op("conv_1x1", h1))])
    with pytest.raises(CellError, match="different resolutions"):
        c.validate()


def test_dot_text():
    pair = ZOO["nasnet_a"].build_pair()
    dot = pair.to_dot()
    assert dot.startswith("digraph") and "sep_conv_5x5" in dot and "cluster_normal" in dot
    assert '"normal/b0"' in dot and "/2" in dot  # strided ops are marked in the reduction cell


@requires_dot
def test_dot_renders_svg_and_png():
    svg = render(ZOO["nasnet_a"].build_pair().to_dot(), "svg")
    assert b"<svg" in svg
    assert render(small_cell().to_dot(), "png").startswith(b"\x89PNG")


def test_render_without_graphviz_names_the_missing_program(no_dot):
    with pytest.raises(RuntimeError, match="needs Graphviz's 'dot' program"):
        render(small_cell().to_dot(), "svg")


def test_concat_order_counts_only_where_channel_positions_matter():
    def cell(order, shuffle):
        c = Cell("s")
        h0, h1 = c.inputs()
        a, b = c.op("conv_1x1", h0), c.op("conv_3x3", h1)
        x = c.combine("concat", *((a, b) if order else (b, a)))
        c.set_output([c.op("channel_shuffle", x, groups=2) if shuffle else x])
        return c
    assert cell(True, False).canonical_hash() == cell(False, False).canonical_hash()
    assert cell(True, True).canonical_hash() != cell(False, True).canonical_hash()
