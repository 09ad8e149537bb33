"""nasforge search with the nas-bench-201 trial backend: trials look their cell up in
NAS-Bench-201's 12-epoch table instead of training (nasforge/search/backends.py).

Expectations are computed here from the shipped CSV read with the csv module and from the cell
string written out by hand, not through nasforge.tables. The Ray tests share one small local
Ray instance; each search is a few dozen lookups.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nasforge.api import build_model
from nasforge.cli import main
from nasforge.search import read_trials
from nasforge.tables.nas_bench_201 import HP12_FILE

from conftest import lines_of, wait_for

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
SEARCH = ["search", "--space", "nas-bench-201", "--benchmark", "nas-bench-201"]


def cell_string(tokens) -> str:
    """NAS-Bench-201's string of decision tokens (edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2)."""
    o = [OPS[t] for t in tokens]
    return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


@pytest.fixture(scope="module")
def table_rows() -> dict:
    with gzip.open(HP12_FILE, "rt", encoding="utf-8") as f:
        return {row["cell"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def cell_record(cell: str, rows, dataset="cifar10") -> dict:
    """What a record stores of a cell: its string, data set and the table's arch_index."""
    return {"format": "nasforge.nb201/1", "cell": cell, "dataset": dataset,
            "arch_index": int(rows[cell]["arch_index"])}


def check_records(records, rows, dataset="cifar10", run_dir=None):
    """Every record is ok, with the table's figures of its cell (as fractions) and the cell
    in NAS-Bench-201's string form, not the whole network (each line well under 1 KB)."""
    for r in records:
        cell = cell_string(r["tokens"])
        assert r["status"] == "ok" and r["arch"] == cell_record(cell, rows, dataset)
        assert r["metrics"]["val_acc"] == pytest.approx(float(rows[cell][f"{dataset}_valid"]) / 100)
        assert r["metrics"]["test_acc"] == pytest.approx(float(rows[cell][f"{dataset}_test"]) / 100)
        assert r["epochs"] == 12
    if run_dir is not None:
        assert max(map(len, (run_dir / "trials.jsonl").read_bytes().splitlines())) < 1000


# ------------------------------------------------------------------------------- bad input
def _write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


BAD = {
    "missing column": (["--table", "{missing}"], "missing column cifar100_test"),
    "cell not in the table": (["--table", "{partial}"], "holds 2 of the space's 15625 cells"),
    "another space": (["--space", "nasnet"], "needs the space nas-bench-201"),
    "test accuracy as objective": (["--objective", "test_acc"], "test_acc is held out"),
}


@pytest.mark.parametrize("extra,match", BAD.values(), ids=BAD.keys())
def test_bad_input_is_one_line_and_exit_2(extra, match, tmp_path, table_rows, capsys):
    cells = list(table_rows)[:2]
    missing = _write_csv(tmp_path / "missing.csv",
                         ["arch_index", "cell", "cifar10_valid", "cifar10_test", "cifar100_valid",
                          "imagenet16_valid", "imagenet16_test"],
                         [[k, c, 50, 50, 20, 10, 10] for k, c in enumerate(cells)])
    partial = _write_csv(tmp_path / "partial.csv",
                         ["arch_index", "cell", "cifar10_valid", "cifar10_test", "cifar100_valid",
                          "cifar100_test", "imagenet16_valid", "imagenet16_test"],
                         [[k, c, 50, 50, 20, 20, 10, 10] for k, c in enumerate(cells)])
    args = [a.format(missing=missing, partial=partial) for a in extra]
    code = main(SEARCH + ["--trials", "3", "--runs-dir", str(tmp_path), "--name", "r"] + args)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and match in lines[0], lines
    assert not (tmp_path / "r").exists()  # nothing written


def test_the_table_backend_implies_its_space(tmp_path, table_rows, capsys):
    """``nasforge search --benchmark nas-bench-201`` (the issue's command, no --space) searches
    the nas-bench-201 space: here it gets as far as the table's coverage check."""
    cells = list(table_rows)[:2]
    partial = _write_csv(tmp_path / "partial.csv",
                         ["arch_index", "cell", "cifar10_valid", "cifar10_test", "cifar100_valid",
                          "cifar100_test", "imagenet16_valid", "imagenet16_test"],
                         [[k, c, 50, 50, 20, 20, 10, 10] for k, c in enumerate(cells)])
    assert main(["search", "--benchmark", "nas-bench-201", "--table", str(partial),
                 "--runs-dir", str(tmp_path), "--name", "r"]) == 2
    assert "holds 2 of the space's 15625 cells" in capsys.readouterr().err
    assert main(["search", "--benchmark", "nas-bench-201", "--space", "nasnet",
                 "--runs-dir", str(tmp_path), "--name", "r"]) == 2
    assert "needs the space nas-bench-201, not 'nasnet'" in capsys.readouterr().err


# ------------------------------------------------------------------------ searches on Ray
def test_a_table_search_fills_the_run_folder(ray_cluster, tmp_path, table_rows, capsys):
    """30 lookups end to end: every record carries its cell's table figures, best_cell.json
    is the cell of the best table validation accuracy among them (the earlier trial on ties),
    and export and compare work on the run."""
    runs = tmp_path / "runs"
    assert main(SEARCH + ["--trials", "30", "--runs-dir",
                          str(runs), "--name", "t", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    run = runs / "t"
    records = read_trials(run)
    assert len(records) == summary["finished"] == 30 and summary["failed"] == 0
    check_records(records, table_rows, run_dir=run)
    best_val = max(r["metrics"]["val_acc"] for r in records)
    best = min((r for r in records if r["metrics"]["val_acc"] == best_val),
               key=lambda r: r["trial"])
    best_cell = cell_string(best["tokens"])
    saved = json.loads((run / "best_cell.json").read_text())
    assert saved == cell_record(best_cell, table_rows)
    assert summary["best"] == pytest.approx(best_val) and summary["best_trial"] == best["trial"]
    config = json.loads((run / "config.json").read_text())
    assert config["search"]["backend"] == "nas-bench-201" and config["epochs"] == 12
    assert config["data"]["dataset"] == "cifar10"
    assert list(run.glob("events.out.tfevents.*"))  # TensorBoard
    # Ray's pickle of the experiment holds the search algorithm, but not the table
    assert (run / "ray" / "part-1" / "tuner.pkl").stat().st_size < 100_000

    assert main(["export", "best_cell", "--run", str(run), "-f", "json",
                 "-o", str(tmp_path / "b.json")]) == 0
    exported = json.loads((tmp_path / "b.json").read_text())  # the whole network, rebuilt
    assert exported["family"] == "NAS-Bench-201" and len(exported["cells"]) == 1 + 3 * 5 + 2 + 1
    capsys.readouterr()
    assert main(["compare", str(run), "--json"]) == 0
    row, = json.loads(capsys.readouterr().out)
    assert row["best"] == pytest.approx(best_val) and row["finished"] == 30
    assert (row["best_cell"], row["best_arch_index"]) == \
        (best_cell, int(table_rows[best_cell]["arch_index"]))


def test_asha_on_a_table_prunes_nothing(ray_cluster, tmp_path, table_rows, capsys):
    """A table trial reports once, at the last rung (epoch 12 = ASHA's max_t)."""
    assert main(SEARCH + ["--dataset", "cifar100", "--trials", "8", "--scheduler", "asha",
                          "--searcher", "random",
                          "--runs-dir", str(tmp_path), "--name", "a", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["finished"] == 8 and summary["pruned"] == 0
    check_records(read_trials(tmp_path / "a"), table_rows, "cifar100", tmp_path / "a")


DRIVER = """
import sys
sys.path[:0] = [{root!r}]
from nasforge.search import SearchConfig
from nasforge.search.runner import run_search
run_search(SearchConfig(space="nas-bench-201", backend="nas-bench-201", searcher="evolution",
                        trials={trials}, address={address!r}), {run!r})
"""
KILLED_TRIALS = 40


def test_driver_sigkill_then_resume(ray_cluster, tmp_path, table_rows, capsys):
    """The driver of a table search is SIGKILLed after its first records; --resume finishes
    the budget: every trial recorded once, the earlier records untouched."""
    address = ray_cluster.get_runtime_context().gcs_address
    run_dir = tmp_path / "killed"
    script = tmp_path / "driver.py"
    root = Path(__file__).resolve().parent.parent
    script.write_text(DRIVER.format(root=str(root), run=str(run_dir), trials=KILLED_TRIALS,
                                    address=address))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: lines_of(run_dir / "trials.jsonl") >= 3, proc, "three records")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {r["trial"]: r for r in read_trials(run_dir)}
    assert 3 <= len(before) < KILLED_TRIALS
    capsys.readouterr()
    assert main(["search", "--resume", str(run_dir)]) == 0
    done = capsys.readouterr().err.splitlines()[-1]
    records = read_trials(run_dir)
    best_val = max(r["metrics"]["val_acc"] for r in records)
    best = cell_string(min((r for r in records if r["metrics"]["val_acc"] == best_val),
                           key=lambda r: r["trial"])["tokens"])
    # the console summary names the best cell by its string and arch_index
    assert done.startswith(f"done: {KILLED_TRIALS} trials") and \
        f"best cell: {best} (arch_index {table_rows[best]['arch_index']})" in done, done
    assert len(records) == len({r["trial"] for r in records}) == KILLED_TRIALS
    for t, rec in before.items():
        assert [x for x in records if x["trial"] == t] == [rec]
    check_records(records, table_rows, run_dir=run_dir)
    assert len(list((run_dir / "ray").glob("part-*"))) == 2


@pytest.mark.slow  # two Ray searches (about 25 s of CPU); the fast check of the figures is
# test_nb201_records.py::test_static_metrics_of_cells_equal_the_samples_figures
def test_static_metrics_of_cells_in_both_backends(ray_cluster, tmp_path, table_rows, capsys):
    """A constraint on params works with nas-bench-201 cells in the table backend and in the
    train backend; the values are those of each cell's network (the figures themselves are
    checked against the 200-epoch sample in test_nb201_records.py): here every refused cell
    is above the bound and every looked-up one within it."""
    bound = 400_000
    assert main(SEARCH + ["--trials", "6", "--searcher", "random", "--constraint",
                          f"params<={bound}", "--runs-dir", str(tmp_path), "--name", "t",
                          "--json"]) == 0
    records = read_trials(tmp_path / "t")
    ok = [r for r in records if r["status"] == "ok"]
    assert len(ok) == 6 and all(r["params"] <= bound for r in ok)
    assert all(r["params"] > bound for r in records if r["status"] == "infeasible")
    # the train backend: nothing fits, so nothing trains; the search stops at the cap
    capsys.readouterr()
    assert main(["search", "--space", "nas-bench-201", "--data", "synthetic", "--trials", "2",
                 "--constraint", "params<=1", "--max-infeasible", "3", "--runs-dir",
                 str(tmp_path), "--name", "train"]) == 1
    refused = read_trials(tmp_path / "train")
    assert [r["status"] for r in refused] == ["infeasible"] * 3
    for r in refused:  # the empty cell's network is the smallest: 73,306 (NAS-Bench-201)
        assert r["params"] >= 73_306
        assert r["arch"]["cell"] == cell_string(r["tokens"])


@pytest.mark.slow  # Ray; the default suite checks the same rule on the table benchmark
def test_a_prescreened_search_records_the_screened_and_never_trains_them(ray_cluster, tmp_path,
                                                                       table_rows, capsys):
    """--prescreen params:3: every trial is the cell of most parameters among 3 proposals;
    the other 2 are recorded as screened with their parameter count and never looked up
    (a table trial is this backend's training). Parameters counted here with torch, on
    NAS-Bench-201's network built through the api."""
    runs = tmp_path / "runs"
    assert main(SEARCH + ["--trials", "4", "--runs-dir", str(runs), "--name", "p",
                          "--prescreen", "params:3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    records = read_trials(runs / "p")
    ok = [r for r in records if r["status"] == "ok"]
    screened = [r for r in records if r["status"] == "screened"]
    assert len(ok) == summary["finished"] == 4 and len(screened) == 8
    check_records(ok, table_rows)
    assert {r["trial"] for r in ok}.isdisjoint(r["trial"] for r in screened)
    for r in screened:
        assert r["epochs"] == 0 and "val_acc" not in r["metrics"]
        params = sum(p.numel() for p in build_model(cell_string(r["tokens"])).parameters())
        assert r["metrics"]["params"] == params
    trained = {cell_string(r["tokens"]): r for r in ok}
    for r in ok:  # the trained one of each ask had the most parameters of its 3
        beside = [s for s in screened if s["error"].endswith(f"candidate {r['trial']} higher")]
        assert len(beside) == 2
        mine = sum(p.numel() for p in build_model(cell_string(r["tokens"])).parameters())
        assert all(s["metrics"]["params"] <= mine for s in beside)
    assert len(trained) <= 4
    assert (runs / "p" / "proxy_scores.jsonl").is_file()
