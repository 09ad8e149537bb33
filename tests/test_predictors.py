"""Performance predictors (``nasforge.predictors``): encodings against hand-computed columns,
every registered predictor learns a known function, errors, and the bananas searcher on
NAS-Bench-201 (resume, use of the predictor)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import torch

from nasforge.controllers import get_searcher, load_state, save_state
from nasforge.controllers.bench_table import MemoHashSpace, TableTask, run_table_search
from nasforge.errors import NasforgeError
from nasforge.predictors import PREDICTORS, PredictorError, encode, get_predictor
from nasforge.oneshot.evaluate import search_with_supernet
from nasforge.search_spaces import EnasMicroSpace, NasBench201Space, NasNetSpace
from nasforge.search_spaces.nas_bench_201 import parse_cell
from nasforge.search_spaces.nasnet import Block, NasNetArch
from nasforge.tables import load_table

NB201 = NasBench201Space()
# a cell with every op: edges (1,0) conv3x3, (2,0) skip, (2,1) none, (3,0) avg pool,
# (3,1) conv1x1, (3,2) conv3x3
CELL = parse_cell("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|"
                  "nor_conv_3x3~2|")


# ---------------------------------------------------------------------------- encodings
def test_nb201_onehot_is_one_op_per_edge():
    x = encode(NB201, [CELL], "onehot")[0]
    # ops in NB201_OPS order: none 0, skip 1, conv1x1 2, conv3x3 3, avg pool 4
    expected = np.zeros(30)
    expected[[0 * 5 + 3, 1 * 5 + 1, 2 * 5 + 0, 3 * 5 + 4, 4 * 5 + 2, 5 * 5 + 3]] = 1
    assert np.array_equal(x, expected)


def test_nb201_path_encoding_by_hand():
    x = encode(NB201, [CELL], "path")[0]
    assert x.shape == (155,)
    # 0->3: (avg) -> 4; 0->1->3: (conv3, conv1) -> 5 + 3 + 2*5 = 18;
    # 0->2->3: (skip, conv3) -> 5 + 1 + 3*5 = 21; 0->1->2->3: (conv3, none, conv3) ->
    # 30 + 3 + 0*5 + 3*25 = 108
    assert np.flatnonzero(x).tolist() == [4, 18, 21, 108]
    # all-none: the two 2-op paths coincide, as in BANANAS
    none = parse_cell("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert np.flatnonzero(encode(NB201, [none], "path")[0]).tolist() == [0, 5, 30]


def test_nasnet_path_encoding_by_hand():
    space = NasNetSpace(num_blocks=2, ops=("identity", "max_pool_3x3", "avg_pool_3x3"),
                        combines=("add",))
    # block 0: h_i -identity-, h_{i-1} -max-; block 1: block 0 -avg-, h_i -max-
    cell = (Block((0, 1), ("identity", "max_pool_3x3")), Block((2, 0), ("avg_pool_3x3",
                                                                       "max_pool_3x3")))
    x = encode(space, [NasNetArch(cell, cell)], "path")[0]
    per_input = 3 + 9 + 1
    assert x.shape == (4 * per_input,)
    # paths from h_i: (identity) 0, (identity, avg) 3 + 0 + 2*3 = 9, (max) 1;
    # from h_{i-1}: (max) 1, (max, avg) 3 + 1 + 2*3 = 10
    one_cell = [0, 1, 9, per_input + 1, per_input + 10]
    assert np.flatnonzero(x).tolist() == one_cell + [2 * per_input + c for c in one_cell]


def test_generic_onehot_any_space_and_unknown_encoding():
    space = NasNetSpace(num_blocks=2)
    arch = space.sample(np.random.default_rng(0))
    x = encode(space, [arch], "onehot")[0]
    assert x.shape == (sum(space.decisions()),) and x.sum() == len(space.decisions())
    with pytest.raises(PredictorError, match="no encoding 'adjacency'.*known: path, onehot"):
        encode(NB201, [CELL], "adjacency")


# ---------------------------------------------------------------------------- predictors
def synthetic(cells) -> np.ndarray:
    """A known score: each conv adds, a none edge into the output node costs, plus an
    interaction (conv3x3 on both edges of the 0->1->3 path)."""
    tokens = np.array([NB201.encode(c) for c in cells])
    convs = np.isin(tokens, (2, 3)).sum(1)
    dead = (tokens[:, [3, 4, 5]] == 0).sum(1)
    return convs - 1.5 * dead + 2.0 * ((tokens[:, 0] == 3) & (tokens[:, 4] == 3))


def data(n, seed):
    rng = np.random.default_rng(seed)
    cells = [NB201.sample(rng) for _ in range(n)]
    return cells, synthetic(cells) + rng.normal(0, 0.1, n)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_every_predictor_ranks_held_out_cells(name):
    train, y = data(60, 0)
    test, y_test = data(80, 1)
    p = get_predictor(name, seed=0)
    p.fit(encode(NB201, train, p.encoding), y)
    pred = p.predict(encode(NB201, test, p.encoding))
    assert pred.mean.shape == pred.std.shape == (80,)
    assert np.all(np.isfinite(pred.std)) and np.all(pred.std >= 0)
    rho = scipy.stats.spearmanr(pred.mean, y_test)[0]
    # a constant predictor has no rank correlation (nan); random ranks stay within +-0.25
    assert rho > 0.6, rho
    if name != "boosted_trees":  # the trees' quantile band may be 0 on a tiny leaf
        assert pred.std.mean() > 0


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_features_are_used_and_required(name):
    train, y = data(40, 2)
    test, y_test = data(60, 3)
    rng = np.random.default_rng(4)
    # one informative feature (the score itself, noisy) and one of pure noise, on a large scale
    feats = lambda y_: np.stack([1e3 * (y_ + rng.normal(0, 0.3, len(y_))),
                                 rng.normal(0, 1e-3, len(y_))], 1)
    p = get_predictor(name, seed=0)
    p.fit(encode(NB201, train, p.encoding), y, features=feats(y))
    x_test = encode(NB201, test, p.encoding)
    rho = scipy.stats.spearmanr(p.predict(x_test, features=feats(y_test)).mean, y_test)[0]
    assert rho > 0.75, rho
    with pytest.raises(PredictorError, match="fitted with 2 feature columns, got 0"):
        p.predict(x_test)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_predict_before_fit_is_one_line(name):
    p = get_predictor(name)
    with pytest.raises(PredictorError) as e:
        p.predict(encode(NB201, [CELL], p.encoding))
    assert isinstance(e.value, NasforgeError)
    assert "before it was fitted" in str(e.value) and "\n" not in str(e.value)


def test_mlp_ensemble_gradient_matches_autograd():
    """The hand-written backpropagation of the MLP ensemble against torch's autograd on the
    same loss (each network's mean absolute error, summed)."""
    p = get_predictor("mlp_ensemble", members=3, layers=4, width=7)
    params, _ = p._initial(11, torch.Generator().manual_seed(0))
    for b in params[1::2]:  # non-zero biases, so every term of the gradient is exercised
        b.copy_(torch.randn(b.shape) * 0.1)
    xb, yb = torch.randn(3, 9, 11), torch.randn(3, 9)
    grads = [torch.zeros_like(q) for q in params]
    p._gradient(params, grads, xb, yb)
    leaves = [q.clone().requires_grad_() for q in params]
    h = xb
    for k in range(0, len(leaves), 2):
        h = h @ leaves[k] + leaves[k + 1]
        h = torch.relu(h) if k < len(leaves) - 2 else h
    (h.squeeze(-1) - yb).abs().mean(dim=1).sum().backward()
    for mine, leaf in zip(grads, leaves):
        assert torch.allclose(mine, leaf.grad, atol=1e-6)


def test_same_seed_same_fit_and_bad_input():
    train, y = data(20, 5)
    x = encode(NB201, train, "path")
    a, b = (get_predictor("mlp_ensemble", seed=3, epochs=20).fit(x, y) for _ in range(2))
    assert np.array_equal(a.predict(x).mean, b.predict(x).mean)
    with pytest.raises(PredictorError, match="unknown predictor 'xgb'"):
        get_predictor("xgb")
    with pytest.raises(PredictorError, match="unknown key 'depth'"):
        get_predictor("boosted_trees", depth=3)
    with pytest.raises(PredictorError, match="at least 2"):
        get_predictor("gaussian_process").fit(x[:1], y[:1])
    with pytest.raises(PredictorError, match="width 155, got shape"):
        a.predict(x[:, :30])


# ------------------------------------------------------------------------------ bananas
FAST = {"initial": 6, "batch": 4, "candidates": 30, "epochs": 10}


def test_bananas_resumes_identically_on_the_table(tmp_path):
    task = TableTask(load_table(), "cifar10")
    space = MemoHashSpace("cifar10")
    a = get_searcher("bananas", space, seed=1, **FAST)
    run_table_search(a, task, 12)  # 6 random, then predicted ones: mid-queue
    assert a.inner.fits >= 1 and 0 < len(a.inner.queue) < FAST["batch"]
    save_state(a, tmp_path / "s.pt")
    b = load_state(get_searcher("bananas", space, seed=1, **FAST), tmp_path / "s.pt")
    c = get_searcher("bananas", space, seed=1, **FAST)
    c.load_state_dict(json.loads(json.dumps(a.state_dict())))
    runs = [run_table_search(s, task, 14) for s in (a, b, c)]
    assert runs[0].pick_cell == runs[1].pick_cell == runs[2].pick_cell
    assert [p.tokens for p in a.ask(3)] == [p.tokens for p in b.ask(3)]
    origins = [p.meta["origin"] for p in c.ask(3)]
    assert set(origins) == {"predicted"}


def test_bananas_follows_the_predictor():
    """With a perfect predictor's target (the table), the chosen proposals beat random
    proposals from the same parents: mean reward of predicted proposals > random ones'."""
    task = TableTask(load_table(), "cifar10")
    s = get_searcher("bananas", MemoHashSpace("cifar10"), seed=0, dedup=False, **FAST)
    rewards = {"random": [], "predicted": []}
    for _ in range(30):
        p, = s.ask(1)
        r = task.reward(p.arch)
        rewards[p.meta["origin"]].append(r.metrics["val_acc"])
        s.tell(p, r)
    assert len(rewards["random"]) == FAST["initial"]
    assert np.mean(rewards["predicted"]) > np.mean(rewards["random"]) + 0.05


def test_bananas_unknown_encoding():
    with pytest.raises(ValueError, match="encoding must be auto"):
        get_searcher("bananas", NB201, encoding="adjacency")


def test_bananas_in_spos_search_phase():
    """spos' search phase drives any registered searcher through ``search_with_supernet``;
    a stand-in evaluator scores cells by a known function of their decisions."""
    space = EnasMicroSpace()

    class Evaluator:
        def __init__(self):
            self.space = space

        def evaluate(self, arch):
            acc = float(np.mean(np.asarray(space.encode(arch)) == 0))
            return {"val_acc": acc, "val_loss": 1.0 - acc}

    searcher = get_searcher("bananas", space, seed=0, **FAST)
    pairs = search_with_supernet(searcher, Evaluator(), 16)
    assert len(pairs) >= 16 and searcher.inner.fits >= 2
    assert {p.meta["origin"] for p, _ in pairs} == {"random", "predicted"}
