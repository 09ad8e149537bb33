"""Supernet ranking judged by a table (issue 26): rank agreement figures against hand-computed
values, distinct random cells, and a trained run's supernet loaded back from its folder."""
import json

import numpy as np
import pytest
import torch

from nasforge.oneshot import SupernetEvaluator
from nasforge.oneshot.ranking import (distinct_random_archs, load_trained_supernet,
                                      ranking_agreement, top_indices)
from nasforge.oneshot.run import run_oneshot
from nasforge.search.config import SearchConfig
from nasforge.tables import hp12_columns, load_table
from nasforge.train import get_recipe, register_recipe

RECIPE = register_recipe(get_recipe("oneshot-nb201-smoke").replace(
    name="oneshot-nb201-ranking-test", train_subset=32, batch_size=32, val_size=32,
    eval_batch_size=32, epochs=1, model_overrides=(("C", 4), ("N", 1))))


def test_agreement_of_identical_and_of_hand_ranked_scores():
    same = ranking_agreement([0.1, 0.5, 0.3, 0.9, 0.7], [1.0, 5.0, 3.0, 9.0, 7.0], top=2)
    assert same["kendall_tau"] == pytest.approx(1.0) and same["spearman_rho"] == \
        pytest.approx(1.0) and same["top_overlap"] == 2
    # truths swap the 2nd/3rd and the 4th/5th: 2 of 10 pairs discordant -> tau (8 - 2) / 10;
    # rank differences 0,1,1,1,1 -> rho 1 - 6 * 4 / (5 * 24)
    scores, truths = [1, 2, 3, 4, 5], [1, 3, 2, 5, 4]
    r = ranking_agreement(scores, truths, top=3)
    assert r["kendall_tau"] == pytest.approx(0.6) and r["spearman_rho"] == pytest.approx(0.8)
    # top 3 by scores: indices {2, 3, 4}; by truths: {3, 4, 1} -> 2 shared
    assert r["top_overlap"] == 2 and r["cells"] == 5
    assert ranking_agreement(scores, truths, top=1)["top_overlap"] == 0  # 4 vs 3
    assert ranking_agreement(scores, truths, top=2)["top_overlap"] == 2
    assert ranking_agreement(scores, truths, top=50)["top"] == 5
    assert top_indices([0.5, 0.9, 0.9, 0.1], 2) == {1, 2}
    with pytest.raises(ValueError):
        ranking_agreement([1, 2], [1, 2, 3])


class ScriptedSpace:
    """A space of 4 architectures whose draws are a fixed script (repeats included)."""

    def __init__(self, script):
        self.script = iter(script)

    def decisions(self):
        return [2, 2]

    def sample(self, rng):
        return next(self.script)

    def encode(self, arch):
        return list(arch)


def test_random_cells_are_distinct_in_draw_order():
    a, b, c, d = (0, 0), (0, 1), (1, 0), (1, 1)
    space = ScriptedSpace([a, b, a, c, b, b, d])
    assert distinct_random_archs(space, 4, np.random.default_rng(0)) == [a, b, c, d]
    with pytest.raises(ValueError):
        distinct_random_archs(ScriptedSpace([a]), 5, np.random.default_rng(0))


def test_a_trained_run_loads_back_and_ranks_cells(tmp_path, one_thread):
    config = SearchConfig(space="nas-bench-201", searcher="rsps", recipe=RECIPE.name,
                          data="synthetic", val_size=32, seed=0,
                          searcher_options={"val_batch_size": 16, "candidates": 2})
    run_oneshot(config, tmp_path / "run")
    trained = load_trained_supernet(tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    loaded = trained.model.state_dict()
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[k].cpu(), saved[k]) for k in saved)
    assert len(trained.data.val) == json.loads(
        (tmp_path / "run" / "config.json").read_text())["data"]["val"]
    archs = distinct_random_archs(trained.space, 5, np.random.default_rng(0))
    assert len({tuple(trained.space.encode(a)) for a in archs}) == 5
    evaluator = SupernetEvaluator(trained.supernet, trained.data, recalibration_batches=1,
                                  batch_size=16, device="cpu",
                                  generator=torch.Generator().manual_seed(0))
    scores = [evaluator.evaluate(a)["val_acc"] for a in archs]
    assert all(0.0 <= s <= 1.0 for s in scores)
    table = load_table()
    truths = [table.lookup(a)[hp12_columns("cifar10")[0]] for a in archs]
    # a supernet that scored every cell as the table does would rank them exactly
    assert ranking_agreement(truths, truths, top=2)["kendall_tau"] == pytest.approx(1.0)
    r = ranking_agreement(scores, truths, top=2)
    assert -1.0 <= r["kendall_tau"] <= 1.0 and r["cells"] == 5
