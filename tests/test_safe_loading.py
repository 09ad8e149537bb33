"""Loading is safe by construction: no file of a run folder or checkpoint directory can run
code when nasforge reads it.

For every file nasforge reads back from a run (trainer checkpoints, ``nasforge train``'s run
folder, a search trial's Ray checkpoint, ``searcher.pt`` of every searcher, a search's
``config.json`` / ``trials.jsonl`` / ``best_cell.json``, a transfer's plan and model
checkpoints, ``metrics.jsonl`` resync, the image cache) a malicious pickle is planted: its
``__reduce__`` creates a marker file when unpickled by Python's standard unpickler (checked
first, so the payload is known to work). Loading must refuse the file with one line naming it
(exit code 2 and no traceback through the CLI) and the marker must never appear. Then: an Optuna
search saved to a run folder holds no pickled object anywhere and resumes to exactly the
proposals of an uninterrupted searcher.
"""
from __future__ import annotations

import base64
import io
import json
import pickle
import pickletools
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import make_images, write_imagefolder

from conftest import run_cli
from nasforge.cli import main
from nasforge.controllers import SEARCHERS, Result, get_searcher
from nasforge.safe_load import RefusedFileError, load_plain
from nasforge.search import RunFolder, SearchConfig
from nasforge.search.runner import FORMAT, make_searcher
from nasforge.search_spaces import NasNetSpace
from nasforge.train import (CHECKPOINT_NAME, Recipe, get_recipe, load_checkpoint, sync_metrics,
                            train)

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = NasNetSpace(num_blocks=2)


class Payload:
    """Unpickled by the standard unpickler, this opens (creates) ``marker`` for writing."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a planted pickle ran code"


def raw_pickle(marker, protocol=pickle.HIGHEST_PROTOCOL) -> bytes:
    return pickle.dumps(Payload(marker), protocol=protocol)


def torch_file_with(marker, state) -> bytes:
    """A ``torch.save`` file of ``state`` (a real state) with the payload hidden inside."""
    buf = io.BytesIO()
    torch.save({**state, "extra": [Payload(marker)]}, buf)
    return buf.getvalue()


def test_the_payload_runs_code_when_unpickled(tmp_path):
    """The planted payload is live: Python's unpickler and torch's full unpickler create the
    marker (so the tests below fail if a loader uses either)."""
    marker = tmp_path / "m1"
    pickle.loads(raw_pickle(marker))
    assert marker.exists()
    marker2 = tmp_path / "m2"
    path = tmp_path / "x.pt"
    path.write_bytes(torch_file_with(marker2, {"epoch": 1}))
    torch.load(path, weights_only=False)
    assert marker2.exists()


def _one_line(message: str, path: Path) -> None:
    assert "\n" not in message.strip() and str(path) in message, message


def _cli_refuses(capsys, argv, path: Path, expect: str = "") -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("nasforge: error:"), err
    assert str(path) in lines[0] and expect in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------- checkpoints
def _tiny_data():
    from nasforge.data import make_splits, synthetic

    train_set = synthetic.make_images(64, size=8, seed=1)
    test_set = synthetic.make_images(16, size=8, seed=2)
    return make_splits(train_set, test_set, synthetic.CLASSES, split="search", val_size=16,
                       seed=0)


RECIPE = Recipe(name="safe-load-test").replace(epochs=1, batch_size=16, lr=0.05)


def _real_checkpoint(tmp_path) -> dict:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    train(model, _tiny_data(), RECIPE, device="cpu", seed=0, checkpoint_dir=tmp_path / "real")
    return load_checkpoint(tmp_path / "real" / CHECKPOINT_NAME)


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    return _real_checkpoint(tmp_path_factory.mktemp("ckpt"))


def test_a_real_checkpoint_is_plain_data(real_checkpoint):
    """What the trainer writes loads with weights_only=True (its RNG states are tensors)."""
    assert real_checkpoint["epoch"] == 1
    assert isinstance(real_checkpoint["torch_rng"], torch.Tensor)


@pytest.mark.parametrize("form", ["raw pickle", "inside a checkpoint"])
def test_trainer_refuses_a_planted_checkpoint(form, tmp_path, marker, real_checkpoint):
    ckpt = tmp_path / "run" / CHECKPOINT_NAME
    ckpt.parent.mkdir()
    ckpt.write_bytes(raw_pickle(marker) if form == "raw pickle"
                     else torch_file_with(marker, real_checkpoint))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(RefusedFileError) as e:
        train(model, _tiny_data(), RECIPE, device="cpu", seed=0, checkpoint_dir=ckpt.parent)
    _one_line(str(e.value), ckpt)
    assert "refusing to load checkpoint" in str(e.value)


@pytest.mark.parametrize("form", ["raw pickle", "inside a checkpoint"])
def test_metrics_resync_refuses_a_planted_checkpoint(form, tmp_path, marker, real_checkpoint):
    ckpt = tmp_path / CHECKPOINT_NAME
    ckpt.write_bytes(raw_pickle(marker) if form == "raw pickle"
                     else torch_file_with(marker, real_checkpoint))
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 1}\n')
    with pytest.raises(RefusedFileError) as e:
        sync_metrics(metrics, ckpt)
    _one_line(str(e.value), ckpt)
    assert metrics.read_text() == '{"epoch": 1}\n'  # nothing rewritten


def test_metrics_resync_refuses_a_binary_metrics_file(tmp_path, marker, real_checkpoint):
    ckpt = tmp_path / CHECKPOINT_NAME
    torch.save(real_checkpoint, ckpt)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(raw_pickle(marker))
    with pytest.raises(RefusedFileError) as e:
        sync_metrics(metrics, ckpt)
    _one_line(str(e.value), metrics)


def test_metrics_resync_keeps_checkpointed_lines_and_fills_missing_ones(tmp_path,
                                                                         real_checkpoint):
    """The one resync rule (nasforge train and transfer): lines beyond the checkpoint go,
    kept lines keep their extra fields, missing ones come from the checkpoint's history."""
    state = dict(real_checkpoint, history=[{"epoch": 1, "a": 1}, {"epoch": 2, "a": 2}])
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 1, "a": 1, "train_s": 3.0}\n')
    assert sync_metrics(metrics, tmp_path / CHECKPOINT_NAME) == 2
    assert [json.loads(x) for x in metrics.read_text().splitlines()] == \
        [{"epoch": 1, "a": 1, "train_s": 3.0}, {"epoch": 2, "a": 2}]
    metrics.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')  # a kill after epoch 3
    sync_metrics(metrics, tmp_path / CHECKPOINT_NAME)
    assert len(metrics.read_text().splitlines()) == 2


@pytest.mark.parametrize("form", ["raw pickle", "inside a checkpoint"])
def test_nasforge_train_resume_refuses_a_planted_checkpoint(form, tmp_path, capsys, marker,
                                                            real_checkpoint):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    ckpt = run / CHECKPOINT_NAME
    ckpt.write_bytes(raw_pickle(marker) if form == "raw pickle"
                     else torch_file_with(marker, real_checkpoint))
    _cli_refuses(capsys, ["train", "--recipe", "smoke", "--data", "synthetic", "--runs-dir",
                          tmp_path / "runs", "--name", "r1"], ckpt, "refusing to load")
    assert not (run / "config.json").exists()  # refused before anything was written


def test_nasforge_train_refusal_has_no_traceback_or_warning(tmp_path, marker):
    """In a fresh interpreter: stderr is the one line (torch's pickle-protocol warning and
    its multi-line explanation are not shown)."""
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / CHECKPOINT_NAME).write_bytes(raw_pickle(marker))
    out = run_cli("train", "--recipe", "smoke", "--data", "synthetic", "--runs-dir",
                  tmp_path / "runs", "--name", "r1", timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and "refusing to load checkpoint" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_search_trial_refuses_a_planted_ray_checkpoint(tmp_path, marker, monkeypatch,
                                                       real_checkpoint):
    """A retried trial restores the checkpoint Ray hands it; a planted one is refused (the
    trial ends without loading it, and the marker never appears)."""
    from ray import tune

    from nasforge.search.trial import TrialSettings, run_trial

    restored = tmp_path / "ray_ckpt"
    restored.mkdir()
    (restored / CHECKPOINT_NAME).write_bytes(torch_file_with(marker, real_checkpoint))

    class FakeCheckpoint:
        @contextmanager
        def as_directory(self):
            yield str(restored)

    reports = []
    monkeypatch.setattr(tune, "get_checkpoint", lambda: FakeCheckpoint())
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reports.append(metrics))
    settings = TrialSettings(space=SPACE, recipe=RECIPE, epochs=1, setting="cifar",
                             overrides=(("N", 1), ("filters", 8)), seed=0, threads=1)
    tokens = [0] * len(SPACE.decisions())
    try:
        run_trial({"nasforge": {"trial": 0, "tokens": tokens}}, _tiny_data(), settings)
        message = reports[-1]["error"]
        assert reports[-1]["final_status"] == "failed" and reports[-1]["params"] is None
    except RefusedFileError as e:  # a trial may also stop the search on such an error
        message = str(e)
    assert "refusing to load checkpoint" in message and CHECKPOINT_NAME in message


# ---------------------------------------------------------------------------- searchers
def _searcher_state(name: str) -> dict:
    s = get_searcher(name, SPACE, seed=0)
    for p in s.ask(3):
        s.tell(p, Result.ok(val_acc=0.5))
    return s.state_dict()


@pytest.mark.parametrize("name", sorted(SEARCHERS))
@pytest.mark.parametrize("form", ["raw pickle", "inside a state"])
def test_searcher_state_refuses_a_planted_file(name, form, tmp_path, marker):
    run = RunFolder(tmp_path / "run").create({"format": FORMAT})
    path = run.path / "searcher.pt"
    path.write_bytes(raw_pickle(marker) if form == "raw pickle"
                     else torch_file_with(marker, _searcher_state(name)))
    with pytest.raises(RefusedFileError) as e:
        run.load_searcher()
    _one_line(str(e.value), path)
    # the library's own load_state refuses it the same way
    from nasforge.controllers import load_state

    with pytest.raises(RefusedFileError, match="refusing to load"):
        load_state(get_searcher(name, SPACE, seed=0), path)


def _search_run(tmp_path, searcher: str, **options) -> tuple[Path, SearchConfig]:
    config = SearchConfig(searcher=searcher, trials=4, recipe="smoke", data="synthetic",
                          gpus=0, cpus_per_trial=1, seed=0, searcher_options=options)
    run = RunFolder(tmp_path / "run").create({"format": FORMAT, "search": config.to_dict(),
                                              "recipe": get_recipe("smoke").to_dict()})
    return run.path, config


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_search_resume_refuses_a_planted_searcher_state(name, tmp_path, capsys, marker):
    run, config = _search_run(tmp_path, name)
    _, searcher = make_searcher(config)
    (run / "searcher.pt").write_bytes(torch_file_with(marker, searcher.state_dict()))
    _cli_refuses(capsys, ["search", "--resume", run], run / "searcher.pt", "refusing to load")


def _find_optuna_state(state: dict) -> dict:
    while state.get("searcher") != "optuna":
        state = state["inner"]
    return state


def test_a_pickled_optuna_state_of_an_earlier_release_is_refused_unread(tmp_path, capsys,
                                                                        marker):
    """Earlier releases stored the study as a base64 pickle; it is refused, never unpickled."""
    run, config = _search_run(tmp_path, "optuna")
    _, searcher = make_searcher(config)
    state = searcher.state_dict()
    optuna_state = _find_optuna_state(state)
    optuna_state["searcher_state"] = {
        "study_name": "x", "sampler_class": "TPESampler",
        "study": base64.b64encode(raw_pickle(marker)).decode("ascii")}
    torch.save(state, run / "searcher.pt")
    line = _cli_refuses(capsys, ["search", "--resume", run], run, "pickle")
    assert "searcher.pt" in line


@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_an_encoded_pickle_in_optuna_trial_attributes_is_refused(encoding, marker):
    """Optuna's CMA-ES unpickles a hex pickle it finds in a trial's system attributes; a
    restored state carrying one (in any trial or study attribute) is refused."""
    s = get_searcher("optuna", SPACE, seed=0, dedup=False, sampler="cmaes")
    for p in s.ask(3):
        s.tell(p, Result.ok(val_acc=0.5))
    blob = raw_pickle(marker)
    encoded = blob.hex() if encoding == "hex" else base64.b64encode(blob).decode("ascii")
    state = s.state_dict()
    state["searcher_state"]["trials"][-1]["system_attrs"]["cma:optimizer:0"] = encoded
    with pytest.raises(ValueError, match="encoded pickle"):
        get_searcher("optuna", SPACE, seed=0, dedup=False, sampler="cmaes").load_state_dict(
            json.loads(json.dumps(state)))
    state = s.state_dict()
    state["searcher_state"]["study_user_attrs"]["note"] = encoded
    with pytest.raises(ValueError, match="encoded pickle"):
        get_searcher("optuna", SPACE, seed=0, dedup=False, sampler="cmaes").load_state_dict(
            state)


# ------------------------------------------------------------------ search run JSON files
# JSON cannot run code: what can go wrong with a config.json read back is a file that is not
# JSON text, or JSON that names what nasforge does not have or holds the wrong types. Each is
# refused in one line (exit 2), before the run folder is touched.
@pytest.mark.parametrize("content, expect", [
    (b"\x80\x04\x95 binary", "not UTF-8 text"),
    (b'{"format": "nasforge-search-v1", "search": {', "not JSON"),
    (b"[1, 2]", "not a JSON object"),
], ids=["binary", "truncated", "a list"])
@pytest.mark.parametrize("command", ["resume", "compare"])
def test_a_search_config_that_is_not_a_json_object_is_refused(content, expect, command,
                                                                tmp_path, capsys):
    run, _ = _search_run(tmp_path, "random")
    (run / "config.json").write_bytes(content)
    argv = ["search", "--resume", run] if command == "resume" else ["compare", run]
    line = _cli_refuses(capsys, argv, run / "config.json", expect)
    assert "search config" in line


def _edit(key, value):
    return lambda saved: saved["search"].__setitem__(key, value)


def _edit_recipe(key, value):
    return lambda saved: saved["recipe"].__setitem__(key, value)


@pytest.mark.parametrize("edit, expect", [
    (_edit("searcher", "nope"), "unknown searcher 'nope'"),
    (_edit("space", "nope"), "unknown search space 'nope'"),
    (_edit("space", "../../../etc/passwd"), "unknown search space '../../../etc/passwd'"),
    (_edit("scheduler", "nope"), "unknown scheduler 'nope'"),
    (_edit("objectives", ["nope:max"]), "unknown metric 'nope'"),
    (_edit("bogus", 1), "search config: unknown key 'bogus'"),
    (_edit("trials", "many"), "search config: a field has the wrong type"),
    (_edit("faults", [["crash"]]), "search config: a field has the wrong type"),
    (_edit("trials", 0), "at least 1, got 0"),
    (_edit("searcher_options", {"bogus": 1}), "searcher 'random'"),
    (_edit_recipe("bogus", 1), "recipe is malformed: recipe: unknown key 'bogus'"),
    (_edit_recipe("lr", "fast"), "recipe is malformed"),
    (lambda saved: saved.__setitem__("format", "other"), "is not a nasforge search config"),
    (lambda saved: saved.pop("search"), "is not a nasforge search config"),
], ids=["unknown searcher", "unknown space", "space as a path", "unknown scheduler",
        "unknown metric", "extra key", "trials not a number", "faults not pairs",
        "no trials", "unknown searcher option", "recipe extra key", "recipe lr not a number",
        "other format", "no search section"])
def test_a_resumed_search_config_naming_what_nasforge_lacks_is_refused(edit, expect, tmp_path,
                                                                       capsys):
    """Every field of a saved config is checked as strictly as a flag: names go through the
    registries (a name is never a path), keys through the dataclass, types through the
    config's own checks. The run folder is left as it was."""
    run, _ = _search_run(tmp_path, "random")
    saved = json.loads((run / "config.json").read_text())
    edit(saved)
    (run / "config.json").write_text(json.dumps(saved))
    before = sorted(p.name for p in run.iterdir())
    rc = main(["search", "--resume", str(run)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("nasforge: error:") and expect in err, err
    assert sorted(p.name for p in run.iterdir()) == before
    assert (run / "trials.jsonl").read_text() == ""


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("command", ["compare", "export"])
def test_planted_trial_records_are_refused_or_skipped(protocol, command, tmp_path, capsys,
                                                      marker):
    """A binary trials.jsonl is refused; a text one (protocol 0 is ASCII) holds no JSON
    record, so its lines are skipped as torn lines and no trial is found."""
    run, _ = _search_run(tmp_path, "random")
    # ended by a newline: a file without one loses its last line as a torn write on --resume
    (run / "trials.jsonl").write_bytes(raw_pickle(marker, protocol) + b"\n")
    argv = ["compare", run] if command == "compare" else \
        ["export", "best_cell", "--run", run, "--format", "json", "-o", tmp_path / "o.json"]
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    if protocol == 0:
        assert rc in (0, 2), err  # compare: an empty row; export: no finished trial
        assert "Traceback" not in err and not (tmp_path / "o.json").exists()
    else:
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert str(run / "trials.jsonl") in err and "not UTF-8" in err


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_a_planted_best_cell_is_refused(protocol, tmp_path, capsys, marker):
    path = tmp_path / "best_cell.json"
    path.write_bytes(raw_pickle(marker, protocol))
    _cli_refuses(capsys, ["info", path], path, "")
    from nasforge.transfer.models import resolve_cell

    run, _ = _search_run(tmp_path, "random")
    (run / "best_cell.json").write_bytes(raw_pickle(marker, protocol))
    with pytest.raises(ValueError) as e:  # a transfer from the run folder reads best_cell.json
        resolve_cell(str(run))
    _one_line(str(e.value), run / "best_cell.json")


# ---------------------------------------------------------------------------- transfer
@pytest.fixture
def transfer_run(tmp_path):
    from dataclasses import asdict

    from nasforge.transfer import TransferConfig
    from nasforge.transfer.run import FORMAT as TRANSFER_FORMAT

    tree = write_imagefolder(tmp_path / "tree", make_images(6, seed=3, size=16, num_classes=2),
                             make_images(4, seed=4, size=16, num_classes=2), classes=("a", "b"))
    config = TransferConfig(cell="nasnet_a", data=str(tree), val_split="test",
                            baselines=("resnet18",))
    plan = {"format": TRANSFER_FORMAT, "config": asdict(config),
            "data": {"root": str(tree), "val_split": "test", "classes": ["a", "b"]},
            "models": [{"spec": {"label": "resnet18"}, "info": {}, "recipe": {}}]}
    run = tmp_path / "runs" / "t1"
    (run / "resnet18").mkdir(parents=True)
    (run / "transfer.json").write_text(json.dumps(plan))
    return run


def _transfer_resume(run):
    return ["transfer", "--resume", "--name", run.name, "--runs-dir", run.parent]


@pytest.mark.parametrize("form", ["raw pickle", "inside a checkpoint"])
def test_transfer_resume_refuses_a_planted_checkpoint(form, transfer_run, capsys, marker,
                                                      real_checkpoint):
    ckpt = transfer_run / "resnet18" / CHECKPOINT_NAME
    ckpt.write_bytes(raw_pickle(marker) if form == "raw pickle"
                     else torch_file_with(marker, real_checkpoint))
    _cli_refuses(capsys, _transfer_resume(transfer_run), ckpt, "refusing to load checkpoint")
    from nasforge.transfer.result import finish_model

    # rank 0's result.json from the final checkpoint
    with pytest.raises(RefusedFileError, match="refusing to load checkpoint"):
        finish_model({"spec": {}, "info": {}, "recipe": {}}, ckpt.parent)


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL])
def test_transfer_resume_refuses_a_planted_plan(protocol, transfer_run, capsys, marker):
    (transfer_run / "transfer.json").write_bytes(raw_pickle(marker, protocol))
    _cli_refuses(capsys, _transfer_resume(transfer_run), transfer_run / "transfer.json",
                 "transfer plan")


# ---------------------------------------------------------------------------- data cache
def test_a_planted_image_cache_is_rebuilt_not_unpickled(tmp_path, marker):
    from nasforge.data import load_data

    tree = write_imagefolder(tmp_path / "tree", make_images(8, seed=3, size=16, num_classes=2),
                             make_images(4, seed=4, size=16, num_classes=2), classes=("a", "b"))
    first = load_data(str(tree), split="final", cache_dir=tmp_path / "cache")
    caches = list((tmp_path / "cache").rglob("*.npz"))
    assert caches
    for path in caches:
        path.write_bytes(raw_pickle(marker))
    again = load_data(str(tree), split="final", cache_dir=tmp_path / "cache")
    assert torch.equal(torch.as_tensor(first.train.images), torch.as_tensor(again.train.images))


# --------------------------------------------------- Optuna: no pickle, same proposals
_OBJECT_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ",
                   "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"}


def _assert_no_pickled_object(run: Path) -> None:
    """No file of the run starts with a pickle header; a torch file's data.pkl builds only
    plain containers, numbers and strings (no global is named, nothing is called); no string
    in it is a base64 pickle."""
    for path in run.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        assert not data.startswith(b"\x80"), f"{path} is a pickle"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for name in z.namelist():
                    if not name.endswith(".pkl"):
                        continue
                    ops = {op.name for op, _, _ in pickletools.genops(z.read(name))}
                    assert not ops & _OBJECT_OPCODES, (path, name, ops & _OBJECT_OPCODES)
    state = load_plain(run / "searcher.pt")

    def strings(v):
        if isinstance(v, dict):
            for k, x in v.items():
                yield k
                yield from strings(x)
        elif isinstance(v, list):
            for x in v:
                yield from strings(x)
        elif isinstance(v, str):
            yield v

    for s in strings(state):
        try:
            decoded = base64.b64decode(s, validate=True)
        except ValueError:
            continue
        assert not decoded.startswith(b"\x80"), "a base64 pickle in the searcher state"
    json.dumps(state)  # plain JSON data throughout


def _drive(searcher, rng, pending, n, told):
    """Asynchronous workers: 3 proposals in flight, a random one finishes (some fail, some
    are pruned), ask again. Returns the tokens asked."""
    asked = []
    for _ in range(n):
        while len(pending) < 3:
            p, = searcher.ask(1)
            pending.append(p)
            asked.append(p.tokens)
        p = pending.pop(int(rng.integers(len(pending))))
        told += 1
        result = Result.failed("x") if told % 7 == 3 else Result.pruned() if told % 11 == 5 \
            else Result.ok(val_acc=float(np.mean(np.asarray(p.tokens) == 0)) + 1e-3 * told)
        searcher.tell(p, result)
    return asked, told


@pytest.mark.parametrize("options", [
    {"sampler_kwargs": {"n_startup_trials": 4}},
    {"fast_tpe": False, "sampler_kwargs": {"n_startup_trials": 4}},
    {"sampler": "nsga2", "sampler_kwargs": {"population_size": 4}},
    {"sampler": "random"},
    {"sampler": "qmc"},
], ids=["tpe-fast", "tpe-stock", "nsga2", "random", "qmc"])
def test_optuna_search_resumes_to_the_same_proposals_without_pickle(options, tmp_path):
    """Saved to a run folder the way a search saves it (after a tell, proposals in flight),
    restored into a new searcher: the next proposals are exactly the uninterrupted ones."""
    def fresh():
        return get_searcher("optuna", SPACE, seed=7, **options)

    uninterrupted, rng = fresh(), np.random.default_rng(1)
    pending = []
    before, told = _drive(uninterrupted, rng, pending, 14, 0)
    run = RunFolder(tmp_path / "run").create({"format": FORMAT})
    run.save_searcher(uninterrupted.state_dict())
    rng_state = rng.bit_generator.state
    after, _ = _drive(uninterrupted, rng, pending, 12, told)

    _assert_no_pickled_object(run.path)
    resumed = fresh()
    resumed.load_state_dict(run.load_searcher())
    rng = np.random.default_rng()
    rng.bit_generator.state = rng_state
    in_flight = sorted(resumed.in_flight(), key=lambda p: p.id)
    assert len(in_flight) == 2
    resumed_after, _ = _drive(resumed, rng, in_flight, 12, told)
    assert len(after) >= 10 and resumed_after == after
    assert resumed.best()[0] == uninterrupted.best()[0]
    # the restore is what makes them equal: the same searcher without it proposes otherwise
    rng.bit_generator.state = rng_state
    assert _drive(fresh(), rng, [], 12, told)[0] != after


def test_optuna_state_of_a_database_study_holds_no_pickle(tmp_path):
    """With a storage URL the trials stay in the database (resume from it:
    test_controllers.py's second-process test); the state holds the study name and the
    sampler's random streams as lists."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    a = get_searcher("optuna", SPACE, seed=3, storage=url, study_name="s",
                     sampler_kwargs={"n_startup_trials": 3})
    _drive(a, np.random.default_rng(0), [], 8, 0)
    run = RunFolder(tmp_path / "run").create({"format": FORMAT})
    run.save_searcher(a.state_dict())
    state = _find_optuna_state(run.load_searcher())["searcher_state"]
    assert "trials" not in state and state["study_name"] == "s" and state["sampler_rng"]
    _assert_no_pickled_object(run.path)
