"""The DARTS space in the DSL: its ops against DARTS' definitions, the genotype text, the
space's decisions and mutation, DARTS' macro, and DARTS-V2 as a member with DARTS' published
parameter count."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.api import resolve
from nasforge.cli import main
from nasforge.compiler import Network, schedule, set_relu_sharing
from nasforge.compiler.cell_module import CompiledGraph, NasNetCell
from nasforge.dsl import cell_from_blocks
from nasforge.dsl.cell import module_key
from nasforge.errors import NasforgeError
from nasforge.flops import count_params
from nasforge.ops import create_op
from nasforge.search_spaces import get_space
from nasforge.search_spaces.darts import (DartsGenotypeError, DartsSpace, format_genotype,
                                          genotype_pair, parse_genotype)
from nasforge.zoo import SETTINGS, get_entry

# DARTS_V2 as quark0/darts genotypes.py prints it (text typed from the repository)
DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
# DARTS' train.py log for DARTS_V2 at 36 channels, 20 layers: "param size = 3.349342MB"
# (utils.count_parameters_in_MB, which leaves out the auxiliary head)
DARTS_V2_PARAMS = 3_349_342
SPACE = DartsSpace()


# ------------------------------------------------------------------------------------ ops
def _copy(dst: nn.Module, src: nn.Module):
    dst.load_state_dict(src.state_dict())
    return dst


def test_pools_and_skip_are_darts_own_at_stride_2():
    x = torch.randn(2, 8, 8, 8)
    assert torch.equal(create_op("darts_max_pool_3x3", 8, 8, 2)(x), F.max_pool2d(x, 3, 2, 1))
    assert torch.allclose(create_op("darts_avg_pool_3x3", 8, 8, 2)(x),
                          F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))
    assert isinstance(create_op("darts_skip_connect", 8, 8, 1), nn.Identity)
    skip = create_op("darts_skip_connect", 8, 8, 2).eval()
    assert count_params(skip) == 2 * 8 * 4 + 2 * 8  # two 1x1 convs to C/2, BN
    # DARTS' FactorizedReduce: ReLU, conv_1(x) and conv_2(x[:, :, 1:, 1:]) at stride 2, BN
    convs = [m for m in skip.modules() if isinstance(m, nn.Conv2d)]
    bn = next(m for m in skip.modules() if isinstance(m, nn.BatchNorm2d))
    r = torch.relu(x)
    expected = bn(torch.cat([F.conv2d(r, convs[0].weight, stride=2),
                             F.conv2d(r[:, :, 1:, 1:], convs[1].weight, stride=2)], 1))
    assert torch.allclose(skip(x), expected, atol=1e-6)


@pytest.mark.parametrize("name,kernel,repeats,dilation", [
    ("darts_sep_conv_3x3", 3, 2, 1), ("darts_sep_conv_5x5", 5, 2, 1),
    ("darts_dil_conv_3x3", 3, 1, 2), ("darts_dil_conv_5x5", 5, 1, 2)])
def test_convs_are_darts_sepconv_and_dilconv(name, kernel, repeats, dilation):
    op = create_op(name, 8, 8, 2)
    kinds = [type(m).__name__ for m in op]
    assert kinds == ["ReLU", "Conv2d", "Conv2d", "BatchNorm2d"] * repeats
    depthwise = [m for m in op if isinstance(m, nn.Conv2d) and m.groups == 8]
    assert [(m.kernel_size, m.stride, m.padding, m.dilation) for m in depthwise] == [
        ((kernel, kernel), (2, 2) if i == 0 else (1, 1),
         (dilation * (kernel - 1) // 2,) * 2, (dilation, dilation)) for i in range(repeats)]
    # C = 8: per repetition k*k*C depthwise + C*C pointwise + 2C BN
    assert count_params(op) == repeats * (kernel * kernel * 8 + 64 + 16)
    assert op(torch.randn(1, 8, 8, 8)).shape == (1, 8, 4, 4)


def test_drop_path_spares_the_identity_skip_only():
    pair = genotype_pair(parse_genotype(DARTS_V2_TEXT))
    graph = CompiledGraph(pair.normal, 8, [8, 8], drop_path_keep_prob=0.5)
    dropped = {n: extra for n, kind, _, extra in graph._plan if kind == "op"}
    ops = {n: pair.normal.graph.nodes[n]["op"] for n in dropped}
    assert {n for n, d in dropped.items() if not d} == \
        {n for n, op in ops.items() if op == "darts_skip_connect"} and len(dropped) == 8


# ------------------------------------------------------------------------------- genotype
def test_genotype_text_round_trip_and_edge_order():
    g = parse_genotype(DARTS_V2_TEXT)
    assert parse_genotype(format_genotype(g)) == g
    assert "normal_concat=range(2, 6)" in format_genotype(g)
    # node 3 of the normal cell, written (sep 1), (skip 0) by DARTS, is kept ordered by input
    assert g.normal[2:4] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1))
    assert g.normal[4:6] == (("skip_connect", 0), ("sep_conv_3x3", 1))
    assert parse_genotype(DARTS_V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)")) == g


@pytest.mark.parametrize("change,match", [
    (("'sep_conv_3x3', 0", "'conv_9x9', 0"), "normal: node 2: unknown op 'conv_9x9'"),
    (("('dil_conv_3x3', 2)], normal", "('dil_conv_3x3', 5)], normal"),
     "normal: node 5: input 5 out of range"),
    (("('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip", "('max_pool_3x3', 1), "
      "('max_pool_3x3', 1), ('skip"), "reduce: node 2 reads input 1 twice"),
    (("('skip_connect', 0), ('dil_conv_3x3', 2)]", "('skip_connect', 0)]"),
     "normal: expected 8 .op, input. pairs .4 nodes x 2., got 7"),
    (("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4]"), "normal_concat must be"),
    (("reduce=[", "reduce=__import__('os').system('true') or ["), "not a literal list"),
    (("Genotype(", "Genotype(("), "malformed DARTS genotype"),
    (("Genotype(", "print("), "expected Genotype"),
    (("Genotype(", "Genotype(\0"), "malformed DARTS genotype"),
    (("Genotype(", "Genotype(" + "(" * 300), "malformed DARTS genotype"),
])
def test_bad_genotype_names_the_problem(change, match):
    with pytest.raises(DartsGenotypeError, match=match) as e:
        parse_genotype(DARTS_V2_TEXT.replace(*change))
    assert isinstance(e.value, NasforgeError) and "\n" not in str(e.value)


def test_genotype_on_the_command_line(capsys):
    assert main(["info", DARTS_V2_TEXT, "--setting", "nb301", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["setting"] == "nb301" and out["N"] == 2 and out["filters"] == 32
    assert out["params"] == _params(get_entry("darts_v2").build_pair(), "nb301")
    assert main(["info", DARTS_V2_TEXT.replace("dil_conv_3x3", "dil_conv_7x7")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown op 'dil_conv_7x7'" in err[0]


# ---------------------------------------------------------------------------------- space
def test_space_is_registered_with_nas_bench_301s_decisions():
    space = get_space("darts")
    # per node: a pair of distinct earlier states (C(2,2), C(3,2), C(4,2), C(5,2)), two ops
    per_cell = [1, 7, 7, 3, 7, 7, 6, 7, 7, 10, 7, 7]
    assert space.decisions() == per_cell * 2
    assert space.size() == (1 * 3 * 6 * 10 * 7 ** 8) ** 2  # ~1.1e18, NAS-Bench-301's 10^18


def test_samples_round_trip_and_mutation_changes_one_decision():
    rng = np.random.default_rng(0)
    for _ in range(300):
        arch = SPACE.sample(rng)
        tokens = SPACE.encode(arch)
        assert SPACE.decode(tokens) == arch
        for edges in arch.cells():  # distinct inputs in range, ordered
            for k in range(4):
                (_, a), (_, b) = edges[2 * k:2 * k + 2]
                assert 0 <= a < b < k + 2
        child = SPACE.mutate(arch, rng)
        changed = [i for i, (s, t) in enumerate(zip(tokens, SPACE.encode(child))) if s != t]
        assert len(changed) == 1 and changed[0] % 12 != 0  # node 2's single pair never moves
    assert SPACE.sample(np.random.default_rng(3)) == SPACE.sample(np.random.default_rng(3))
    with pytest.raises(ValueError, match="decision 0 is 1, out of range 0..0"):
        SPACE.decode([1] + [0] * 23)


def test_a_sample_compiles_and_trains_a_step():
    arch = SPACE.sample(np.random.default_rng(1))
    pair = SPACE.to_graph(arch).validate()
    model, config = resolve(pair, "nb301", N=1, filters=4, input_size=8, aux_head=True)
    net = Network(model, config)
    net.train()
    logits, aux = net(torch.randn(2, 3, 8, 8))
    (F.cross_entropy(logits, torch.tensor([0, 1])) + F.cross_entropy(aux, torch.tensor([0, 1]))
     ).backward()
    assert all(p.grad is not None for p in net.parameters())


# ---------------------------------------------------------------------------------- macro
def test_darts_macro_is_network_cifar():
    pair = get_entry("darts_v2").build_pair()
    with torch.device("meta"):
        net = Network(pair, replace(SETTINGS["darts"], aux_head=True))
    slots = net.schedule.slots
    layers = 20  # DARTS: reductions at layers // 3 and 2 * layers // 3, doubling C
    assert len(slots) == layers
    assert [i for i, s in enumerate(slots) if s.kind == "reduction"] == [layers // 3,
                                                                        2 * layers // 3]
    assert [s.filters for s in slots] == [36] * 6 + [72] * 7 + [144] * 7
    assert net.stem[0].out_channels == 108  # stem: 3x3 conv to 3C, BN
    assert slots[0].cur == slots[0].prev == 0  # the first cell reads the stem twice
    pre0 = [type(c.pre1).__name__ for c in net.cells]  # DARTS' preprocess0 (c_{k-2})
    assert pre0 == ["ReLUConvBN"] * 7 + ["Sequential"] + ["ReLUConvBN"] * 6 + \
        ["Sequential"] + ["ReLUConvBN"] * 5  # ReLU -> FactorizedReduce after a reduction
    assert net.schedule.aux_after == 2 * layers // 3  # the aux head reads the reduction cell
    assert count_params(net) - count_params(net.aux_head) == DARTS_V2_PARAMS
    # DARTS' AuxiliaryHeadCIFAR on 576 channels at 8x8: 1x1 conv 128 + BN, 2x2 conv 768 + BN,
    # linear to 10
    assert count_params(net.aux_head) == 576 * 128 + 256 + 128 * 768 * 4 + 1536 + 7690
    assert not net.macro.relu_before_pool  # DARTS pools the last cell's output directly
    nb301 = schedule(SETTINGS["nb301"])  # NAS-Bench-301: 8 cells at C = 32
    assert [(s.kind, s.filters) for s in nb301.slots] == [("normal", 32)] * 2 + [
        ("reduction", 64)] + [("normal", 64)] * 2 + [("reduction", 128)] + [("normal", 128)] * 2


# ------------------------------------------------------------------------------- darts_v2
def _params(pair, setting: str) -> int:
    with torch.device("meta"):
        return count_params(Network(*resolve(pair, setting)))


def test_darts_v2_is_a_member_of_the_space():
    zoo_pair = get_entry("darts_v2").build_pair()
    arch = parse_genotype(DARTS_V2_TEXT)
    member = SPACE.to_graph(SPACE.decode(SPACE.encode(arch)), name="darts_v2")
    assert member.canonical_hash() == zoo_pair.canonical_hash()
    # the same cells written as blocks in nasforge's state order (0 = h_i = DARTS' 1)
    swap = [1, 0, 2, 3, 4, 5]
    blocks = {"normal": ([0, 1, 0, 1, 1, 0, 0, 2], "sep3 sep3 sep3 sep3 sep3 skip skip dil3"),
              "reduction": ([0, 1, 2, 1, 0, 2, 2, 1], "max max skip max max skip skip max")}
    names = {"sep3": "darts_sep_conv_3x3", "skip": "darts_skip_connect", "max":
             "darts_max_pool_3x3", "dil3": "darts_dil_conv_3x3"}
    for kind, (idx, ops) in blocks.items():
        cell = cell_from_blocks(kind, [names[o] for o in ops.split()], [swap[i] for i in idx],
                                output=[2, 3, 4, 5], reduction=kind == "reduction")
        assert cell.canonical_hash() == getattr(member, kind).canonical_hash()
    assert get_entry("darts_v2").default_setting == "darts"
    assert _params(member, "darts") == _params("darts_v2", "darts") == DARTS_V2_PARAMS


def test_one_shot_search_covers_the_space_with_darts_recipes(tmp_path, capsys):
    # the space has a supernet (tests/test_oneshot_darts.py searches it end to end); a recipe
    # of NASNet's network is refused in one line that names a darts-space recipe
    code = main(["search", "--searcher", "darts", "--space", "darts", "--recipe", "smoke",
                 "--data", "synthetic", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "oneshot-darts-smoke" in err[0], err
    assert "no supernet" not in err[0]


def test_latency_tables_refuse_the_space_in_one_line(tmp_path, capsys):
    code = main(["latency", "--build-table", "--space", "darts", "--setting", "darts",
                 "--out", str(tmp_path / "t.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not 'darts'" in err[0], err


@pytest.mark.parametrize("kind", ["normal", "reduction"])
def test_a_compiled_cell_computes_darts_cell_forward(kind):
    """DARTS' Cell.forward written out: s0 = preprocess0(c_{k-2}), s1 = preprocess1(c_{k-1});
    node j = op(states[i]) + op(states[i']) in the genotype's order; cat(nodes 2..5)."""
    g = parse_genotype(DARTS_V2_TEXT)
    pair = genotype_pair(g)
    torch.manual_seed(0)
    # c_{k-1} at 8 channels; c_{k-2} at twice its resolution in a reduction's successor
    cell = NasNetCell(getattr(pair, kind), 4, 8, 6, prev_is_larger=False,
                      project_prev=True).eval()
    c_prev, c_prev_prev = torch.randn(2, 8, 8, 8), torch.randn(2, 6, 8, 8)
    states = [cell.pre1(c_prev_prev), cell.pre0(c_prev)]  # DARTS' s0, s1
    edges = g.normal if kind == "normal" else g.reduce
    for k in range(4):
        terms = [cell.body.ops[module_key(f"b{k}_{side}")](states[i])
                 for side, (_, i) in zip("ab", edges[2 * k:2 * k + 2])]
        states.append(terms[0] + terms[1])
    assert torch.allclose(cell(c_prev, c_prev_prev), torch.cat(states[2:], 1), atol=1e-6)


def test_shared_relus_change_nothing_under_darts_macro():
    """Training mode with shared ReLUs (the default) and without: the same logits, so the
    shared path reads the last cell's output without a ReLU as DARTS' pool does."""
    pair = SPACE.to_graph(SPACE.sample(np.random.default_rng(2)))
    torch.manual_seed(0)
    net = Network(*resolve(pair, "nb301", N=1, filters=4, input_size=8,
                           drop_path_keep_prob=1.0)).train()
    x = torch.randn(2, 3, 8, 8)
    shared = net(x)
    unshared = set_relu_sharing(net, False)(x)
    assert torch.allclose(shared, unshared, atol=1e-6)
    assert (net.forward_features(x)[0] < 0).any()  # no ReLU before the pool
