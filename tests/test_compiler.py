"""The network compiler: schedules, input adjustments, drop-path, auxiliary head."""
from dataclasses import replace

import pytest
import torch

from nasforge.api import build_model, resolve
from nasforge.compiler import CompiledGraph, Network, schedule
from nasforge.dsl import Cell, CellError, CellPair
from nasforge.zoo import SETTINGS


def _wiring(setting, name="nasnet_a"):
    _, config = resolve(name, setting)
    return [(s.name, s.cur, s.prev) for s in schedule(config).slots]


def test_nasnet_schedule_matches_the_tf_builder():
    # mobile: the cell after a reduction takes the reduction's input as h_(i-1)
    mobile = _wiring("mobile")
    assert [n for n, _, _ in mobile][:7] == ["cell_stem_0", "cell_stem_1", "cell_0", "cell_1",
                                             "cell_2", "cell_3", "reduction_cell_0"]
    assert mobile[0][1:] == (0, None) and mobile[1][1:] == (1, 0)  # stems: raw h_(i-1)
    assert mobile[6][1:] == (6, 5) and mobile[7] == ("cell_4", 7, 6)
    # large (skip_reduction_layer_input): it skips back to the state before the reduction
    large = _wiring("large")
    assert large[8] == ("reduction_cell_0", 8, 7) and large[9] == ("cell_6", 9, 7)
    assert len(large) == 2 + 18 + 2


def test_pnasnet_schedule_replaces_cells_with_strided_ones():
    slots = schedule(resolve("pnasnet_5", "large")[1]).slots
    assert len(slots) == 2 + 12
    assert [s.stride for s in slots] == [2, 2] + [1] * 4 + [2] + [1] * 3 + [2] + [1] * 3
    assert [s.kind for s in slots[2:]].count("reduction") == 2


def test_cifar_first_cell_has_no_h_prev():
    slots = schedule(SETTINGS["cifar"]).slots
    assert slots[0].prev is None and slots[1].prev == 0
    assert [s.name for s in slots].count("reduction_cell_0") == 1 and len(slots) == 20


def test_aux_head_and_train_eval_outputs():
    model = build_model("nasnet_a", "cifar", N=1, filters=8, aux_head=True)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, 10)
    model.eval()
    assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match="two reductions"):
        build_model("nasnet_a", "cifar", N=1, filters=8, aux_head=True, num_reduction_layers=1)


def test_scheduled_drop_path():
    model = build_model("nasnet_a", "cifar", N=1, filters=8, drop_path_keep_prob=0.6)
    keeps = [c.drop_path.keep_prob for c in model.cells]
    total = len(keeps)
    assert keeps == pytest.approx([1 - (i + 1) / total * 0.4 for i in range(total)])
    model.train()
    model.set_drop_path_progress(0.0)  # start of training: nothing dropped
    drop = model.cells[-1].drop_path
    x = torch.ones(64, 4, 2, 2)
    assert torch.equal(drop(x), x)
    model.set_drop_path_progress(1.0)  # end of training: keep = 0.6, per example, rescaled
    y = drop(x)
    per_example = y.flatten(1)
    assert torch.all(per_example.min(1).values == per_example.max(1).values)  # whole examples
    kept = per_example[:, 0][per_example[:, 0] != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.6))
    assert 5 < int((per_example[:, 0] == 0).sum()) < 50
    model.eval()
    assert torch.equal(drop(x), x)


def test_identity_ops_are_never_dropped():
    cell = build_model("nasnet_a", "cifar", N=1, filters=8).cells[0]
    flags = {node: flag for node, kind, _, flag in cell.body._plan if kind == "op"}
    assert flags["b2_b"] is False and flags["b0_a"] is True  # b2_b is NASNet-A's identity


def test_unused_inputs_of_a_reduction_cell_are_reduced():
    # h0 unused and full-resolution next to a reduced block: factorized reduction in the output
    red = Cell("r", reduction=True)
    h0, h1 = red.inputs()
    red.combine("add", red.op("conv_1x1", h1), red.op("max_pool_3x3", h1), node_id="b0")
    red.set_output()
    assert red.operands(red.output_node) == ["h0", "b0"]
    normal = Cell("n")
    h0, h1 = normal.inputs()
    normal.combine("add", normal.op("conv_3x3", h0), normal.op("identity", h1), node_id="b0")
    normal.set_output()
    model = Network(CellPair(normal, red), replace(SETTINGS["cifar"], N=1, filters=8))
    assert "h0" in model.cells[1].body.adapt and model.cells[1].out_channels == 32
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_concat_combine_widens_the_state():
    cell = Cell("wide")
    h0, h1 = cell.inputs()
    b0 = cell.combine("concat", cell.op("conv_1x1", h0), cell.op("conv_1x1", h1))
    cell.set_output([cell.combine("add", cell.op("sep_conv_3x3", b0), cell.op("identity", b0))])
    config = replace(SETTINGS["cifar"], N=1, filters=8)
    model = Network(CellPair(cell, cell.as_reduction()), config)
    assert model.cells[0].out_channels == 8
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(CellError, match="reduction cell must halve the resolution 1 time"):
        Network(CellPair(cell, cell.copy()), config)


def test_penultimate_override_and_num_classes():
    model = build_model("nasnet_a", "cifar", penultimate=192, num_classes=7, N=1)
    assert model.config.filters == 8 and model.num_features == 192
    assert model.classifier.out_features == 7


def _dot_underscore_cell(second_id):
    """The cell of issue 14: ``p.q`` runs a 3x3 conv, ``second_id`` a 1x1 conv."""
    cell = Cell("dot_underscore")
    h0, h1 = cell.inputs()
    cell.set_output([cell.combine("add", cell.op("conv_3x3", h0, node_id="p.q"),
                                  cell.op("conv_1x1", h1, node_id=second_id))])
    return cell


def _relu_conv_bn_params(c_in, c_out, kernel):
    """Parameters of ReLU -> conv (no bias) -> BN, counted from torch.nn's own modules."""
    return sum(p.numel() for m in (torch.nn.Conv2d(c_in, c_out, kernel, bias=False),
                                   torch.nn.BatchNorm2d(c_out)) for p in m.parameters())


def test_node_ids_differing_only_by_dot_and_underscore_cannot_share_a_module():
    # 'p.q' and 'p_q' would both be module 'p_q' and the 3x3 conv would vanish: the cell is
    # refused, by validate() and so by the compiler, with a message naming both nodes
    clash = _dot_underscore_cell("p_q")
    for check in (clash.validate, lambda: CompiledGraph(clash, 8, [8, 8])):
        with pytest.raises(CellError, match=r"node ids 'p\.q' and 'p_q' both compile to "
                                            r"module 'p_q'"):
            check()
    # renamed, the two ops are two modules with their own parameter counts
    body = CompiledGraph(_dot_underscore_cell("p_r"), 8, [8, 8])
    count = {n: sum(p.numel() for p in m.parameters()) for n, m in body.op_modules()}
    assert count == {"p.q": _relu_conv_bn_params(8, 8, 3), "p_r": _relu_conv_bn_params(8, 8, 1)}
    assert count == {"p.q": 8 * 8 * 9 + 16, "p_r": 8 * 8 + 16}
    assert set(body.ops) == {"p_q", "p_r"}


def test_node_ids_that_torch_reserves_are_refused_before_compiling():
    cell = Cell("reserved")
    h0, _ = cell.inputs()
    cell.set_output([cell.op("conv_1x1", h0, node_id="to")])
    with pytest.raises(CellError, match="node 'to'.*attribute of torch.nn.ModuleDict"):
        cell.validate()
