"""Searchers measured on a published table: NAS-Bench-201's 15,625 trained cells.

A searcher proposes cells of the ``nas-bench-201`` space one at a time (ask 1, tell 1, as
NAS-Bench-201's own search scripts run); the reward it is told is the table's 12-epoch
validation accuracy of its data set (``<dataset>_valid``, as a fraction). Its pick after ``q``
queries is ``Searcher.best()`` (the project's one ranking rule, ``trials.rank_key``), reported
by the table's 12-epoch TEST accuracy (``<dataset>_test``), which the searcher never saw.

Queries are unique architectures: the searcher runs inside the shared duplicate cache
(``DedupCache``), so a proposal isomorphic (by the space's canonical hash, which merges cells
made equal by ``none`` edges) to one already queried is answered from the cache, costs no
budget and is counted as a repeat. Only when a searcher proposes ``max_hits_per_ask``
duplicates in a row does the cache hand one out anyway; that re-query costs budget and is
counted as ``overflow``.

``mann_whitney_greater`` is the one-sided Mann-Whitney U test (normal approximation with the
tie and continuity corrections, as ``scipy.stats.mannwhitneyu(method="asymptotic")``):
implemented with numpy so that scipy stays a test-only dependency. The final picks of 100 seeds
share many cells, so ties are the rule and the exact (tie-free) distribution would not apply.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from nasforge.controllers.base import Result, Searcher
from nasforge.search_spaces.nas_bench_201 import (NasBench201Space, cell_graph,
                                                format_cell)
from nasforge.tables import Table, hp12_columns

TOP_FRACTIONS = (0.01, 0.001)  # "top 1%" and "top 0.1%" of the table by validation accuracy


class _Hashed:
    """Stands in for a built network where only its canonical hash is read."""

    def __init__(self, digest: str):
        self.digest = digest

    def canonical_hash(self) -> str:
        return self.digest


class MemoHashSpace(NasBench201Space):
    """The ``nas-bench-201`` space for benchmarks: ``to_graph`` returns a stand-in that only
    answers ``canonical_hash()``, the canonical hash of the cell alone (``cell_graph``),
    remembered across searchers and seeds. The network repeats one cell in a fixed macro, so
    two networks are isomorphic exactly when their cells are; hashing the cell (about 0.7 ms)
    instead of building the network (about 20 ms) gives the same duplicates, 30 times
    faster. The digests differ from ``NasBench201Space``'s: compare them only with each
    other."""

    def __init__(self, dataset: str = "cifar10"):
        super().__init__(dataset)
        self.hashes: dict[str, str] = {}

    def to_graph(self, arch, name: str = "nas-bench-201"):
        key = format_cell(arch)
        digest = self.hashes.get(key)
        if digest is None:
            digest = self.hashes[key] = cell_graph(arch).canonical_hash()
        return _Hashed(digest)


@dataclass(frozen=True)
class TableTask:
    """One data set of a NAS-Bench-201 table: the searchers' reward column (``valid``) and the
    reported column (``test``), both in % in the table."""

    table: Table
    dataset: str

    @property
    def valid(self) -> str:
        return hp12_columns(self.dataset)[0]

    @property
    def test(self) -> str:
        return hp12_columns(self.dataset)[1]

    def best_valid(self) -> float:
        return float(max(self.table.column(self.valid)))

    def best_test(self) -> float:
        return float(max(self.table.column(self.test)))

    def top_threshold(self, fraction: float) -> float:
        """The validation accuracy of the ``ceil(fraction * N)``-th best cell: a pick at or
        above it is in the table's top ``fraction``."""
        values = sorted(self.table.column(self.valid), reverse=True)
        return float(values[max(1, math.ceil(fraction * len(values))) - 1])

    def reward(self, cell) -> Result:
        """What the searcher is told: validation accuracy as a fraction (``val_acc``)."""
        return Result.ok(val_acc=self.table.lookup(cell)[self.valid] / 100.0)


@dataclass
class TableRun:
    """One search of ``budget`` unique queries. Per query ``q`` (index ``q - 1``): the pick's
    validation and test accuracy (%) and its cell."""

    pick_valid: list[float] = field(default_factory=list)
    pick_test: list[float] = field(default_factory=list)
    pick_cell: list[str] = field(default_factory=list)
    repeats: int = 0       # proposals answered from the cache (no budget)
    overflow: int = 0      # duplicates re-queried after too many in a row (cost budget)
    screened: int = 0      # candidates a prescreen passed over (never queried, no budget)
    wall_s: float = 0.0


def run_table_search(searcher: Searcher, task: TableTask, budget: int) -> TableRun:
    """Ask/tell ``searcher`` (made with the duplicate cache) for ``budget`` queries."""
    run, t0 = TableRun(), time.perf_counter()
    for _ in range(int(budget)):
        proposal, = searcher.ask(1)
        searcher.tell(proposal, task.reward(proposal.arch))
        pick, _ = searcher.best()
        row = task.table.lookup(pick.arch)
        run.pick_valid.append(float(row[task.valid]))
        run.pick_test.append(float(row[task.test]))
        run.pick_cell.append(row["cell"])
    run.repeats = int(getattr(searcher, "hits", 0))
    run.overflow = int(getattr(searcher, "overflow", 0))
    run.screened = int(getattr(searcher, "screened", 0))
    run.wall_s = time.perf_counter() - t0
    return run


def queries_to_reach(trace: list[float], threshold: float) -> int | None:
    """1-based number of queries after which the pick's validation accuracy is at least
    ``threshold``; None if never."""
    for q, value in enumerate(trace, start=1):
        if value >= threshold:
            return q
    return None


def mann_whitney_greater(x, y) -> tuple[float, float]:
    """One-sided Mann-Whitney U test that ``x`` tends to be larger than ``y``: (U of x,
    p-value), normal approximation with tie correction and continuity correction 0.5."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_greater needs two non-empty samples")
    both = np.concatenate([x, y])
    ranks = _average_ranks(both)
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    n = n1 + n2
    _, counts = np.unique(both, return_counts=True)
    var = n1 * n2 / 12.0 * ((n + 1) - float((counts ** 3 - counts).sum()) / (n * (n - 1))) \
        if n > 1 else 0.0
    if var <= 0:  # every value equal: no evidence either way
        return u, 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return u, 0.5 * math.erfc(z / math.sqrt(2.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_vals = values[order]
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_vals[stop + 1] == sorted_vals[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    return ranks


def _mean_std(values) -> dict:
    a = np.asarray(values, float)
    return {"mean": round(float(a.mean()), 4), "std": round(float(a.std(ddof=1)), 4)
            if len(a) > 1 else 0.0}


def summarize_table(runs: dict[str, list[TableRun]], task: TableTask, checkpoints: list[int],
                    reference: str = "random", sample: Table | None = None) -> dict:
    """Per searcher: the pick's test accuracy at each checkpoint (mean, std, and a one-sided
    Mann-Whitney test against ``reference``), validation regret to the table's best, queries
    to the top 1% / 0.1% (median over the seeds that got there, and their share), repeats,
    the best-so-far curves, and (where ``sample``, the 200-epoch sample, holds the final pick)
    its 200-epoch validation accuracy."""
    best_valid = task.best_valid()
    thresholds = {f: task.top_threshold(f) for f in TOP_FRACTIONS}
    out = {}
    for name, seeds in runs.items():
        entry: dict = {"seeds": len(seeds), "checkpoints": {}}
        for q in checkpoints:
            test = [r.pick_test[q - 1] for r in seeds]
            valid = [r.pick_valid[q - 1] for r in seeds]
            cp = {"test": _mean_std(test), "valid": _mean_std(valid),
                  "regret_valid": _mean_std([best_valid - v for v in valid]),
                  "test_per_seed": test}
            if name != reference and reference in runs:
                ref = [r.pick_test[q - 1] for r in runs[reference]]
                u, p = mann_whitney_greater(test, ref)
                cp["vs_random"] = {"U": u, "p_greater": p}
            entry["checkpoints"][str(q)] = cp
        for f, thr in thresholds.items():
            reach = [queries_to_reach(r.pick_valid, thr) for r in seeds]
            got = [q for q in reach if q is not None]
            entry[f"top_{f * 100:g}pct"] = {
                "threshold_valid": thr,
                "median_queries": float(np.median(got)) if got else None,
                "share_reached": len(got) / len(seeds), "per_seed": reach}
        repeats = [r.repeats for r in seeds]
        entry["repeats"] = {"mean": float(np.mean(repeats)), "median": float(np.median(repeats)),
                            "per_seed": repeats}
        entry["overflow_requeries"] = int(sum(r.overflow for r in seeds))
        curve_v = np.array([r.pick_valid for r in seeds])
        curve_t = np.array([r.pick_test for r in seeds])
        entry["curve"] = {"valid_mean": _round(curve_v.mean(0)),
                          "valid_std": _round(curve_v.std(0)),
                          "test_mean": _round(curve_t.mean(0)),
                          "test_std": _round(curve_t.std(0))}
        if sample is not None:
            final = [r.pick_cell[-1] for r in seeds]
            held = [sample.lookup(c)["val_acc_200ep"] for c in final if c in sample]
            entry["final_pick_200ep_valid"] = {
                "held": len(held), **(_mean_std(held) if held else {})}
        entry["wall_s"] = round(sum(r.wall_s for r in seeds), 2)
        out[name] = entry
    return out


def _round(a) -> list[float]:
    return [round(float(v), 4) for v in a]
