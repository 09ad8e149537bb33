"""NAS-Bench-201 cells in what a search stores and measures: the cell record (string, data
set, arch_index) that trial records and best_cell.json hold instead of the whole network, the
commands that read it back (info, export, train --run, compare), run folders of older
versions (whole chains), and static metrics (params, mult-adds) of the cells' networks.

Expectations are independent of the code under test: parameter counts and FLOPs from the
shipped 200-epoch sample (NAS-Bench-201's API via NASLib), cells written out by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import nasforge.cli.train as train_command
from nasforge.cli import main
from nasforge.flops import count_params
from nasforge.search.backends import ArchRecorder
from nasforge.search.board import arch_hparams
from nasforge.search.objectives import ModelSetting, measure_static
from nasforge.search_spaces import get_space, record_graph
from nasforge.search_spaces.nas_bench_201 import network, parse_cell
from nasforge.tables import load_sample, load_table
from nasforge.trials import Status

from test_nas_bench_201 import FLOPS_OUTSIDE_CELLS_M, _cell_extras

FORMAT = "nasforge.nb201/1"
CELL = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
EMPTY = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
# (input pixels, classes) of NAS-Bench-201's data sets
DATA = {"cifar10": (32, 10), "cifar100": (32, 100), "imagenet16": (16, 120)}


def _sample_cells(dataset: str, k: int = 2) -> list[dict]:
    rows = list(load_sample(dataset))
    return rows[:: len(rows) // k][:k]


# ------------------------------------------------------------------------- static metrics
@pytest.mark.parametrize("dataset", list(DATA))
def test_static_metrics_of_cells_equal_the_samples_figures(dataset):
    """params and mult_adds as a search measures them before a trial (objectives.py, the
    ModelSetting both backends build: the data set's classes and input size) on the cell's
    NAS-Bench-201 network: params equal the sample's params_M at its 6 decimals; mult-adds
    are its flops_M less what NAS-Bench-201's counter adds (docs/nas_bench_201.md)."""
    size, classes = DATA[dataset]
    space = get_space("nas-bench-201", dataset=dataset)
    setting = ModelSetting("cifar", classes, size, 3)
    for row in _sample_cells(dataset):
        cell = parse_cell(row["cell"])
        got = measure_static(["params", "mult_adds"], space.to_graph(cell), setting)
        assert round(got["params"] / 1e6, 6) == row["params_M"]
        rest = round(row["flops_M"] - (got["mult_adds"] + _cell_extras(row["cell"], dataset))
                     / 1e6, 6)
        assert {rest} == FLOPS_OUTSIDE_CELLS_M[dataset]


# ------------------------------------------------------------------------- the cell record
def test_a_record_stores_the_string_and_rebuilds_the_network():
    space = get_space("nas-bench-201", dataset="cifar100")
    record = space.record(parse_cell(CELL))
    assert record == {"format": FORMAT, "cell": CELL, "dataset": "cifar100"}
    assert len(json.dumps(record)) < 200  # the whole chain was about 17 KB
    graph = record_graph(record)
    assert graph.name == CELL and graph.to_dict() == network(CELL, "cifar100",
                                                             name=CELL).to_dict()


BAD_RECORDS = {
    "unknown op": ({"cell": CELL.replace("skip_connect~2", "conv~2")}, "unknown op 'conv'"),
    "malformed": ({"cell": "|none~0|"}, "expected 3 nodes"),
    "data set": ({"dataset": "mnist"}, "unknown data set 'mnist'"),
    "arch_index": ({"arch_index": "7"}, "arch_index '7' is not a non-negative integer"),
    "extra field": ({"weights": "x.pt"}, "unknown field(s) weights"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_a_bad_cell_record_file_is_one_line_and_exit_2(tmp_path, capsys, case):
    change, message = BAD_RECORDS[case]
    path = tmp_path / "best_cell.json"
    path.write_text(json.dumps({"format": FORMAT, "cell": CELL, "dataset": "cifar10",
                                **change}))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nasforge: error: ") and message in err


def _cell_record_file(path: Path, cell: str, dataset: str) -> Path:
    path.write_text(json.dumps({"format": FORMAT, "cell": cell, "dataset": dataset,
                                "arch_index": 7}))
    return path


def test_info_of_a_cell_record_file_is_the_cells_network_for_its_data_set(tmp_path, capsys):
    row = _sample_cells("imagenet16", 1)[0]
    path = _cell_record_file(tmp_path / "best_cell.json", row["cell"], "imagenet16")
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["setting"], info["dataset"], info["input_size"]) == ("nb201", "imagenet16", 16)
    assert round(info["params"] / 1e6, 6) == row["params_M"] and info["output_shape"] == [1, 120]


def test_train_run_builds_the_best_cells_network(tmp_path, capsys, monkeypatch):
    """``nasforge train --run`` of a nas-bench-201 run: best_cell.json (a cell record) is its
    data set's network: the sample's parameter count (training itself is stubbed)."""
    row = _sample_cells("cifar10", 1)[0]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "trials.jsonl").write_text("")
    _cell_record_file(run / "best_cell.json", row["cell"], "cifar10")
    built = []

    def fake_train(model, data, recipe, **kwargs):
        built.append(count_params(model))
        return {"status": Status.OK, "epochs": 1, "wall_s": 0.0, "val_acc": 0.1}

    monkeypatch.setattr(train_command, "train", fake_train)
    assert main(["train", "--run", str(run), "--data", "synthetic", "--runs-dir",
                 str(tmp_path / "t")]) == 0
    assert [round(p / 1e6, 6) for p in built] == [row["params_M"]]


# --------------------------------------------------------------- run folders old and new
def _record(trial: int, arch: dict, val_acc: float) -> dict:
    return {"trial": trial, "status": "ok", "hash": f"h{trial}", "tokens": [], "origin": {},
            "arch": arch, "metrics": {"val_acc": val_acc, "epoch": 12}, "epochs": 12,
            "params": None, "mult_adds": None, "wall_s": 0.1, "train_s": 0.0,
            "restored_epoch": 0, "resources": {"cpu": 1.0, "gpu": 0.0}, "error": None,
            "failure": None, "started_at": 1.0 + trial, "finished_at": 2.0 + trial}


def test_a_run_folder_of_old_and_new_records_exports_and_compares(tmp_path, capsys):
    """An older run stored each cell's whole chain; a resumed one appends cell records: both
    kinds export (the same network for the same cell) and compare names the best cell."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "nasforge.search/1",
                                                 "search": {"trials": 2}, "setting": "cifar"}))
    row = _sample_cells("cifar10", 1)[0]
    old = network(row["cell"], "cifar10", name=row["cell"]).to_dict()  # older versions
    new = {"format": FORMAT, "cell": EMPTY, "dataset": "cifar10", "arch_index": 7}
    (run / "trials.jsonl").write_text(json.dumps(_record(0, old, 0.8)) + "\n"
                                      + json.dumps(_record(1, new, 0.3)) + "\n")
    params = {}
    for trial in (0, 1):
        out = tmp_path / f"t{trial}.json"
        assert main(["export", "best_cell", "--run", str(run), "--trial", str(trial), "-f",
                     "json", "-o", str(out)]) == 0
        capsys.readouterr()
        assert main(["info", str(out), "--json"]) == 0
        params[trial] = json.loads(capsys.readouterr().out)["params"]
    # the sample's count, and NAS-Bench-201's API for the empty cell (cifar10)
    assert params == {0: round(row["params_M"] * 1e6), 1: 73_306}
    assert main(["compare", str(run), "--json"]) == 0
    compared, = json.loads(capsys.readouterr().out)
    assert (compared["best_cell"], compared["best_arch_index"]) == (row["cell"], None)


def test_tensorboard_hparams_name_the_cell_in_records_old_and_new():
    new = {"format": FORMAT, "cell": CELL, "dataset": "cifar10", "arch_index": 541}
    assert arch_hparams(new) == {"cell": CELL, "arch_index": 541}
    assert arch_hparams(network(CELL, "cifar10", name=CELL).to_dict()) == {"cell": CELL}
    assert arch_hparams({"format": "nasforge.pair/1"}) == {}  # other spaces: no short name


def test_the_table_backends_recorder_adds_arch_index_and_pickles_small():
    """Ray pickles the search algorithm (which holds the recorder) with its experiment: the
    table stays out of the pickle and is read again by a copy."""
    import pickle

    row = _sample_cells("cifar10", 1)[0]
    recorder = ArchRecorder(get_space("nas-bench-201"), load_table())
    cell = parse_cell(row["cell"])
    expected = {"format": FORMAT, "cell": row["cell"], "dataset": "cifar10",
                "arch_index": row["arch_index"]}
    assert recorder(cell) == expected
    data = pickle.dumps(recorder)
    assert len(data) < 10_000 and pickle.loads(data)(cell) == expected
