"""One-shot search on NAS-Bench-201's space (issue 26): its supernet computes what the
stand-alone child computes, its BN is the macro's choice, the methods work through the choice
layout, and a run records each epoch's derived cell as the table judges it."""
import bisect
import json

import numpy as np
import pytest
import torch

from nasforge.compiler.chain import ChainNetwork
from nasforge.oneshot import ArchitectureParameters, Nb201Macro, Nb201Supernet
from nasforge.oneshot.choices import collapse_shares, family_of
from nasforge.oneshot.methods import METHODS
from nasforge.oneshot.run import TRAJECTORY, run_oneshot
from nasforge.search.config import SearchConfig
from nasforge.search_spaces import NasBench201Space
from nasforge.search_spaces.nas_bench_201 import network, parse_cell
from nasforge.tables import hp12_columns, load_table
from nasforge.train import get_recipe, register_recipe

SPACE = NasBench201Space()
TINY = Nb201Macro(C=2, N=1, input_size=8)
BN_SETTINGS = [(False, True), (True, True), (False, False)]  # (affine, running statistics)
# a cell with every op, none included
MIXED = parse_cell("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|"
                   "nor_conv_3x3~2|")


def randomized(supernet):
    """Weights and BN statistics far from their initial values (so a wrong copy shows)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t in list(supernet.parameters()) + [b for n, b in supernet.named_buffers()
                                                if n.endswith(("running_mean", "running_var"))]:
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return supernet


@pytest.mark.parametrize("affine,running", BN_SETTINGS)
def test_a_path_computes_what_its_stand_alone_child_computes(affine, running, one_thread):
    macro = Nb201Macro(C=2, N=1, input_size=8, bn_affine=affine, bn_running_stats=running)
    supernet = randomized(Nb201Supernet(SPACE, macro))
    x = torch.randn(3, 3, 8, 8)
    fresh = Nb201Supernet(SPACE, macro)
    for arch in [MIXED, SPACE.sample(np.random.default_rng(0))]:
        # the child as the space defines it, at the supernet's size: independent of the supernet
        child = ChainNetwork(network(arch, "cifar10", C=2, N=1))
        from_supernet = supernet.child(arch)  # inherited weights
        assert [k for k in from_supernet.state_dict()] == [k for k in child.state_dict()]
        child.load_state_dict(from_supernet.state_dict())
        with torch.no_grad():
            supernet.train(), child.train()  # batch statistics: every BN setting
            assert torch.allclose(supernet(x, arch=arch), child(x), atol=1e-5, rtol=0)
            if running:  # running statistics: the child in eval mode too
                supernet.eval(), child.eval()
                assert torch.allclose(supernet(x, arch=arch), child(x), atol=1e-5, rtol=0)
            # the check can fail: another supernet's weights give another function
            supernet.train()
            assert not torch.allclose(supernet(x, arch=arch),
                                      fresh.child(arch).train()(x), atol=1e-3)


def test_search_cells_take_the_macro_bn_and_the_rest_is_the_child(one_thread):
    preset = Nb201Supernet(SPACE, TINY)
    cell_norms = [m for n, m in preset.named_modules()
                  if ".edges." in n and isinstance(m, torch.nn.BatchNorm2d)]
    assert cell_norms and all(not m.affine and m.track_running_stats for m in cell_norms)
    other = [m for n, m in preset.named_modules()
             if ".edges." not in n and isinstance(m, torch.nn.BatchNorm2d)]
    assert other and all(m.affine for m in other)  # stem, residual blocks, head: the child's
    stats_off = Nb201Supernet(SPACE, Nb201Macro(C=2, N=1, bn_running_stats=False))
    assert all(m.running_mean is None for n, m in stats_off.named_modules()
               if ".edges." in n and isinstance(m, torch.nn.BatchNorm2d))
    # 3 search cells (N=1 per stage), 6 edges, 5 ops each
    assert sum(".edges." in n and n.count(".") == 4 for n, _ in preset.named_modules()) == 90


def test_one_hot_mixture_and_gated_path_equal_the_path(one_thread):
    supernet = randomized(Nb201Supernet(SPACE, TINY)).eval()
    layout = family_of(SPACE).layout(SPACE)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        path = supernet(x, arch=MIXED)
        assert torch.allclose(supernet(x, mix=layout.one_hot(MIXED)), path, atol=1e-5, rtol=0)
    alphas = ArchitectureParameters(SPACE, torch.Generator().manual_seed(1))
    gumbel = torch.Generator().manual_seed(2)
    arch, gates = alphas.sample_hard(1.0, gumbel)
    while "none" in arch.ops:  # a none edge cuts the gradient of the edges feeding only it
        arch, gates = alphas.sample_hard(1.0, gumbel)
    out = supernet(x, arch=arch, gates=gates)
    assert torch.allclose(out, supernet(x, arch=arch), atol=1e-5, rtol=0)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in alphas.parameters())


def test_architecture_parameters_derive_the_argmax_op_of_every_edge():
    alphas = ArchitectureParameters(SPACE)
    assert [len(p) for p in alphas.parameters()] == [5] * 6
    wanted = ["skip_connect", "nor_conv_3x3", "none", "avg_pool_3x3", "nor_conv_1x1",
              "nor_conv_3x3"]
    order = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    with torch.no_grad():
        for p, op in zip(alphas.parameters(), wanted):
            p.zero_()
            p[order.index(op)] = 1.0
    assert str(alphas.derive()) == ("|skip_connect~0|+|nor_conv_3x3~0|none~1|+|avg_pool_3x3~0|"
                                    "nor_conv_1x1~1|nor_conv_3x3~2|")


def test_collapse_shares_count_skips_and_parameter_free_ops():
    assert collapse_shares(["skip_connect"] * 3 + ["none", "avg_pool_3x3", "nor_conv_1x1"]) \
        == {"skip_share": 0.5, "parameter_free_share": 5 / 6}


NB201_TEST_RECIPE = register_recipe(get_recipe("oneshot-nb201-smoke").replace(
    name="oneshot-nb201-test", train_subset=32, batch_size=32, val_size=32,
    eval_batch_size=32, epochs=1, model_overrides=(("C", 2), ("N", 1))))
FAST = {"enas": {"controller_steps": 1, "derive_samples": 2},
        "spos": {"candidates": 2, "derive_candidates": 2, "derive_batches": 1,
                 "recalibration_batches": 1, "recalibration_batch_size": 16},
        "rsps": {"candidates": 3}}


# the fastest in the default suite (2-4 s each on an idle machine); enas, spos with -m slow
@pytest.mark.parametrize("method", [m if m in ("darts", "gdas", "rsps")
                                    else pytest.param(m, marks=pytest.mark.slow)
                                    for m in sorted(METHODS)])
def test_every_method_searches_the_space_and_the_table_judges_each_epoch(method, tmp_path,
                                                                        one_thread):
    config = SearchConfig(space="nas-bench-201", searcher=method, recipe=NB201_TEST_RECIPE.name,
                          data="synthetic", val_size=32, seed=0,
                          searcher_options={"val_batch_size": 16, **FAST.get(method, {})})
    run_oneshot(config, tmp_path / "run")
    line, = [json.loads(t) for t in (tmp_path / "run" / TRAJECTORY).read_text().splitlines()]
    cell = parse_cell(line["cell_string"])
    assert line["tokens"] == SPACE.encode(cell)
    table = load_table()
    valid, test = hp12_columns("cifar10")
    row = table.lookup(cell)
    tests = sorted(table.column(test))
    assert line["table_val_acc"] == row[valid] and line["table_test_acc"] == row[test]
    assert line["table_percentile"] == pytest.approx(
        100 * bisect.bisect_left(tests, row[test]) / len(tests))
    assert line["skip_share"] == sum(op == "skip_connect" for op in cell.ops) / 6
    record = json.loads((tmp_path / "run" / "trials.jsonl").read_text().splitlines()[0])
    assert record["metrics"]["table_test_acc"] == row[test]


def test_the_table_percentile_of_the_best_and_an_all_skip_cell():
    from nasforge.tables.judge import table_judge

    judge = table_judge(SPACE)
    best = judge(parse_cell("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
                            "nor_conv_3x3~1|nor_conv_3x3~2|"))
    assert best["table_percentile"] > 99
    skips = judge(parse_cell("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|"
                             "skip_connect~1|skip_connect~2|"))
    assert skips["table_percentile"] < 5


def test_a_search_of_the_space_defaults_to_its_recipes():
    from nasforge.oneshot.methods import default_recipe
    from nasforge.train import get_recipe

    for method in ("enas", "darts", "gdas", "spos", "rsps"):
        name = default_recipe(method, "nas-bench-201", "search")
        assert name == f"{method}-nb201"
        recipe = get_recipe(name)
        assert dict(recipe.defaults.model_overrides)["bn_affine"] is False
        assert recipe.defaults.setting == "nb201"
    assert default_recipe("darts", "nasnet", "search") == "darts-search"
    assert default_recipe("evolution", "nas-bench-201", "search") == "search"


def test_the_auxiliary_skip_adds_a_skip_to_every_mixed_edge(one_thread):
    """DARTS-: with beta = 1, a one-hot mixture of all-`none` edges is the all-skip path."""
    supernet = randomized(Nb201Supernet(SPACE, TINY)).eval()
    layout = family_of(SPACE).layout(SPACE)
    nones, skips = (parse_cell("|{0}~0|+|{0}~0|{0}~1|+|{0}~0|{0}~1|{0}~2|".format(op))
                    for op in ("none", "skip_connect"))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(supernet(x, mix=layout.one_hot(nones), aux_skip=1.0),
                              supernet(x, arch=skips), atol=1e-5, rtol=0)


def test_the_auxiliary_skip_is_refused_where_the_supernet_has_none(tmp_path):
    from nasforge.oneshot.choices import SupernetError

    config = SearchConfig(space="nasnet", searcher="darts", recipe="oneshot-smoke",
                          data="synthetic", searcher_options={"aux_skip": 1.0})
    with pytest.raises(SupernetError, match="aux_skip"):
        run_oneshot(config, tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists()
