"""One-shot search on the DARTS space (issue 26): its supernet's paths compute what the
stand-alone children compute, DARTS' derivation rule keeps two edges per node, and a search
runs end to end from the command line to a trainable derived cell pair."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from nasforge.cli import main
from nasforge.compiler import Network
from nasforge.dsl import CellPair
from nasforge.oneshot import ArchitectureParameters, DartsMacro, DartsSupernet
from nasforge.oneshot.darts_space import DartsLayout
from nasforge.search_spaces.darts import DartsGenotype, DartsSpace, genotype_pair
from nasforge.train import get_recipe, register_recipe
from nasforge.zoo import SETTINGS

SPACE = DartsSpace()
# 5 cells (3 normal, 2 reduction) of 2 channels, 8x8 images
NETWORK = replace(SETTINGS["darts"], N=1, filters=2, input_size=8, aux_head=False,
                  drop_path_keep_prob=1.0)
BN_SETTINGS = [(False, True), (True, True), (False, False)]  # (affine, running statistics)
# every op, inputs from both cell inputs and from earlier nodes
MIXED = DartsGenotype.make(
    [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 2), ("max_pool_3x3", 0),
     ("avg_pool_3x3", 1), ("sep_conv_5x5", 3), ("dil_conv_5x5", 4), ("skip_connect", 2)],
    [("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("avg_pool_3x3", 1),
     ("dil_conv_5x5", 0), ("sep_conv_5x5", 3), ("skip_connect", 0), ("dil_conv_3x3", 4)])


def randomized(supernet):
    """Weights and BN statistics far from their initial values (so a wrong copy shows)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t in list(supernet.parameters()) + [b for n, b in supernet.named_buffers()
                                                if n.endswith(("running_mean", "running_var"))]:
            t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
    return supernet


@pytest.mark.parametrize("affine,running", BN_SETTINGS)
def test_a_path_computes_what_its_stand_alone_child_computes(affine, running, one_thread):
    macro = DartsMacro(NETWORK, bn_affine=affine, bn_running_stats=running)
    supernet = randomized(DartsSupernet(SPACE, macro))
    fresh = DartsSupernet(SPACE, macro)
    x = torch.randn(2, 3, 8, 8)
    for arch in [MIXED, SPACE.sample(np.random.default_rng(0))]:
        # the child as the space defines it, built by the compiler: independent of the supernet
        child = Network(genotype_pair(arch), NETWORK)
        from_supernet = supernet.child(arch)  # inherited weights
        assert list(from_supernet.state_dict()) == list(child.state_dict())
        child.load_state_dict(from_supernet.state_dict())
        with torch.no_grad():
            supernet.train(), child.train()
            assert torch.allclose(supernet(x, arch=arch), child(x), atol=1e-5, rtol=0)
            if running:
                supernet.eval(), child.eval()
                assert torch.allclose(supernet(x, arch=arch), child(x), atol=1e-5, rtol=0)
            supernet.train()  # the check can fail: other weights, another function
            assert not torch.allclose(supernet(x, arch=arch), fresh.child(arch).train()(x),
                                      atol=1e-3)


def test_search_cells_take_the_macro_bn_and_hold_every_op_of_every_edge(one_thread):
    supernet = DartsSupernet(SPACE, DartsMacro(NETWORK))
    cells = [m for n, m in supernet.named_modules()
             if n.startswith("cells.") and isinstance(m, torch.nn.BatchNorm2d)]
    assert cells and all(not m.affine and m.track_running_stats for m in cells)
    assert all(m.affine for n, m in supernet.named_modules()
               if n.startswith("stem") and isinstance(m, torch.nn.BatchNorm2d))
    # 5 cells x (2 + 3 + 4 + 5 edges) x 7 ops
    assert sum(n.count(".") == 4 for n, _ in supernet.named_modules()
               if ".edges." in n) == 5 * 14 * 7


def test_a_one_hot_mixture_equals_the_path(one_thread):
    supernet = randomized(DartsSupernet(SPACE, DartsMacro(NETWORK))).eval()
    layout = DartsLayout(SPACE)
    assert layout.arch(layout.indices(MIXED)) == MIXED
    assert len(layout.slots) == 28 and layout.slots[0].candidates[0] == "none"
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(supernet(x, mix=layout.one_hot(MIXED)), supernet(x, arch=MIXED),
                              atol=1e-5, rtol=0)


def test_derive_keeps_each_nodes_two_strongest_edges_by_their_best_real_op():
    alphas = ArchitectureParameters(SPACE)
    candidates = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                  "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
    # normal node 3 (edges from 0, 1, 2): 'none' strongest on the edge from 0 (it does not
    # count: its best real op is weak), sep_conv_5x5 at 2.0 from 1, skip_connect at 1.0 from
    # 2; every other edge: dil_conv_3x3 at 0.5 from the cell inputs, 0.1 from nodes, so each
    # other node keeps its edges from 0 and 1
    logits = {("normal", 3, 0): {"none": 5.0, "avg_pool_3x3": 0.3},
              ("normal", 3, 1): {"sep_conv_5x5": 2.0},
              ("normal", 3, 2): {"skip_connect": 1.0}}
    edges = [(j, i) for j in range(2, 6) for i in range(j)]
    with torch.no_grad():
        for p in alphas.parameters():
            p.zero_()
        for s, (kind, (j, i)) in enumerate([(k, e) for k in ("normal", "reduce")
                                            for e in edges]):
            values = logits.get((kind, j, i), {"dil_conv_3x3": 0.5 if i < 2 else 0.1})
            for op, v in values.items():
                alphas.logits[s][candidates.index(op)] = v
    expected_cell = [("dil_conv_3x3", 0), ("dil_conv_3x3", 1),
                     ("sep_conv_5x5", 1), ("skip_connect", 2),
                     ("dil_conv_3x3", 0), ("dil_conv_3x3", 1),
                     ("dil_conv_3x3", 0), ("dil_conv_3x3", 1)]
    reduce = [("dil_conv_3x3", 0), ("dil_conv_3x3", 1)] * 4
    assert alphas.derive() == DartsGenotype.make(expected_cell, reduce)


DARTS_TEST_RECIPE = register_recipe(get_recipe("oneshot-darts-smoke").replace(
    name="oneshot-darts-test", train_subset=16, batch_size=16, val_size=16,
    eval_batch_size=16, epochs=1, search_candidates=2,
    model_overrides=(("N", 1), ("filters", 2))))


# spos in the default suite (about 10 s); darts (about 15 s: its memory estimate runs the
# whole mixture on the meta device) with -m slow
@pytest.mark.parametrize("method,options", [
    pytest.param("darts", {"val_batch_size": 16}, marks=pytest.mark.slow),
    ("spos", {"val_batch_size": 16, "derive_candidates": 2, "derive_batches": 1,
              "recalibration_batches": 1, "recalibration_batch_size": 16})])
def test_a_search_on_the_space_exports_a_trainable_darts_cell(method, options, tmp_path,
                                                              one_thread):
    run = tmp_path / "run"
    argv = ["search", "--space", "darts", "--searcher", method, "--recipe",
            DARTS_TEST_RECIPE.name, "--data", "synthetic", "--val-size", "16",
            "--runs-dir", str(tmp_path), "--name", "run"]
    for k, v in options.items():
        argv += ["--searcher-option", f"{k}={v}"]
    assert main(argv) == 0
    assert main(["export", "best_cell", "--run", str(run), "--format", "json"]) == 0
    pair = CellPair.from_dict(json.loads((run / "export" / "best_cell.json").read_text()))
    assert pair.network == {"macro": "darts"}
    # a DARTS cell pair: 8 ops per cell, each node reads two different earlier states
    assert sum(1 for n in pair.normal.to_dict()["nodes"] if n.get("op", "").startswith(
        "darts_")) == 8
    model = Network(pair, NETWORK)
    loss = model(torch.randn(4, 3, 8, 8)).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.classifier.parameters())


def test_gdas_is_refused_on_the_space_in_one_line(tmp_path, capsys):
    code = main(["search", "--space", "darts", "--searcher", "gdas", "--recipe",
                 DARTS_TEST_RECIPE.name, "--data", "synthetic", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "gdas" in err[0], err
