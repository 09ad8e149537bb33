"""Zero-cost proxies (nasforge.proxies): every registered proxy against an independent
expectation (closed forms and numpy re-derivations on a 2-layer network, invariances, the
NASWOT kernel of known codes), the errors of a proxy that cannot apply, the CLI, and the
prescreen (controllers.prescreen): a screened candidate is never trained."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.api import compile_architecture, resolve
from nasforge.cli import main
from nasforge.compiler import ChainNetwork, set_relu_sharing
from nasforge.controllers import Result, get_searcher
from nasforge.controllers.bench_table import MemoHashSpace, TableTask, run_table_search
from nasforge.controllers.prescreen import Prescreen
from nasforge.data import make_splits
from nasforge.proxies import PROXIES, ProxyError, data_batch, score, shape_batch
from nasforge.proxies.prescreen import ProxyScorer, ScoreCache, nb201_scorer, parse_prescreen
from nasforge.search_spaces.nas_bench_201 import format_cell, network, parse_cell
from nasforge.tables import load_table
from nasforge.trials import Status

CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"


def two_layer(seed: int = 0) -> nn.Sequential:
    """Flatten -> Linear(4, 3) -> ReLU -> Linear(3, 2), no biases: every proxy by hand."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.ReLU(),
                         nn.Linear(3, 2, bias=False))


def batch_of(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 2, 2, generator=g), torch.randint(0, 2, (n,), generator=g)


def numpy_grads(model, batch):
    """Cross-entropy gradients of the 2-layer network, derived by hand in numpy (float64)."""
    w1 = model[1].weight.detach().double().numpy()
    w2 = model[3].weight.detach().double().numpy()
    x = batch[0].double().reshape(len(batch[0]), -1).numpy()
    y = batch[1].numpy()
    a1 = x @ w1.T
    h = np.maximum(a1, 0)
    z = h @ w2.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = (p - np.eye(2)[y]) / len(x)
    dw2 = dz.T @ h
    da1 = (dz @ w2) * (a1 > 0)
    dw1 = da1.T @ x
    return dict(w1=w1, w2=w2, x=x, a1=a1, z=z, dz=dz, da1=da1, dw1=dw1, dw2=dw2)


def tiny_nb201():
    """NAS-Bench-201's macro at C=4, N=1 on 8x8 images: every op, every proxy, fast."""
    torch.manual_seed(0)
    return ChainNetwork(network(CELL, C=4, N=1))


# ------------------------------------------------------------ every proxy, every network
@pytest.mark.parametrize("name", list(PROXIES))
def test_every_proxy_is_finite_deterministic_and_leaves_the_model(name):
    model = tiny_nb201()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = batch_of(4)
    batch = (torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2)), batch[1])
    a, b = score(name, model, batch, seed=3), score(name, model, batch, seed=3)
    assert math.isfinite(a) and a == b
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------- independent expectations
def test_grad_norm_snip_fisher_match_a_numpy_derivation():
    model, batch = two_layer(), batch_of()
    g = numpy_grads(model, batch)
    assert score("grad_norm", model, batch) == pytest.approx(
        np.linalg.norm(g["dw1"]) + np.linalg.norm(g["dw2"]), rel=1e-5)
    assert score("snip", model, batch) == pytest.approx(
        np.abs(g["w1"] * g["dw1"]).sum() + np.abs(g["w2"] * g["dw2"]).sum(), rel=1e-5)
    # per output unit: 0.5 * mean_n (a * dL/da)^2, times the unit's fan-in (4, then 3)
    fisher = 0.5 * ((g["a1"] * g["da1"]) ** 2).mean(0).sum() * 4 + \
        0.5 * ((g["z"] * g["dz"]) ** 2).mean(0).sum() * 3
    assert score("fisher", model, batch) == pytest.approx(fisher, rel=1e-4)


def test_synflow_has_its_closed_form_and_ignores_the_data():
    model = two_layer()
    w1, w2 = model[1].weight.detach().double().abs(), model[3].weight.detach().double().abs()
    # R = 1^T |W2| |W1| 1 on an all-ones input; each layer's sum |W * dR/dW| is R
    r = float(torch.ones(2, dtype=torch.float64) @ w2 @ w1 @ torch.ones(4, dtype=torch.float64))
    assert score("synflow", model, batch_of(seed=1)) == pytest.approx(math.log(2 * r), rel=1e-12)
    assert score("synflow", model, batch_of(seed=1)) == score("synflow", model, batch_of(seed=9))


def test_grasp_matches_a_hessian_computed_another_way():
    model, batch = two_layer(), batch_of()
    w1, w2 = model[1].weight.detach(), model[3].weight.detach()
    x = batch[0].reshape(len(batch[0]), -1)

    def loss(flat):
        a, b = flat[:12].reshape(3, 4), flat[12:].reshape(2, 3)
        return nn.functional.cross_entropy(torch.relu(x @ a.T) @ b.T, batch[1])

    theta = torch.cat([w1.reshape(-1), w2.reshape(-1)])
    grad = torch.autograd.functional.jacobian(loss, theta)
    hessian = torch.autograd.functional.hessian(loss, theta)
    expected = float(-(theta * (hessian @ grad)).sum())
    assert score("grasp", model, batch) == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_nwot_is_the_log_det_of_the_hamming_kernel():
    relu_only = nn.Sequential(nn.Flatten(), nn.ReLU())
    x = torch.tensor([[1., 1., -1., -1.], [1., -1., 1., -1.]]).reshape(2, 1, 2, 2)
    # codes 1100 and 1010 agree on 2 of 4 units: K = [[4, 2], [2, 4]], det 12
    assert score("nwot", relu_only, (x, torch.zeros(2, dtype=torch.long))) == \
        pytest.approx(math.log(12))
    same = x[:1].repeat(3, 1, 1, 1)  # identical images: identical codes, a singular kernel
    assert score("nwot", relu_only, (same, torch.zeros(3, dtype=torch.long))) == -math.inf


def test_jacob_cov_of_a_linear_network_has_its_closed_form():
    linear = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    n, k = 5, 1e-5
    # d sum(Wx + b)/dx = 1^T W for every image: correlations all 1, eigenvalues n, 0, ..., 0
    expected = -(math.log(n + k) + 1 / (n + k) + (n - 1) * (math.log(k) + 1 / k))
    assert score("jacob_cov", linear, batch_of(n)) == pytest.approx(expected, rel=1e-6)


def test_params_and_flops_count_the_two_layers():
    model = two_layer()
    assert score("params", model, batch_of()) == 4 * 3 + 3 * 2
    assert score("flops", model, batch_of()) == 4 * 3 + 3 * 2  # multiply-adds of one image


def test_nwot_counts_every_op_relu_of_a_compiled_cell():
    """The compiler shares one ReLU between ops reading the same tensor in training; NASWOT
    counts each op's own units (as NAS-Bench-201's network has them): the kernel's diagonal
    is the number of ReLU units of the network with sharing off."""
    model = tiny_nb201()
    units = []
    hooks = [m.register_forward_hook(lambda m, a, o: units.append(a[0][0].numel()))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    set_relu_sharing(model, False)
    x = torch.randn(1, 3, 8, 8)
    model.train()(x)
    for h in hooks:
        h.remove()
    one = (x, torch.zeros(1, dtype=torch.long))
    assert score("nwot", set_relu_sharing(model, True), one) == pytest.approx(math.log(sum(units)))


# ----------------------------------------------------------------------------- errors
def test_a_proxy_that_cannot_apply_says_which_and_why():
    with pytest.raises(ProxyError, match="unknown proxy 'bogus'"):
        score("bogus", two_layer(), batch_of())
    with pytest.raises(ProxyError, match="'nwot'.*no nn.ReLU"):
        score("nwot", nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), batch_of())
    with pytest.raises(ProxyError, match="'snip'.*Conv2d and Linear.*has none"):
        score("snip", nn.Sequential(nn.Flatten(), nn.ReLU()), batch_of())
    with pytest.raises(ProxyError, match="'jacob_cov'.*at least 2 images, got 1"):
        score("jacob_cov", two_layer(), batch_of(1))
    with pytest.raises(ProxyError, match="'grad_norm'.*N x classes"):
        score("grad_norm", nn.Conv2d(1, 2, 1), batch_of())
    with pytest.raises(ProxyError, match="not PROXY:K"):
        parse_prescreen("synflow")
    with pytest.raises(ProxyError, match="unknown proxy 'nope'"):
        parse_prescreen("nope:3")
    assert parse_prescreen("synflow:10") == ("synflow", 10)


def test_data_batch_is_seeded_and_normalised():
    images = np.arange(40 * 3 * 2 * 2, dtype=np.uint8).reshape(40, 3, 2, 2)
    splits = make_splits((images, np.arange(40) % 4), None, ("a", "b", "c", "d"), val_size=8)
    x, y = data_batch(splits, 5, seed=1)
    x2, y2 = data_batch(splits, 5, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2) and x.shape == (5, 3, 2, 2)
    raw = splits.train.images.float() / 255
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1)
    std = torch.tensor(splits.std).view(1, 3, 1, 1)
    index = [int(i) for i in np.sort(np.random.default_rng(1).choice(32, 5, replace=False))]
    assert torch.allclose(x, (raw[index] - mean) / std)


# -------------------------------------------------------------------------------- CLI
def test_cli_scores_a_file_in_order_and_refuses_an_unknown_proxy(tmp_path, capsys):
    cells = [CELL, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
    listing = tmp_path / "cells.txt"
    listing.write_text(f"{cells[0]}\n# a comment\n\n{cells[1]}\n")
    assert main(["proxies", str(listing), "--data", "synthetic", "--proxies", "params,synflow",
                 "--json", "--quiet", "--cache-dir", str(tmp_path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["arch"] for line in lines] == cells
    assert lines[0]["params"] == sum(p.numel() for p in compile_architecture(
        *resolve(CELL)).parameters())
    assert lines[1]["synflow"] is None  # all-none cell: the output ignores the input
    assert main(["proxies", CELL, "--data", "synthetic", "--proxies", "synflow,bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown proxy 'bogus'" in err[0]


# ---------------------------------------------------------------------------- prescreen
def test_prescreen_trains_only_the_best_of_k_and_records_the_rest():
    table = load_table()
    task = TableTask(table, "cifar10")
    trained = []
    reward = task.reward

    class Recording(TableTask):
        def reward(self, cell):
            trained.append(format_cell(cell))
            return reward(cell)

    # a proxy with a known order: the number of conv ops of the cell
    def convs(proposals):
        return [float(sum(op.startswith("nor_conv") for op in p.arch.ops)) for p in proposals]

    searcher = Prescreen(get_searcher("evolution", MemoHashSpace(), seed=0, population_size=8,
                                      sample_size=3), convs, k=4, label="convs")
    run = run_table_search(searcher, Recording(table, "cifar10"), budget=12)
    assert len(trained) == 12 and len(run.pick_test) == 12
    screened = searcher.take_screened()
    assert run.screened == len(screened) == searcher.screened == 12 * 3
    screened_cells = {format_cell(p.arch) for p, _ in screened}
    for p, result in screened:
        assert result.status == Status.SCREENED and result.metrics == {"convs": convs([p])[0]}
    # each trained cell scored at least as high as the 3 candidates screened beside it
    for q, cell in enumerate(trained):
        beside = screened[3 * q: 3 * q + 3]
        assert all(r.metrics["convs"] <= cell.count("nor_conv") for _, r in beside)
    assert not (screened_cells - set(trained)) & set(trained)
    assert searcher.counts[Status.SCREENED] == 36


def test_score_cache_computes_each_cell_once_and_reloads_safely(tmp_path):
    path = tmp_path / "scores.jsonl"
    batch = shape_batch(8, batch_size=2)
    scorer = ProxyScorer("params", batch, lambda cell: nn.Linear(len(cell), 1),
                         key=lambda p: p.arch, context="toy", cache=ScoreCache(path))

    class P:
        def __init__(self, arch):
            self.arch = arch

    assert scorer([P("ab"), P("abc"), P("ab")]) == [3.0, 4.0, 3.0]
    assert (scorer.computed, scorer.hits) == (2, 1)
    path.write_text(path.read_text() + '{"proxy": "params", "trunc')  # a torn last line
    again = ProxyScorer("params", batch, lambda cell: 1 / 0, key=lambda p: p.arch,
                        context="toy", cache=ScoreCache(path))
    assert again([P("abc"), P("ab")]) == [4.0, 3.0] and again.computed == 0


def test_nb201_scorer_keys_by_cell_and_scores_the_nb201_network():
    scorer = nb201_scorer("params", shape_batch(32, batch_size=1))

    class P:
        def __init__(self, text):
            self.arch = parse_cell(text)

    value, = scorer([P(CELL)])
    assert value == sum(p.numel() for p in compile_architecture(*resolve(CELL)).parameters())
    assert Result(Status.SCREENED, {"synflow": 1.0}).status == Status.SCREENED


def test_bench_searchers_prescreen_adds_screened_rows(capsys):
    args = ["bench", "searchers", "--benchmark", "nas-bench-201", "--searchers", "evolution",
            "--seeds", "1", "--budget", "4", "--checkpoints", "2", "--quiet", "--json"]
    assert main(args + ["--prescreen", "params:2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert list(summary) == ["random", "evolution", "evolution+params:2"]
    row = summary["evolution+params:2"]
    assert row["screened"]["per_seed"] == [4] and row["settings"]["prescreen"] == "params:2"
    assert "screened" not in summary["evolution"]
    assert main(args + ["--prescreen", "snip:2"]) == 2  # snip reads images: --data needed
    assert "give --data" in capsys.readouterr().err
    assert main(["bench", "searchers", "--budget", "3", "--seeds", "1",
                 "--prescreen", "synflow:2"]) == 2
    assert "needs --benchmark nas-bench-201" in capsys.readouterr().err


def test_bench_searchers_prescreen_seed_does_not_follow_the_search_seeds(capsys):
    """Runs over other --first-seed ranges score the same networks (one shared cache)."""
    args = ["bench", "searchers", "--benchmark", "nas-bench-201", "--searchers", "evolution",
            "--seeds", "1", "--budget", "3", "--checkpoints", "2", "--quiet", "--json",
            "--prescreen", "params:2", "--first-seed", "3"]
    contexts = []
    for extra in ([], ["--prescreen-seed", "2"]):
        assert main(args + extra) == 0
        contexts.append(json.loads(capsys.readouterr().out)["evolution+params:2"]["settings"]
                        ["proxy_context"])
    assert contexts == ["nas-bench-201/cifar10|seed=0|batch=32",
                        "nas-bench-201/cifar10|seed=2|batch=32"]
