"""`nasforge train`: run folder (config, metrics.jsonl, TensorBoard events, checkpoint), the
final JSON object, resume, and one-line errors with exit code 2 for bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_fixtures import make_images, write_cifar_archive, write_cifar_folder, write_imagefolder
from PIL import Image

from nasforge.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-data")
    train, test = make_images(64, seed=1), make_images(20, seed=2)
    folder = write_cifar_folder(root / "cifar", train, test)
    archive = write_cifar_archive(root / "cifar-10-python.tar.gz", folder)
    tree = write_imagefolder(root / "tree", make_images(40, seed=3, size=16, num_classes=3),
                             make_images(12, seed=4, size=16, num_classes=3),
                             classes=("a", "b", "c"))
    return {"folder": folder, "archive": archive, "tree": tree, "root": root}


def _run(capsys, *args):
    rc = main(["train", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _bad(capsys, tmp_path, *args, match: str):
    rc, out, err = _run(capsys, *args, "--runs-dir", tmp_path / "runs", "--cache-dir",
                        tmp_path / "cache")
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nasforge: error:"), err
    assert match in lines[0], lines[0]
    assert out == ""
    return lines[0]


def test_train_json_and_run_folder(fx, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["--recipe", "smoke", "--data", fx["folder"].parent, "--epochs", "1",
            "--runs-dir", runs, "--name", "r1", "--json", "--cache-dir", tmp_path / "c"]
    rc, out, err = _run(capsys, *args)
    assert rc == 0, err
    res = json.loads(out)
    assert {"test_acc", "epochs", "wall_s", "params", "status"} <= set(res)
    assert res["epochs"] == 1 and res["status"] == "ok"
    # a fraction of the fixture's 20 test images (random pixels: nothing to learn, so no
    # accuracy threshold here; tests/test_trainer.py checks learning)
    assert round(res["test_acc"] * 20, 9).is_integer()
    assert "val_acc" not in res  # the final split has no validation set
    assert "epoch 1/1" in err and "ETA" in err
    run = runs / "r1"
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["name"] == "smoke" and config["model"]["name"] == "nasnet_a"
    assert config["data"]["split"] == "final" and config["data"]["train"] == 64
    assert config["nasforge_version"] and config["epochs"] == 1
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1
    assert json.loads(lines[0])["test_acc"] == res["test_acc"]
    assert list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoint.pt").exists()
    # the same name again resumes: the run is complete, nothing trains, same result
    rc, out2, err2 = _run(capsys, *args)
    assert rc == 0 and "resuming" in err2 and "epoch 1/1" not in err2
    res2 = json.loads(out2)
    assert res2["test_acc"] == res["test_acc"] and res2["train_loss"] == res["train_loss"]


def test_a_training_run_folder_keeps_its_metrics_in_step_with_its_checkpoint(tmp_path):
    """The training run folder of `nasforge train` and of every transfer model: a new run
    writes nothing before training starts and then empties a stale metrics.jsonl; a resumed
    run keeps the checkpoint's epochs (dropping lines a kill left beyond it) before its data
    loads; every epoch adds a line and TensorBoard scalars of its finite numbers."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nasforge.train import save_checkpoint
    from nasforge.train.run_folder import TrainingRunFolder

    assert TrainingRunFolder(tmp_path / "none").resumed_epochs() == 0
    assert not (tmp_path / "none").exists()
    new = TrainingRunFolder(tmp_path / "new")
    new.path.mkdir()
    (new.path / "metrics.jsonl").write_text('{"epoch": 7}\n')
    assert new.resumed_epochs() == 0
    with new.open():
        assert (new.path / "metrics.jsonl").read_text() == ""
        new.log_epoch(1, {"epoch": 1, "train_loss": 0.5, "val_acc": float("nan")})
    assert (new.path / "metrics.jsonl").read_text() == \
        '{"epoch": 1, "train_loss": 0.5, "val_acc": NaN}\n'
    scalars = EventAccumulator(str(new.path)).Reload()
    assert scalars.Tags()["scalars"] == ["train_loss"]
    assert [(e.step, e.value) for e in scalars.Scalars("train_loss")] == [(1, 0.5)]

    resumed = TrainingRunFolder(tmp_path / "resumed")
    save_checkpoint(tmp_path / "resumed" / "checkpoint.pt",
                    {"epoch": 2, "history": [{"epoch": 1, "a": 1}, {"epoch": 2, "a": 2}]})
    metrics = tmp_path / "resumed" / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "a": 1, "x": 0}\n{"epoch": 2, "a": 2}\n{"epoch": 3}\n')
    assert resumed.resumed_epochs() == 2
    assert metrics.read_text() == '{"epoch": 1, "a": 1, "x": 0}\n{"epoch": 2, "a": 2}\n'
    with resumed.open(board=False):
        resumed.log_epoch(3, {"epoch": 3, "a": 3})
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == [1, 2, 3]
    assert not list(resumed.path.glob("events.out.tfevents.*"))


def test_train_imagefolder_and_cell_pair_file(fx, tmp_path, capsys):
    from nasforge.zoo import ZOO

    entry = ZOO["nasnet_a"]
    pair = entry.architecture(entry.config("cifar"))
    path = tmp_path / "pair.json"
    path.write_text(pair.to_json())
    rc, out, err = _run(capsys, path, "--recipe", "smoke", "--data", fx["tree"], "--epochs",
                        "1", "--runs-dir", tmp_path / "runs", "--json", "--cache-dir",
                        tmp_path / "c")
    assert rc == 0, err
    res = json.loads(out)
    assert res["epochs"] == 1 and res["model"] == str(path)
    run = next((tmp_path / "runs").iterdir())
    assert run.name.startswith("pair-smoke-")
    assert json.loads((run / "config.json").read_text())["data"]["classes"] == ["a", "b", "c"]


def test_search_recipe_reports_val_acc(fx, tmp_path, capsys):
    rc, out, err = _run(capsys, "--recipe", "search", "--data", fx["archive"], "--val-size",
                        "50", "--epochs", "1", "--runs-dir", tmp_path / "runs", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["test_acc"] is None and res["epochs"] == 1
    assert round(res["val_acc"] * 50, 9).is_integer()  # a fraction of the 50 held-out images
    _bad(capsys, tmp_path, "--recipe", "search", "--data", fx["archive"], "--val-size", "500",
         match="val_size 500")


def test_missing_path(tmp_path, capsys):
    _bad(capsys, tmp_path, "--data", tmp_path / "nope", match="does not exist")


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _bad(capsys, tmp_path, "--data", tmp_path / "empty", match="empty")


def test_corrupt_archive(tmp_path, capsys):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(os.urandom(4096))
    _bad(capsys, tmp_path, "--data", bad, match="corrupt or truncated archive")


def test_unreadable_image(tmp_path, capsys):
    d = tmp_path / "tree" / "train" / "cat"
    d.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(d / f"{i}.png")
    (d / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    msg = _bad(capsys, tmp_path, "--data", tmp_path / "tree", match="cannot read image")
    assert str(d / "1.png") in msg


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_bad_epochs(tmp_path, capsys, epochs):
    _bad(capsys, tmp_path, "--epochs", epochs, match="--epochs must be at least 1")


def test_unknown_recipe_and_model(tmp_path, capsys):
    _bad(capsys, tmp_path, "--recipe", "nope", match="invalid choice")
    _bad(capsys, tmp_path, "no_such_model", match="no_such_model")
    _bad(capsys, tmp_path, tmp_path / "missing.json", match="does not exist")


# a fresh interpreter costs torch's import (~25-40 s on the busy 2 cores); the default suite's
# fresh-interpreter check of `nasforge train` is test_safe_loading's
# test_nasforge_train_refusal_has_no_traceback_or_warning (same one-line stderr rule), and
# test_missing_path checks this message in-process
@pytest.mark.slow
def test_subprocess_bad_input_has_no_traceback(cli, tmp_path):
    r = cli("train", "--data", tmp_path / "nope", "--runs-dir", tmp_path / "runs")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "does not exist" in r.stderr


# --------------------------------------------------------- nasforge train --run (best cell)
@pytest.fixture
def search_run(tmp_path):
    """A search run folder as the search writes it (RunFolder), with a best cell that is not
    the recipe's default model."""
    from nasforge.search.run_folder import RunFolder
    from nasforge.search_spaces import NasNetSpace

    space = NasNetSpace(num_blocks=2, ops=("sep_conv_3x3", "max_pool_3x3", "identity"))
    arch = space.sample(np.random.default_rng(0))
    folder = RunFolder(tmp_path / "search-x").create({"space": "nasnet"})
    folder.write_best(space.to_graph(arch, name="found").to_json())
    return folder


@pytest.mark.parametrize("word", [[], ["best_cell"]])
def test_train_run_trains_the_runs_best_cell(fx, tmp_path, capsys, search_run, word):
    from nasforge import build_model

    rc, out, err = _run(capsys, *word, "--run", search_run.path, "--recipe", "smoke", "--data",
                        fx["tree"], "--epochs", "1", "--runs-dir", tmp_path / "runs", "--json",
                        "--cache-dir", tmp_path / "c")
    assert rc == 0, err
    res = json.loads(out)
    assert res["model"] == str(search_run.best_path) and res["status"] == "ok"
    run = next((tmp_path / "runs").iterdir())
    assert run.name.startswith("search-x-best_cell-smoke-")
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["search_run"] == str(search_run.path)
    # the trained network is the run's cell, not the recipe's nasnet_a
    expected = build_model(str(search_run.best_path), None, num_classes=3,
                           **config["model"]["overrides"])
    assert config["model"]["params"] == sum(p.numel() for p in expected.parameters())


def test_train_run_bad_input(tmp_path, capsys, search_run):
    _bad(capsys, tmp_path, "--run", tmp_path / "nope", match="no such folder")
    (tmp_path / "plain").mkdir()
    _bad(capsys, tmp_path, "--run", tmp_path / "plain", match="is not a search run folder")
    search_run.best_path.unlink()
    _bad(capsys, tmp_path, "--run", search_run.path, match="has no best_cell.json yet")
    _bad(capsys, tmp_path, "nasnet_a", "--run", search_run.path, match="not both")
    _bad(capsys, tmp_path, "best_cell", match="best_cell needs --run")
