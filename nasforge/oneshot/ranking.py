"""How well a trained supernet ranks architectures, judged against known accuracies (a
published table such as NAS-Bench-201's, or stand-alone training).

* ``load_trained_supernet(run_dir)``: the supernet of a one-shot run folder, rebuilt by the
  run's own code (``run.prepare``/``run.build``: its space, macro, data split and seed) with the
  weights of its ``checkpoint.pt`` (a plain-data checkpoint, no pickle), and the run's data;
* ``distinct_random_archs(space, count, rng)``: ``count`` uniformly random architectures,
  distinct by their token encoding (one per NAS-Bench-201 cell string);
* ``ranking_agreement(scores, truths, top)``: Kendall tau and Spearman rho (``scipy.stats``)
  between two score lists, and how many of the ``top`` best by one are among the ``top`` best
  by the other.

``benchmarks/bench_oneshot_ranking.py --run`` scores random cells with a run's supernet
(``SupernetEvaluator``: each path after BN recalibration) and compares with the table.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

from nasforge.oneshot.methods import OneShotModel
from nasforge.oneshot.run import FORMAT, build, prepare
from nasforge.search.runner import open_run
from nasforge.train import CHECKPOINT_NAME, load_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedSupernet:
    """A one-shot run's trained supernet (``model.supernet``) with what built it."""

    model: OneShotModel  # the run's model (supernet + architecture state), trained weights
    space: object  # the searched space (search_spaces)
    data: object  # the run's DataSplits (split="search": its validation split)
    config: object  # the run's SearchConfig
    epoch: int  # the checkpoint's epoch (the last one trained)

    @property
    def supernet(self):
        return self.model.supernet


def load_trained_supernet(run_dir, data: str | None = None) -> TrainedSupernet:
    """The trained supernet of the one-shot run folder ``run_dir`` (read only), rebuilt as the
    run built it and loaded from its checkpoint. ``data`` replaces the data path the run
    saved (another copy of the same data set: the run's validation split is drawn from it
    with the run's seed and size)."""
    run, config, recipe = open_run(None, Path(run_dir), True, FORMAT, "one-shot search")
    if data is not None:
        config = replace(config, data=str(data))
    method_cfg, space, splits, macro = prepare(config, recipe)
    epochs = config.epochs or recipe.schedule.epochs
    model, _ = build(config, recipe, method_cfg, space, splits, macro, epochs)
    state = load_checkpoint(run.path / CHECKPOINT_NAME)
    model.load_state_dict(state["model"])
    log.info("loaded %s: %s supernet after epoch %d", run.path, config.searcher, state["epoch"])
    return TrainedSupernet(model, space, splits, config, int(state["epoch"]))


def distinct_random_archs(space, count: int, rng: np.random.Generator) -> list:
    """``count`` architectures drawn uniformly by ``space.sample(rng)``, a repeat (same
    tokens) drawn again; ValueError if the space has fewer than ``count``."""
    size = int(np.prod([float(n) for n in space.decisions()]))
    if count > size:
        raise ValueError(f"count is {count}, the space has {size} architectures")
    archs, seen = [], set()
    while len(archs) < count:
        arch = space.sample(rng)
        key = tuple(int(t) for t in space.encode(arch))
        if key not in seen:
            seen.add(key)
            archs.append(arch)
    return archs


def top_indices(values: Sequence[float], top: int) -> set[int]:
    """Indices of the ``top`` largest values (a tie broken by the lower index)."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return set(order[:top])


def ranking_agreement(scores: Sequence[float], truths: Sequence[float], top: int = 10) -> dict:
    """How ``scores`` (e.g. the supernet's accuracies) rank what ``truths`` (the table's)
    rank: ``kendall_tau`` (tau-b) and ``spearman_rho`` with their p-values, and
    ``top_overlap``: how many of the ``top`` best by ``scores`` are among the ``top`` best by
    ``truths`` (``top`` of them: the same set)."""
    if len(scores) != len(truths) or len(scores) < 2:
        raise ValueError(f"need two equally long lists of at least 2 values, got "
                         f"{len(scores)} and {len(truths)}")
    top = min(top, len(scores))
    tau, rho = stats.kendalltau(scores, truths), stats.spearmanr(scores, truths)
    return {"cells": len(scores), "kendall_tau": float(tau.statistic),
            "kendall_p": float(tau.pvalue), "spearman_rho": float(rho.statistic),
            "spearman_p": float(rho.pvalue), "top": top,
            "top_overlap": len(top_indices(scores, top) & top_indices(truths, top))}
