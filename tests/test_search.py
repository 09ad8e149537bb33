"""nasforge search: run folder, adapter, resume, faults, GPU scheduling, TensorBoard, CLI.

The Ray tests share one local Ray instance (2 CPUs and 2 GPUs declared on this CPU machine, so
GPU scheduling is exercised without GPUs) and train tiny children on synthetic data, one torch
thread each.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from nasforge.cli import main
from nasforge.cluster import ResourceError, check_resources
from nasforge.controllers import get_searcher
from nasforge.search import RunFolder, SearchConfig, SearchError, best_trial, read_trials
from nasforge.search.adapter import TuneSearcherAdapter
from nasforge.faults import parse_faults
from nasforge.search.run_folder import device_seconds
from nasforge.search.runner import _reconcile, plan_resources, resources_asked
from nasforge.search_spaces import get_space
from nasforge.train import get_recipe
from nasforge.train.recipes import register_recipe

from conftest import EVENT_DEADLINE_S, lines_of, run_cli, wait_for

# tiny children: NASNet N=1 F=4 on 256 synthetic images, 2 epochs, 200 validation images
TINY = register_recipe(get_recipe("smoke").replace(
    name="search-test", train_subset=256, epochs=2, batch_size=64, val_size=200,
    eval_batch_size=200, cutout=0, model_overrides=(("N", 1), ("filters", 4))))
# ASHA needs children whose epoch-1 accuracies differ: with TINY's 4 steps per epoch every
# child is still at chance (0.1) after one epoch, so 16 steps of batch 16 here, at F=8
TINY_ASHA = register_recipe(TINY.replace(name="search-test-asha", batch_size=16,
                                         warmup_epochs=0.0, drop_path_keep_prob=1.0,
                                         model_overrides=(("N", 1), ("filters", 8))))
TINY_ARGS = ["--recipe", "smoke", "--epochs", "1", "--data", "synthetic", "--val-size", "200"]


def tiny_config(**kw) -> SearchConfig:
    base = dict(searcher="random", trials=4, recipe="search-test", data="synthetic",
                gpus=0, cpus_per_trial=1, seed=0)
    base.update(kw)
    return SearchConfig(**base)


# ------------------------------------------------------------------------------ run folder
def test_trials_jsonl_append_read_and_torn_tail(tmp_path):
    run = RunFolder(tmp_path / "r").create({"format": "x"})
    for i, acc in enumerate([0.5, 0.7, 0.7]):
        run.append_trial({"trial": i, "status": "ok", "metrics": {"val_acc": acc},
                          "wall_s": 10.0, "resources": {"gpu": 0.5}})
    run.append_trial({"trial": 3, "status": "failed", "metrics": {}, "wall_s": 4.0,
                      "resources": {"gpu": 0}})
    with open(run.path / "trials.jsonl", "ab") as f:
        f.write(b'{"trial": 4, "status": "o')  # a writer killed mid-line
    records = read_trials(run.path)
    assert [r["trial"] for r in records] == [0, 1, 2, 3]
    assert best_trial(records)["trial"] == 1  # ties: the earlier trial
    assert [device_seconds(r) for r in records] == [5.0, 5.0, 5.0, 4.0]
    RunFolder.open(run.path)  # resume removes the torn tail, appends start on a fresh line
    assert (run.path / "trials.jsonl").read_bytes().endswith(b"\n")
    run.append_trial({"trial": 5, "status": "ok", "metrics": {"val_acc": 0.1}})
    assert [r["trial"] for r in read_trials(run.path)] == [0, 1, 2, 3, 5]


def test_create_refuses_an_existing_run_and_open_refuses_a_non_run(tmp_path):
    RunFolder(tmp_path / "r").create({})
    with pytest.raises(SearchError, match="already holds"):
        RunFolder(tmp_path / "r").create({})
    with pytest.raises(SearchError, match="not a search run"):
        RunFolder.open(tmp_path)
    with pytest.raises(SearchError, match="no such folder"):
        RunFolder.open(tmp_path / "nope")


def test_fault_spec_parsing():
    assert parse_faults("raise:3, kill:7,nan:0") == (("raise", 3), ("kill", 7), ("nan", 0))
    assert parse_faults(None) == ()
    with pytest.raises(ValueError, match="bad entry"):
        parse_faults("explode:1")


def test_one_fault_spelling_names_trials_and_transfer_models():
    """nasforge.faults serves search trials (by id) and transfer models (by label) alike."""
    from nasforge.faults import FaultPlan, InjectedFault, faults_from_env

    assert parse_faults("raise:resnet18,nan:*") == (("raise", "resnet18"), ("nan", -1))
    assert faults_from_env({"NASFORGE_INJECT_FAULTS": "kill:2"}) == (("kill", 2),)
    with pytest.raises(ValueError, match="bad entry 'raise:res net'"):
        parse_faults("raise:res net")
    faults = parse_faults("raise:resnet18,kill:3,broken:*")
    plans = {t: FaultPlan(faults, t, restored=False) for t in (3, "resnet18", "found")}
    assert plans[3].kinds == {"kill", "broken"}
    assert plans["resnet18"].kinds == {"raise", "broken"}
    assert plans["found"].kinds == {"broken"}
    plans["resnet18"].after_epoch(2)  # only after the first epoch
    with pytest.raises(InjectedFault, match="^injected fault: the training of resnet18 raised"):
        plans["resnet18"].after_epoch(1)
    with pytest.raises(InjectedFault, match="^injected fault: trial 3 cannot start"):
        FaultPlan(faults, 3, restored=True, name="trial 3").before_training(None)


@pytest.mark.parametrize("bad,match", [
    (dict(trials=0), "trials must be at least 1, got 0"),
    (dict(scheduler="hyperband"), "unknown scheduler"),
    (dict(gpus_per_trial=1.5), "gpus_per_trial must be a fraction of one GPU"),
    (dict(max_retries=-1), "max_retries must be >= 0, got -1"),
    (dict(epochs=0), "epochs must be at least 1, got 0"),
    (dict(max_consecutive_failures=-1), "max_consecutive_failures must be >= 0")])
def test_search_config_rejects_bad_values(bad, match):
    with pytest.raises(SearchError, match=match):
        SearchConfig(**bad)


# ---------------------------------------------------------------------------------- resources
@pytest.mark.parametrize("cluster,kw,per_trial,concurrency", [
    ({"CPU": 16, "GPU": 8}, dict(), {"cpu": 1, "gpu": 1}, 8),
    ({"CPU": 16, "GPU": 2}, dict(gpus_per_trial=0.5), {"cpu": 1, "gpu": 0.5}, 4),
    ({"CPU": 2, "GPU": 2}, dict(gpus_per_trial=0.5), {"cpu": 1, "gpu": 0.5}, 2),  # CPU-bound
    ({"CPU": 2}, dict(), {"cpu": 1, "gpu": 0.0}, 2),
    ({"CPU": 8, "GPU": 4}, dict(gpus=0, cpus_per_trial=4), {"cpu": 4, "gpu": 0.0}, 2),
])
def test_plan_resources(cluster, kw, per_trial, concurrency):
    got, n, note = plan_resources(SearchConfig(**kw), cluster)
    assert got == per_trial and n == concurrency
    assert ("CPU" in note) == (per_trial["gpu"] == 0)


def test_a_search_asking_for_more_gpus_than_the_cluster_has_is_refused():
    # ray_session's check (nasforge.cluster) with what a search asks for; the CLI names the
    # option (test_search_cli_bad_input: "--gpus 8 asked for")
    with pytest.raises(ResourceError,
                       match=r"^8 GPU\(s\) asked for, but the Ray cluster has 0 GPU\(s\)$"):
        check_resources({"CPU": 2}, **resources_asked(SearchConfig(gpus=8)))


# ------------------------------------------------------------------------------------ adapter
class _Recorder:
    def __init__(self):
        self.events = []

    def asked(self, searcher, proposal, ray_trial_id):
        self.events.append(("asked", proposal.id))

    def epoch(self, proposal, metrics):
        self.events.append(("epoch", proposal.id, metrics["epoch"]))

    def finished(self, record, traceback=None):
        self.events.append(("finished", record["trial"], record["status"]))

    def told(self, searcher, record):
        self.events.append(("told", record["trial"]))


def test_adapter_maps_ray_results_to_results_and_records():
    space = get_space("nasnet")
    searcher = get_searcher("evolution", space, seed=0, population_size=4, sample_size=2)
    rec = _Recorder()
    ad = TuneSearcherAdapter(searcher, space, rec, budget=4, resources={"cpu": 1, "gpu": 0.5})
    configs = [ad.suggest(f"r{i}") for i in range(4)]
    assert ad.suggest("r4") == "FINISHED"  # the budget
    assert [c["nasforge"]["trial"] for c in configs] == [0, 1, 2, 3]
    assert len(searcher.in_flight()) == 4
    ad.on_trial_result("r2", {"epoch": 1, "val_acc": 0.3, "training_iteration": 1})
    ad.on_trial_complete("r2", None)  # stopped by the scheduler after one report: pruned
    ad.on_trial_complete("r0", {"epoch": 2, "val_acc": 0.61, "final_status": "ok",
                                "params": 10, "mult_adds": 20, "train_s": 1.0})
    ad.on_trial_complete("r1", {"val_acc": float("nan"), "final_status": "failed",
                                "error": "training diverged"})
    ad.on_trial_complete("r3", None, error=True)  # the worker died on every attempt
    assert searcher.in_flight() == []
    assert searcher.counts == {"ok": 1, "failed": 2, "pruned": 1, "infeasible": 0}
    assert [e for e in rec.events if e[0] == "finished"] == [
        ("finished", 2, "pruned"), ("finished", 0, "ok"), ("finished", 1, "failed"),
        ("finished", 3, "failed")]
    # the searcher hears of a trial only after its record was written
    order = [e[:2] for e in rec.events if e[0] in ("finished", "told")]
    assert order[::2] == [("finished", t) for t in (2, 0, 1, 3)]
    assert searcher.best()[1].metrics["val_acc"] == 0.61


def test_reconcile_tells_recorded_trials_and_requeues_the_rest():
    space = get_space("nasnet")
    searcher = get_searcher("random", space, seed=3)
    ps = searcher.ask(3)
    records = [{"trial": ps[1].id, "status": "ok", "metrics": {"val_acc": 0.4, "epoch": 2},
                "params": 5, "mult_adds": 6}]
    requeue = _reconcile(searcher, records)
    assert [p.id for p in requeue] == [ps[0].id, ps[2].id]
    assert searcher.counts["ok"] == 1 and len(searcher.in_flight()) == 2


# ------------------------------------------------------------------------------ Ray searches
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def faulty_run(ray_cluster, tmp_path_factory):
    """6 trials: trial 1 raises, trial 2 diverges (NaN weights), trial 3's worker is killed
    after its first epoch (Ray retries it from that epoch's checkpoint)."""
    from nasforge.search.runner import run_search

    run_dir = tmp_path_factory.mktemp("search") / "faulty"
    progress = []
    summary = run_search(tiny_config(trials=6, searcher="evolution",
                                     searcher_options={"population_size": 4, "sample_size": 2},
                                     faults=(("raise", 1), ("nan", 2), ("kill", 3))),
                         run_dir, on_progress=progress.append)
    return run_dir, summary, progress


def test_faulty_search_records_every_trial_once(faulty_run):
    run_dir, summary, progress = faulty_run
    records = read_trials(run_dir)
    lines = (run_dir / "trials.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 6  # every line complete JSON, each trial once
    by_id = {r["trial"]: r for r in records}
    assert sorted(by_id) == list(range(6))
    assert by_id[1]["status"] == "failed" and "InjectedFault" in by_id[1]["error"]
    assert by_id[2]["status"] == "failed" and by_id[2]["error"] == "training diverged"
    assert by_id[3]["status"] == "ok" and by_id[3]["restored_epoch"] == 1
    for t in (0, 3, 4, 5):
        r = by_id[t]
        assert r["status"] == "ok"  # val_acc: a fraction of the 200 validation images
        assert round(r["metrics"]["val_acc"] * 200, 9).is_integer()
        assert r["epochs"] == 2 and r["params"] > 0 and r["mult_adds"] > 0
        assert r["train_s"] > 0 and r["wall_s"] >= r["train_s"]
        assert r["resources"] == {"cpu": 1, "gpu": 0.0}
    assert summary["finished"] == 6 and summary["failed"] == 2
    assert [p.finished for p in progress] == list(range(1, 7))
    assert progress[-1].eta_s == 0


def test_search_writes_the_run_folder(faulty_run):
    from nasforge.api import load_file
    from nasforge.controllers import load_state

    run_dir, summary, _ = faulty_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["search"]["trials"] == 6 and config["nasforge_version"]
    assert config["recipe"]["name"] == "search-test" and config["data"]["val"] == 200
    best = best_trial(read_trials(run_dir))
    assert summary["best_trial"] == best["trial"]
    pair = load_file(str(run_dir / "best_cell.json"))
    from nasforge.search_spaces import get_space

    assert pair.canonical_hash() == best["hash"]
    space = get_space("nasnet")
    searcher = load_state(get_searcher("evolution", space, seed=0, population_size=4,
                                       sample_size=2), run_dir / "searcher.pt")
    assert searcher.in_flight() == [] and sum(searcher.counts.values()) == 6
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert len(list((run_dir / "trials").glob("*/events.out.tfevents.*"))) == 6
    assert list((run_dir / "ray").glob("part-1/experiment_state*.json"))
    ray_trials = sorted(p.name for p in (run_dir / "ray" / "part-1").glob("trial_*"))
    assert ray_trials == [f"trial_{i:05d}" for i in range(6)]
    assert not list((run_dir / "ray").glob("part-1/trial_*/checkpoint_*"))  # dropped at the end


def test_fractional_gpus_run_four_trials_at_once(ray_cluster, tmp_path):
    from nasforge.search.runner import run_search

    run_search(tiny_config(trials=4, gpus=2, gpus_per_trial=0.5, cpus_per_trial=0.5, epochs=1),
               tmp_path / "gpus")
    records = read_trials(tmp_path / "gpus")
    assert all(r["resources"] == {"cpu": 0.5, "gpu": 0.5} for r in records)
    events = sorted([(r["started_at"], 1) for r in records] +
                    [(r["finished_at"], -1) for r in records])
    live, peak = 0, 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    assert peak == 4


def _asha_expected_pruned(first_epoch_acc: list[float], reduction_factor: float) -> set[int]:
    """Asynchronous successive halving with one rung at epoch 1 (Li et al. 2020, as Ray's
    ``ASHAScheduler`` states it): a trial reaching the rung stops when its value is below the
    (1 - 1/rf) quantile of the values recorded there before it."""
    pruned, recorded = set(), []
    for k, acc in enumerate(first_epoch_acc):
        if recorded and acc < np.percentile(recorded, (1 - 1 / reduction_factor) * 100):
            pruned.add(k)
        recorded.append(acc)
    return pruned


def test_asha_prunes_the_trials_below_the_rung_cutoff(ray_cluster, tmp_path):
    """One trial at a time (the fixture's cluster declares 2 GPUs; this search may use 1, a
    whole one per trial, and the children train on one CPU thread), so trials reach ASHA's rung
    (epoch 1 of 2: grace period 1, reduction factor 3) in trial order; three trials of
    distinct cells (at seed 0 the third stops at the rung: 0.1 after 0.1 and 0.285, measured).
    Every trial whose epoch-1 accuracy is below the cutoff of those before it must stop there,
    as pruned, and the others run to the end."""
    from nasforge.search.runner import run_search

    run_dir = tmp_path / "asha"
    # (2 CPUs per trial would serialize them too, but 2 torch threads per child are several
    # times slower than 1 on a busy 2-core machine)
    summary = run_search(tiny_config(trials=3, scheduler="asha", epochs=2, gpus=1,
                                     gpus_per_trial=1, recipe="search-test-asha"), run_dir)
    records = sorted(read_trials(run_dir), key=lambda r: r["trial"])
    assert [r["trial"] for r in records] == list(range(3)) and summary["finished"] == 3
    curves = []  # val_acc after epoch 1 of each trial, from Ray's own per-trial result log
    for r in records:
        lines = (run_dir / "ray" / "part-1" / f"trial_{r['trial']:05d}" / "result.json")
        first = [json.loads(x) for x in lines.read_text().splitlines() if x.strip()][0]
        assert first["epoch"] == 1
        curves.append(first["val_acc"])
    expected = _asha_expected_pruned(curves, reduction_factor=3)
    assert expected, f"this seed's curves {curves} would not exercise pruning"
    assert {r["trial"] for r in records if r["status"] == "pruned"} == expected
    assert all(r["epochs"] == 1 for r in records if r["status"] == "pruned")
    assert all(r["status"] == "ok" and r["epochs"] == 2 for r in records
               if r["trial"] not in expected)
    assert summary["pruned"] == len(expected)


def test_resume_of_a_finished_run_runs_nothing(faulty_run, ray_cluster):
    from nasforge.search.runner import run_search

    run_dir, _, _ = faulty_run
    before = (run_dir / "trials.jsonl").read_bytes()
    summary = run_search(None, run_dir, resume=True)
    assert summary["finished"] == 6 and (run_dir / "trials.jsonl").read_bytes() == before


# ------------------------------------------------------------------ objectives and constraints
@pytest.fixture(scope="module")
def constrained_run(ray_cluster, tmp_path_factory):
    """Minimize mult-adds under a params bound (checked before training) and an accuracy
    floor (checked after), with ASHA: the median params of the first six random proposals is
    the bound, so about half of them are refused."""
    from nasforge.search.objectives import ModelSetting, measure_static
    from nasforge.search.runner import run_search

    space = get_space("nasnet")
    setting = ModelSetting("cifar", 10, 32, 3, tuple(sorted(TINY.overrides.items())))
    params = [measure_static(("params",), space.to_graph(p.arch), setting)["params"]
              for p in get_searcher("random", space, seed=0).ask(6)]
    bound = float(np.median(params))
    run_dir = tmp_path_factory.mktemp("constrained") / "run"
    config = tiny_config(trials=2, epochs=1, scheduler="asha", objectives=("mult_adds:min",),
                         constraints=(f"params<={bound!r}", "val_acc>=0"))
    summary = run_search(config, run_dir)
    return run_dir, summary, params, bound, config


def test_a_constrained_search_never_trains_an_infeasible_child(constrained_run):
    """The proposals over the params bound are recorded as infeasible with their measured
    params and the reason, and never reach the trainer: no Ray trial, no trial events, no
    training time; the budget counts only trained children, each within the bound by the
    trainer's own count."""
    run_dir, summary, params, bound, _ = constrained_run
    records = read_trials(run_dir)
    infeasible = [r for r in records if r["status"] == "infeasible"]
    trained = [r for r in records if r["status"] != "infeasible"]
    # (records are in finishing order: two children train at once)
    assert sorted(r["trial"] for r in trained) == \
        [i for i, p in enumerate(params) if p <= bound][:2]
    assert [r["trial"] for r in infeasible] == [i for i, p in enumerate(params[:max(
        r["trial"] for r in trained)]) if p > bound]
    assert infeasible, "the bound refused nothing: the test shows nothing"
    for r in infeasible:
        assert r["metrics"]["params"] == params[r["trial"]] and r["train_s"] == 0
        assert r["error"] == f"params={params[r['trial']]:.4g} violates params<={bound!r}"
        assert not (run_dir / "ray" / "part-1" / f"trial_{r['trial']:05d}").exists()
        assert not (run_dir / "trials" / f"{r['trial']:05d}").exists()
    for r in trained:
        assert r["status"] == "ok" and r["params"] <= bound and r["feasible"] is True
        assert r["params"] == r["metrics"]["params"]  # the screen counted what was trained
    assert summary["finished"] == 2 and summary["infeasible"] == len(infeasible)


def test_a_search_for_fewest_mult_adds_follows_it_everywhere(constrained_run, capsys):
    from nasforge.cli.compare import summarize
    from nasforge.search.runner import make_scheduler

    run_dir, summary, _, _, config = constrained_run
    records = read_trials(run_dir)
    fewest = min((r for r in records if r["status"] == "ok"), key=lambda r: r["mult_adds"])
    assert summary["best_trial"] == fewest["trial"] and summary["best"] == fewest["mult_adds"]
    assert json.loads((run_dir / "best_cell.json").read_text())["normal"] == \
        fewest["arch"]["normal"]
    scheduler = make_scheduler(config, 1)
    assert (scheduler.metric, scheduler._mode) == ("mult_adds", "min")
    ray_results = [json.loads(line) for r in records if r["status"] == "ok" for line in
                   (run_dir / "ray" / "part-1" / f"trial_{r['trial']:05d}" / "result.json")
                   .read_text().splitlines() if line.strip()]
    assert ray_results and all("mult_adds" in x for x in ray_results)  # ASHA's metric
    row = summarize(run_dir)
    assert row["best"] == fewest["mult_adds"] and row["infeasible"] == summary["infeasible"]


def test_resume_keeps_the_objectives_and_refuses_others(constrained_run, capsys):
    from nasforge.cli import main
    from nasforge.search.objectives import Goal
    from nasforge.search.runner import run_search

    run_dir, _, _, _, config = constrained_run
    saved = SearchConfig.from_dict(json.loads((run_dir / "config.json").read_text())["search"])
    assert saved.goal == config.goal
    with pytest.raises(SearchError, match="cannot continue with objectives val_acc:max"):
        run_search(None, run_dir, resume=True, expect_goal=Goal())
    assert main(["search", "--resume", str(run_dir), "--objective", "val_acc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the run searches objectives mult_adds:min" in err[0], err
    before = (run_dir / "trials.jsonl").read_bytes()
    assert main(["search", "--resume", str(run_dir), "--objective", "mult_adds:min",
                 *sum((["--constraint", c] for c in config.constraints), [])]) == 0
    assert (run_dir / "trials.jsonl").read_bytes() == before


# ------------------------------------------------------------------------------ TensorBoard
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: bytes | None = None):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_tensorboard_serves_scalars_and_hparams(faulty_run, tmp_path):
    run_dir, _, _ = faulty_run
    port = _free_port()
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir",
                           str(run_dir), "--host", "127.0.0.1", "--port", str(port),
                           "--reload_interval", "0"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + EVENT_DEADLINE_S  # ends as soon as the tags are served
        tags = None
        while time.time() < deadline:
            try:
                tags = _get(f"{base}/data/plugin/scalars/tags")
                if "." in tags and any("val_acc" in t for r in tags.values() for t in r):
                    break
            except OSError:
                pass
            time.sleep(1)
        assert tags is not None, "tensorboard did not answer"
        search_tags = set(tags["."])
        assert {"search/best_val_acc", "search/best_val_acc_by_device_s", "search/failed",
                "searcher/population_best", "searcher/duplicate_hits"} <= search_tags
        trial_runs = [r for r in tags if r.startswith("trials/")]
        assert len(trial_runs) == 6
        assert {"val_acc", "train_loss", "hparams/val_acc"} <= set(tags["trials/00000"])
        exp = _get(f"{base}/data/plugin/hparams/experiment",
                   json.dumps({"experimentName": ""}).encode())
        names = {h["name"] for h in exp["hparamInfos"]}
        assert {"searcher", "hash", "params", "mult_adds"} <= names
        assert [m["name"]["tag"] for m in exp["metricInfos"]] == ["hparams/val_acc"]
        images = _get(f"{base}/data/plugin/images/tags")
        assert {"search/val_acc_vs_mult_adds", "search/best_cell"} <= set(images["."])
    finally:
        tb.kill()
        tb.wait()


# -------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("args,match,own_process", [
    (["--space", "nasbench101"], "unknown search space 'nasbench101'", False),
    (["--searcher", "bayes"], "unknown searcher 'bayes'", False),
    (["--trials", "0"], "trials must be at least 1, got 0 (option --trials)", False),
    (["--resume", "."], "not a search run folder", False),
    # in a process of their own: they start or reach Ray (which must not meet the module's
    # local Ray instance), and what Ray logs to stderr on the way counts too
    (["--address", "127.0.0.1:9"], "cannot connect to the Ray cluster", True),
    (["--gpus", "8"], "--gpus 8 asked for", True),
])
def test_search_cli_bad_input(args, match, own_process, tmp_path, capsys):
    argv = ["search", *TINY_ARGS, "--runs-dir", str(tmp_path), *args]
    if own_process:
        r = run_cli(*argv, timeout=180)
        code, err = r.returncode, r.stderr
    else:  # the interpreter start (torch's import) is most of a subprocess's time
        code, err = main(argv), capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], err
    assert not list(tmp_path.glob("*/config.json"))  # nothing written for bad input


# 3 one-epoch trials, 2 at a time: the kill comes after the first and before the third finishes
KILLED_TRIALS = 3
DRIVER = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]  # the tests and the checkout (like `python -m`)
from test_search import tiny_config   # registers the tiny recipe
from nasforge.search.runner import run_search
run_search(tiny_config(trials={trials}, searcher="rl", epochs=1, address={address!r}), {run!r})
"""


@pytest.mark.parametrize("cluster", ["joined", pytest.param("own", marks=pytest.mark.slow)])
def test_driver_sigkill_then_resume(cluster, request, tmp_path, monkeypatch, capsys):
    """A search driver is SIGKILLed mid-search (no clean-up code runs); `--resume` (the saved
    recipe, not the registry's) finishes the budget with every finished trial recorded once
    and none trained again. "own": the driver started a local Ray, killed with it (one
    process group), and the resume is `nasforge search --resume` in a fresh interpreter;
    "joined" (the fast twin): the driver joined this module's cluster, and the resume runs
    here, on that cluster, with the tiny recipe taken out of the registry."""
    address = None
    if cluster == "joined":
        address = request.getfixturevalue("ray_cluster").get_runtime_context().gcs_address
    run_dir = tmp_path / "killed"
    script = tmp_path / "driver.py"
    here = Path(__file__).resolve().parent
    script.write_text(DRIVER.format(tests=str(here), root=str(here.parent), run=str(run_dir),
                                    trials=KILLED_TRIALS, address=address))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    trials = run_dir / "trials.jsonl"
    try:
        wait_for(lambda: lines_of(trials) >= 1, proc, "the first trial's record")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = {r["trial"]: r for r in read_trials(run_dir)}
    assert 1 <= len(done_before) < KILLED_TRIALS
    if cluster == "own":
        r = run_cli("search", "--resume", run_dir, "--json", timeout=600)
        assert r.returncode == 0, r.stderr
        stdout = r.stdout
    else:
        from nasforge.train.recipes import RECIPES

        monkeypatch.delitem(RECIPES, TINY.name)
        assert main(["search", "--resume", str(run_dir), "--json"]) == 0
        stdout = capsys.readouterr().out
    records = read_trials(run_dir)
    assert len(trials.read_text().splitlines()) == len(records) == KILLED_TRIALS
    assert len({rec["trial"] for rec in records}) == KILLED_TRIALS
    for t, rec in done_before.items():  # finished trials were not trained again
        assert [x for x in records if x["trial"] == t] == [rec]
    assert json.loads(stdout)["finished"] == KILLED_TRIALS
    assert len(list((run_dir / "ray").glob("part-*"))) == 2


def test_compare_cli(faulty_run, tmp_path, capsys):
    run_dir, summary, _ = faulty_run
    assert main(["compare", str(run_dir), "--json"]) == 0
    row, = json.loads(capsys.readouterr().out)
    assert row["finished"] == 6 and row["failed"] == 2 and row["searcher"] == "evolution"
    assert row["best_val_acc"] == summary["best_val_acc"]
    # the same summary computed here from trials.jsonl: finishing order, the first trial to
    # reach the best val_acc, CPU trials' device time = their wall time
    lines = (run_dir / "trials.jsonl").read_text().splitlines()
    records = sorted((json.loads(x) for x in lines), key=lambda r: r["finished_at"])
    accs = [r["metrics"]["val_acc"] if r["status"] == "ok" else None for r in records]
    best = max(a for a in accs if a is not None)
    at = accs.index(best)
    wall = [r["wall_s"] for r in records]
    assert [r["resources"]["gpu"] for r in records] == [0] * 6
    assert row["best_val_acc"] == row["best"] == best
    assert row["finished"] == len(records) == 6
    assert row["failed"] == sum(r["status"] == "failed" for r in records) == 2
    assert row["pruned"] == row["infeasible"] == 0
    assert row["trials_to_best"] == at + 1
    assert row["device_hours_to_best"] == pytest.approx(sum(wall[:at + 1]) / 3600, rel=1e-9)
    assert row["device_hours"] == pytest.approx(sum(wall) / 3600, rel=1e-9)
    assert row["wall_s"] == pytest.approx(max(r["finished_at"] for r in records)
                                          - min(r["started_at"] for r in records), rel=1e-9)
    assert row["budget"] == 6 and row["objective"] == "val_acc:max"
    assert row["front_size"] is row["hypervolume"] is None
    assert main(["compare", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "tensorboard --logdir" in out and "evolution" in out
    assert main(["compare", str(run_dir), str(tmp_path)]) == 2
    assert "not a search run folder" in capsys.readouterr().err


# ------------------------------------------------------------------ broken and stopped searches
def _rec(trial, status="failed", error="ValueError: no weights for cell 3", failure="error"):
    if status != "failed":
        return {"trial": trial, "status": status, "metrics": {"val_acc": 0.5}}
    return {"trial": trial, "status": status, "error": error, "failure": failure}


A, B, C = "ValueError: cell 3 has 2 inputs", "KeyError: 'sep_conv_9x9'", "OSError: [Errno 5] I/O"
# (records in finishing order, limit, index of the record after which the search is broken or
# None, True when the first-trials rule decided)
WATCH_CASES = {
    "three alike in a row": ([_rec(0, "ok"), _rec(1), _rec(2), _rec(3)], 3, 3, False),
    "numbers differ, same error": (
        [_rec(0, "ok")] + [_rec(i, error=f"ValueError: trial {i} needs {i * 1.5} GB at 0x{i:x}")
                           for i in range(1, 4)], 3, 3, False),
    "an ok trial restarts the count": (
        [_rec(0), _rec(1), _rec(2, "ok"), _rec(3), _rec(4)], 3, None, None),
    "a pruned trial restarts the count": (
        [_rec(0, "ok"), _rec(1), _rec(2), _rec(3, "pruned"), _rec(4), _rec(5)], 3, None, None),
    "first three all fail, differently": (
        [_rec(0, error=A), _rec(1, error=B), _rec(2, error=C)], 3, 2, True),
    "three different errors later": (
        [_rec(0, "ok"), _rec(1, error=A), _rec(2, error=B), _rec(3, error=C)], 3, None, None),
    "divergence and OOM do not count": (
        [_rec(i, error="training diverged", failure="diverged") for i in range(3)]
        + [_rec(i + 3, error="OutOfMemoryError: CUDA out of memory", failure="out_of_memory")
           for i in range(3)], 3, None, None),
    "nor reset the count": (
        [_rec(0), _rec(1, error="training diverged", failure="diverged"), _rec(2),
         _rec(3, failure="out_of_memory"), _rec(4)], 3, 4, False),
    "dead workers do not count": ([_rec(i, failure="worker_died") for i in range(6)], 3,
                                  None, None),
    "limit 0: never": ([_rec(i) for i in range(8)], 0, None, None),
}


@pytest.mark.parametrize("records,limit,fires_after,first", WATCH_CASES.values(),
                         ids=WATCH_CASES.keys())
def test_failure_watch_tells_a_broken_search_from_an_unlucky_one(records, limit, fires_after,
                                                                   first):
    from nasforge.search.failures import FailureWatch

    watch = FailureWatch(limit)
    verdicts = [watch.observe(r) for r in records]
    fired = [i for i, v in enumerate(verdicts) if v is not None]
    assert fired[:1] == ([] if fires_after is None else [fires_after])
    if fires_after is not None:
        broken = verdicts[fires_after]
        assert broken.trial == records[fires_after]["trial"]
        assert broken.error == records[fires_after]["error"]
        assert broken.first_trials is first and broken.count == limit


def test_failure_kind_tells_out_of_memory_from_errors():
    import torch

    from nasforge.search.failures import failure_kind

    assert failure_kind(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")) \
        == "out_of_memory"
    assert failure_kind(MemoryError()) == "out_of_memory"
    assert failure_kind(RuntimeError("CUDA error: out of memory")) == "out_of_memory"
    assert failure_kind(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) == "error"
    assert failure_kind(FileNotFoundError("/data/train")) == "error"


def test_broken_search_stops_after_k_alike_failures(ray_cluster, tmp_path, monkeypatch,
                                                    capsys):
    """Every child raises the same error (the numbers in its message differ): the search stops
    after K trials with exit code 1 and one line naming the error and the traceback to read;
    trials.jsonl holds the K records and --resume keeps K."""
    k = 3
    monkeypatch.setenv("NASFORGE_INJECT_FAULTS", "broken:*")
    # --cpus-per-trial 2: one trial at a time on the fixture's 2 CPUs, so exactly K finish
    code = main(["search", *TINY_ARGS, "--searcher", "random", "--trials", "10", "--gpus", "0",
                 "--cpus-per-trial", "2", "--max-consecutive-failures", str(k),
                 "--runs-dir", str(tmp_path), "--name", "broken"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    run_dir = tmp_path / "broken"
    records = read_trials(run_dir)
    assert [r["trial"] for r in records] == list(range(k))
    assert all(r["status"] == "failed" and r["failure"] == "error" for r in records)
    stop_lines = [line for line in err if "stopped" in line]
    assert stop_lines == [err[-1]], err
    line = err[-1]
    assert f"{k} trials in a row failed with InjectedFault: injected fault: trial " in line
    traceback_file = run_dir / "trials" / f"{records[-1]['trial']:05d}" / "traceback.txt"
    assert str(traceback_file) in line and f"nasforge search --resume {run_dir}" in line
    text = traceback_file.read_text()
    assert text.startswith("Traceback") and "InjectedFault" in text and "before_training" in text
    saved = json.loads((run_dir / "config.json").read_text())["search"]
    assert SearchConfig.from_dict(saved).max_consecutive_failures == k


@pytest.mark.parametrize("best", [None, 0.61])
def test_done_line_names_the_best_cell_only_when_there_is_one(best, tmp_path, capsys):
    from nasforge.cli.search import _report_end

    cell = tmp_path / "best_cell.json"
    summary = {"stopped": None, "broken": None, "finished": 4, "budget": 4, "failed": 1,
               "best": best, "best_trial": None if best is None else 2,
               "best_cell": None if best is None else str(cell), "wall_s": 60.0}
    assert _report_end(summary, tmp_path) == 0
    err = capsys.readouterr().err
    assert ("best_cell.json" in err) == (best is not None), err


CLI_DRIVER = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]  # the tests and the checkout (like `python -m`)
import test_search  # registers the tiny recipe
from nasforge.cli import main
sys.exit(main({argv!r}))
"""


def tiny_cli(tmp_path, *args) -> list[str]:
    """The command line of `nasforge search ARGS` with the tiny children (recipe search-test,
    registered by this module)."""
    here = Path(__file__).resolve().parent
    script = tmp_path / "nasforge_cli.py"
    script.write_text(CLI_DRIVER.format(
        tests=str(here), root=str(here.parent),
        argv=["search", "--recipe", TINY.name, "--epochs", "1", "--data", "synthetic",
              "--searcher", "random", "--gpus", "0", *map(str, args)]))
    return [sys.executable, str(script)]


@pytest.mark.parametrize("cluster", ["joined", pytest.param("own", marks=pytest.mark.slow)])
def test_ctrl_c_stops_the_search_and_says_how_to_resume(cluster, request, tmp_path):
    """SIGINT to the search's process group (what a terminal's Ctrl-C does) after the first
    trial: exit code 130, 'interrupted after k of T trials' and the exact --resume command; the
    children it interrupted are not recorded (as failed or otherwise). "own": the search
    started a local Ray (in its process group); "joined" (the fast twin): it joined this
    module's cluster."""
    address = []
    if cluster == "joined":
        ray = request.getfixturevalue("ray_cluster")
        address = ["--address", ray.get_runtime_context().gcs_address]
    run_dir = tmp_path / "ctrl-c"
    proc = subprocess.Popen(
        tiny_cli(tmp_path, "--trials", "6", "--runs-dir", tmp_path, "--name", "ctrl-c",
                 *address),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    trials = run_dir / "trials.jsonl"
    try:
        wait_for(lambda: lines_of(trials) >= 1, proc, "the first trial's record")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    records = read_trials(run_dir)
    k = len(records)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (f"nasforge: interrupted after {k} of 6 trials; "
                                            f"continue with: nasforge search --resume {run_dir}")
    assert 1 <= k < 6 and all(r["status"] == "ok" for r in records), records
    assert "best_cell" not in err


def test_compare_follows_the_best_trial_rule(tmp_path):
    """A failed trial with a high val_acc never counts, NaN never counts, and the trials to the
    best count up to the first trial that reached the best score (in finishing order)."""
    from nasforge.cli.compare import summarize

    run = RunFolder(tmp_path / "r").create({"search": {"searcher": "random", "trials": 5}})
    for trial, status, acc, finished in [(0, "ok", 0.5, 1), (1, "failed", 0.9, 2),
                                         (3, "ok", 0.7, 3), (4, "ok", float("nan"), 4),
                                         (2, "ok", 0.7, 5)]:
        run.append_trial({"trial": trial, "status": status, "metrics": {"val_acc": acc},
                          "wall_s": 3600.0, "resources": {"gpu": 0}, "started_at": 0,
                          "finished_at": finished})
    assert best_trial(read_trials(run.path))["trial"] == 2  # ties: the lowest id
    row = summarize(run.path)
    assert row["best_val_acc"] == 0.7 and row["trials_to_best"] == 3
    assert row["device_hours_to_best"] == 3.0


# ---------------------------------------------------------------- Ray token authentication
TOKEN_CASES = {  # (environment, token in ~/.ray/auth_token, where the token is taken from)
    "RAY_AUTH_TOKEN first": ({"RAY_AUTH_TOKEN": "t" * 32, "RAY_AUTH_TOKEN_PATH": "FILE"},
                             "h" * 32, "RAY_AUTH_TOKEN"),
    "then RAY_AUTH_TOKEN_PATH": ({"RAY_AUTH_TOKEN_PATH": "FILE"}, "h" * 32,
                                "FILE (RAY_AUTH_TOKEN_PATH)"),
    "then ~/.ray/auth_token": ({}, "h" * 32, "HOME/.ray/auth_token"),
    "an empty RAY_AUTH_TOKEN is none": ({"RAY_AUTH_TOKEN": ""}, "h" * 32,
                                        "HOME/.ray/auth_token"),
    "a blank token file is none": ({}, " \n", None),
    "no token anywhere": ({}, None, None),
}


@pytest.mark.parametrize("environ,home_token,expected", TOKEN_CASES.values(),
                         ids=TOKEN_CASES.keys())
def test_find_auth_token_follows_rays_precedence(environ, home_token, expected, tmp_path):
    """Ray's documented order: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names,
    ~/.ray/auth_token (docs.ray.io, ray-security/token-auth)."""
    from nasforge.cluster import find_auth_token

    home = tmp_path / "home"
    named = tmp_path / "token"
    named.write_text("p" * 32)
    if home_token is not None:
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text(home_token)
    environ = {k: v.replace("FILE", str(named)) for k, v in environ.items()}
    want = None if expected is None else \
        expected.replace("FILE", str(named)).replace("HOME", str(home))
    assert find_auth_token(environ, home) == want


@pytest.mark.parametrize("home_token", [True, False], ids=["wrong token", "no token"])
def test_refused_connection_is_one_line_about_the_token(home_token, tmp_path, monkeypatch,
                                                         capfd):
    """A cluster that refuses the client (Ray's client logs InvalidAuthToken to fd 2 once a
    second, then raises ConnectionError): token mode was turned on when a token was found, the
    flood is not shown, and the one error names token authentication and how to give one."""
    import ray

    from nasforge import cluster

    home = tmp_path / "home"
    if home_token:
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text("w" * 64)
    monkeypatch.setenv("HOME", str(home))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    token_mode = []
    monkeypatch.setattr(cluster, "_use_token_auth", lambda: token_mode.append(True))

    def refused(**kwargs):
        for _ in range(20):
            os.write(2, b"gcs_client.cc:210: Failed to get cluster ID from GCS server: "
                        b"Unauthenticated: RPC error: InvalidAuthToken: Authentication token "
                        b"is missing or incorrect\n")
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:1")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refused)
    with socket.socket() as server:  # something listening at the address
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = "127.0.0.1:%d" % server.getsockname()[1]
        with pytest.raises(cluster.ClusterError) as err:
            cluster.connect_ray(address)
    message = str(err.value)
    assert token_mode == ([True] if home_token else [])
    assert "\n" not in message and message.startswith(f"cannot connect to the Ray cluster at "
                                                      f"'{address}': the cluster uses token "
                                                      f"authentication")
    assert ("rejected the token from " + str(home / ".ray" / "auth_token") in message) \
        == home_token
    assert ("no token was found" in message) != home_token
    assert "RAY_AUTH_TOKEN_PATH" in message and "RAY_AUTH_TOKEN" in message
    assert "InvalidAuthToken" not in capfd.readouterr().err


@pytest.fixture
def token_auth_head(tmp_path):
    """A Ray head started the way `ray start --head` starts one when a token exists (Ray turns
    token authentication on by itself), with its own HOME and temp dir; yields (address, env
    of a client with the same HOME and no auth variables). Stopped by killing its process
    group: `ray stop` would stop every Ray cluster of this user on the machine."""
    import secrets
    import shutil
    import tempfile

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")}
    env["HOME"] = str(home)
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay short
    port = _free_port()
    head = subprocess.Popen(  # the client server's default port is taken by any other head
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
         "--port", str(port), "--ray-client-server-port", str(_free_port()),
         "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard=false",
         "--temp-dir", temp_dir],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        output = []
        for line in head.stdout:  # --block: the head prints its banner, then waits
            output.append(line)
            if "Ray runtime started" in line:
                break
        assert "Ray runtime started" in "".join(output), "".join(output)
        assert "Token authentication is enabled" in "".join(output), "".join(output)
        yield f"127.0.0.1:{port}", env
    finally:
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(head.pid, sig)
                head.wait(timeout=wait_s)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # what --block left behind (Ray's processes stay in the head's group)
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow  # 5 min on 2 busy cores: a Ray head, 2 trials, Ray's 20 s of retries
def test_search_joins_a_cluster_with_token_authentication(token_auth_head, tmp_path):
    """`nasforge search --address` finds the token in ~/.ray/auth_token with no RAY_AUTH_*
    variable set, runs 2 trials on the cluster; with another token the one error line names
    authentication."""
    import secrets

    address, env = token_auth_head
    r = subprocess.run(tiny_cli(tmp_path, "--trials", "2", "--address", address,
                                "--runs-dir", tmp_path, "--name", "joined", "--json"),
                       env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr
    records = read_trials(tmp_path / "joined")
    assert sorted(rec["trial"] for rec in records) == [0, 1]
    assert all(rec["status"] == "ok" for rec in records), records
    assert "InvalidAuthToken" not in r.stderr

    other = tmp_path / "other-home"
    (other / ".ray").mkdir(parents=True)
    (other / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    r = subprocess.run(tiny_cli(tmp_path, "--trials", "2", "--address", address,
                                "--runs-dir", tmp_path, "--name", "refused"),
                       env={**env, "HOME": str(other)}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "token authentication" in lines[0] and "rejected the token" in lines[0], lines[0]
    assert str(other / ".ray" / "auth_token") in lines[0]


def test_following_a_run_file_delivers_each_line_another_writer_appends(tmp_path):
    """``RunFolder.following``: lines appended while it runs reach the callback once each, in
    order, a half-written line only when complete; lines there before are skipped."""
    import threading

    run = RunFolder(tmp_path)
    run.append_line("t.jsonl", {"epoch": 0})
    got = []
    written = threading.Event()

    def writer():
        for epoch in (1, 2):
            run.append_line("t.jsonl", {"epoch": epoch})
            time.sleep(0.05)
        with open(tmp_path / "t.jsonl", "ab") as f:  # a line in two writes
            f.write(b'{"epo')
            f.flush()
            time.sleep(0.1)
            f.write(b'ch": 3}\n')
        written.set()

    with run.following("t.jsonl", got.append, interval_s=0.01):
        threading.Thread(target=writer).start()
        assert written.wait(10)
    assert got == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
