"""``nasforge bench searchers --benchmark nas-bench-201``: the statistics on a tiny table built
here (against values worked out by hand), repeats, the Mann-Whitney test against scipy, every
registered searcher on the real table, and bad input."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scipy.stats

from nasforge.cli import main
from nasforge.controllers import SEARCHERS, DedupCache, SearcherBase
from nasforge.controllers.bench_table import (MemoHashSpace, TableTask, mann_whitney_greater,
                                              queries_to_reach, run_table_search,
                                              summarize_table)
from nasforge.search_spaces.nas_bench_201 import NasBench201Space, parse_cell
from nasforge.tables import load_table

CONV = "nor_conv_3x3"
A = f"|{CONV}~0|+|{CONV}~0|{CONV}~1|+|{CONV}~0|{CONV}~1|{CONV}~2|"
B = f"|skip_connect~0|+|{CONV}~0|{CONV}~1|+|{CONV}~0|{CONV}~1|{CONV}~2|"
C = f"|avg_pool_3x3~0|+|{CONV}~0|{CONV}~1|+|{CONV}~0|{CONV}~1|{CONV}~2|"
D = f"|nor_conv_1x1~0|+|{CONV}~0|{CONV}~1|+|{CONV}~0|{CONV}~1|{CONV}~2|"
# two strings of one architecture: node 3 only sees `none`, so the cell outputs zeros
Z1 = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
Z2 = f"|{CONV}~0|+|none~0|none~1|+|none~0|none~1|none~2|"
# (cell, valid %, test %)
ROWS = [(A, 80.0, 85.0), (B, 82.0, 84.0), (C, 82.0, 86.0), (D, 90.0, 91.0), (Z1, 10.0, 10.0),
        (Z2, 11.0, 12.0)]


def write_table(path, rows=ROWS, columns=None):
    columns = columns or ["arch_index", "cell", "cifar10_valid", "cifar10_test",
                          "cifar100_valid", "cifar100_test", "imagenet16_valid",
                          "imagenet16_test"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for k, (cell, valid, test) in enumerate(rows):
            full = {"arch_index": k, "cell": cell, "cifar10_valid": valid, "cifar10_test": test,
                    "cifar100_valid": valid - 20, "cifar100_test": test - 20,
                    "imagenet16_valid": valid - 40, "imagenet16_test": test - 40}
            w.writerow([full[c] for c in columns])
    return path


class Scripted(SearcherBase):
    """Proposes the given cells in order (then repeats the last)."""

    def __init__(self, space, script, seed=0):
        super().__init__(space, seed=seed)
        self.script = [parse_cell(c) for c in script]
        self.k = 0

    def _propose(self, n):
        out = []
        for _ in range(n):
            out.append((self.script[min(self.k, len(self.script) - 1)], {"origin": "script"}))
            self.k += 1
        return out


@pytest.fixture
def task(tmp_path):
    return TableTask(load_table(write_table(tmp_path / "tiny.csv")), "cifar10")


def test_isomorphic_strings_share_the_memo_hash_as_in_the_space():
    memo, space = MemoHashSpace(), NasBench201Space()
    cells = [parse_cell(c) for c in (A, B, Z1, Z2)]
    same_memo = [[memo.to_graph(x).canonical_hash() == memo.to_graph(y).canonical_hash()
                  for y in cells] for x in cells]
    same_space = [[space.to_graph(x).canonical_hash() == space.to_graph(y).canonical_hash()
                   for y in cells] for x in cells]
    assert same_memo == same_space
    assert same_memo[2][3] and not same_memo[0][1]


def test_scripted_search_statistics(task):
    space = MemoHashSpace()
    # seed 0: A, B, A (repeat), C, Z1, Z2 (isomorphic repeat), D -> queries A B C Z1 D
    # seed 1: B, C, A, Z2, Z1 (isomorphic repeat), A (a second repeat in one ask: handed out
    # again, max_hits_per_ask=1) -> queries B C A Z2 A, never D
    scripts = [[A, B, A, C, Z1, Z2, D], [B, C, A, Z2, Z1, A, Z1]]
    runs = []
    for seed, script in enumerate(scripts):
        searcher = DedupCache(Scripted(space, script, seed), max_hits_per_ask=1)
        runs.append(run_table_search(searcher, task, budget=5))
    # picks by hand: highest valid so far, ties to the earlier query
    assert runs[0].pick_valid == [80.0, 82.0, 82.0, 82.0, 90.0]
    assert runs[0].pick_test == [85.0, 84.0, 84.0, 84.0, 91.0]   # B (82) before C (82)
    assert runs[0].repeats == 2 and runs[0].overflow == 0
    # seed 1: B, C, A, Z2, then Z1 and A are repeats (1 allowed per ask, the second is
    # handed out again as an overflow re-query of A)
    assert runs[1].pick_valid == [82.0, 82.0, 82.0, 82.0, 82.0]
    assert runs[1].pick_test == [84.0] * 5
    assert runs[1].repeats == 1 and runs[1].overflow == 1

    random_runs = [run_table_search(DedupCache(Scripted(space, s, k)), task, budget=5)
                   for k, s in enumerate([[Z1, A, B, C, D], [Z2, Z1, B, A, C, D]])]
    # random seed 1: Z2, (Z1 repeat), B, A, C, D -> 5 queries Z2 B A C D
    assert [r.repeats for r in random_runs] == [0, 1]
    summary = summarize_table({"random": random_runs, "scripted": runs}, task, [2, 5])
    s = summary["scripted"]
    assert s["checkpoints"]["5"]["test"]["mean"] == pytest.approx((91.0 + 84.0) / 2)
    assert s["checkpoints"]["5"]["test"]["std"] == pytest.approx(np.std([91, 84], ddof=1),
                                                                 abs=1e-4)
    assert s["checkpoints"]["2"]["regret_valid"]["mean"] == pytest.approx(90.0 - 82.0)
    # top 1% and top 0.1% of 6 cells: the best cell, D (valid 90)
    for key in ("top_1pct", "top_0.1pct"):
        assert s[key]["threshold_valid"] == 90.0
        assert s[key]["per_seed"] == [5, None]
        assert s[key]["median_queries"] == 5.0 and s[key]["share_reached"] == 0.5
    assert summary["random"]["top_1pct"]["per_seed"] == [5, 5]
    assert s["repeats"]["per_seed"] == [2, 1]
    assert s["overflow_requeries"] == 1
    # the test against random on the pick's test accuracy, by scipy
    expected = scipy.stats.mannwhitneyu([91.0, 84.0], [91.0, 91.0], alternative="greater",
                                        method="asymptotic")
    assert s["checkpoints"]["5"]["vs_random"]["p_greater"] == pytest.approx(expected.pvalue)
    assert "vs_random" not in summary["random"]["checkpoints"]["5"]


def test_queries_to_reach():
    assert queries_to_reach([1.0, 2.0, 3.0], 2.0) == 2
    assert queries_to_reach([1.0, 2.0], 2.5) is None


@pytest.mark.parametrize("seed", range(6))
def test_mann_whitney_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n1, n2 = rng.integers(3, 40, size=2)
    if seed % 2:  # heavy ties, as final picks are
        x, y = rng.integers(0, 5, n1).astype(float), rng.integers(0, 5, n2).astype(float)
    else:
        x, y = rng.normal(0.3, 1, n1), rng.normal(0, 1, n2)
    u, p = mann_whitney_greater(x, y)
    ref = scipy.stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")
    assert u == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=1e-9)


def test_mann_whitney_all_equal():
    assert mann_whitney_greater([1.0, 1.0], [1.0])[1] == 1.0


@pytest.mark.parametrize("name", list(SEARCHERS))
def test_every_searcher_on_the_real_table(name, capsys):
    code = main(["bench", "searchers", "--benchmark", "nas-bench-201", "--budget", "12",
                 "--seeds", "2", "--searchers", name, "--checkpoints", "5", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    data = json.loads(out.out)
    assert set(data) == {"random", name}
    table = load_table()
    tests = {row["cell"]: row["cifar10_test"] for row in table}
    best_valid = max(table.column("cifar10_valid"))
    for entry in data.values():
        assert set(entry["checkpoints"]) == {"5", "12"}
        assert entry["settings"]["reward"] == "cifar10_valid"
        for cp in entry["checkpoints"].values():
            assert all(t in tests.values() for t in cp["test_per_seed"])
            assert cp["regret_valid"]["mean"] >= 0
        assert entry["checkpoints"]["12"]["valid"]["mean"] <= best_valid
        assert len(entry["curve"]["valid_mean"]) == 12
        # best so far never decreases
        assert np.all(np.diff(entry["curve"]["valid_mean"]) >= -1e-9)
    if name != "random":
        assert "vs_random" in data[name]["checkpoints"]["12"]
    assert out.err.count("bench: ") == 2 * len(data)


def test_table_output_and_plot(tmp_path, capsys):
    png = tmp_path / "curve.png"
    code = main(["bench", "searchers", "--benchmark", "nas-bench-201", "--dataset", "cifar100",
                 "--budget", "8", "--seeds", "2", "--searchers", "evolution", "--quiet",
                 "--plot", str(png)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "cifar100_valid" in out.out and "| evolution |" in out.out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.err == ""


@pytest.mark.parametrize("argv", [
    ["--benchmark", "nas-bench-301"],
    ["--benchmark", "nas-bench-201", "--dataset", "mnist"],
    ["--benchmark", "nas-bench-201", "--searchers", "annealing"],
    ["--benchmark", "nas-bench-201", "--budget", "0"],
    ["--benchmark", "nas-bench-201", "--checkpoints", "ten"],
    ["--benchmark", "planted", "--plot", "x.png"],
])
def test_bad_input_exits_2_with_one_line(argv, capsys):
    assert main(["bench", "searchers", "--seeds", "1", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1


def test_table_with_missing_columns_exits_2(tmp_path, capsys):
    path = write_table(tmp_path / "bad.csv", columns=["arch_index", "cell", "cifar10_valid"])
    assert main(["bench", "searchers", "--benchmark", "nas-bench-201", "--table", str(path),
                 "--seeds", "1", "--budget", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cifar10_test" in err
