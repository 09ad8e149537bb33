"""One-shot search end to end (issue 12): every method of the registry on a tiny supernet and
synthetic data: reproducible, resumable after SIGKILL, its cells valid, its run folder read by
export / compare / transfer unchanged, bad input refused in one line."""
import datetime
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nasforge.oneshot.methods import METHODS
from nasforge.oneshot.run import TRAJECTORY, run_oneshot
from nasforge.search.config import SearchConfig
from nasforge.train import CHECKPOINT_NAME, get_recipe, load_checkpoint, register_recipe

from conftest import lines_of, run_cli, wait_for

# a supernet of 5 cells (N=1) of 4 filters, 2 blocks over 3 ops; 2 steps of 32 images per epoch
TEST_RECIPE = register_recipe(get_recipe("oneshot-smoke").replace(
    name="oneshot-test", train_subset=64, batch_size=32,
    val_size=64, eval_batch_size=64, epochs=2, model_overrides=(("N", 1), ("filters", 4))))
OPTIONS = {"blocks": 2, "ops": ["sep_conv_3x3", "max_pool_3x3", "identity"],
           "val_batch_size": 32}
METHOD_OPTIONS = {"enas": {"controller_steps": 2, "derive_samples": 4},
                  "spos": {"candidates": 4, "derive_candidates": 2, "derive_batches": 1,
                           "recalibration_batches": 1, "recalibration_batch_size": 16},
                  "rsps": {"candidates": 2}}
# every method of the registry, and the methods' variants of their own (name -> (method,
# options)): what the end-to-end tests run
VARIANTS = {**{m: (m, {}) for m in METHODS}, "darts-unrolled": ("darts", {"unrolled": True})}
TIME_KEYS = ("wall_s", "elapsed_s")  # the only fields two runs may disagree on


def oneshot_config(variant: str, **kw) -> SearchConfig:
    method, options = VARIANTS[variant]
    base = dict(searcher=method, recipe=TEST_RECIPE.name, data="synthetic", val_size=64,
                seed=0, searcher_options={**OPTIONS, **METHOD_OPTIONS.get(method, {}),
                                          **options})
    base.update(kw)
    return SearchConfig(**base)


def trajectory(run_dir) -> list[dict]:
    lines = (Path(run_dir) / TRAJECTORY).read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k not in TIME_KEYS} for ln in lines]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs(variant, twin)``: the run folder of a finished search (built once per key)."""
    done = {}

    def get(method: str, twin: int = 0) -> Path:
        if (method, twin) not in done:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                path = tmp_path_factory.mktemp(f"{method}{twin}") / "run"
                run_oneshot(oneshot_config(method), path)
            finally:
                torch.set_num_threads(threads)
            done[(method, twin)] = path
        return done[(method, twin)]

    return get


@pytest.mark.parametrize("method", sorted(VARIANTS))
def test_the_same_seed_gives_the_same_derived_cells_and_trajectory(runs, method):
    a, b = runs(method, 0), runs(method, 1)
    first = trajectory(a)
    assert [line["epoch"] for line in first] == [1, 2]
    assert trajectory(b) == first
    assert (a / "best_cell.json").read_text() == (b / "best_cell.json").read_text()
    weights_a = load_checkpoint(a / CHECKPOINT_NAME)["model"]
    weights_b = load_checkpoint(b / CHECKPOINT_NAME)["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.parametrize("method", sorted(VARIANTS))
def test_every_derived_cell_validates_and_compiles(runs, method, one_thread):
    from nasforge.api import build_model
    from nasforge.dsl import CellPair

    for line in trajectory(runs(method)):
        pair = CellPair.from_dict(line["cell"]).validate()
        assert pair.canonical_hash() == line["hash"]
        model = build_model(pair, "cifar", N=1, filters=4, num_classes=10)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_darts_records_the_argmax_of_its_architecture_weights(runs):
    """The last derived cell is the argmax per slot of the logits the checkpoint holds."""
    from nasforge.oneshot import ArchitectureParameters, slot_candidates
    from nasforge.search_spaces import NasNetSpace

    run = runs("darts")
    space = NasNetSpace(num_blocks=2, ops=OPTIONS["ops"], combines=("add",))
    logits = load_checkpoint(run / CHECKPOINT_NAME)["hooks"]["method"]["alphas"]
    alphas = ArchitectureParameters(space)
    alphas.load_state_dict(logits)
    assert len(alphas.logits) == 2 * space.num_blocks * 2
    last = trajectory(run)[-1]
    arch = space.decode(last["tokens"])
    chosen = [(b.inputs[j], b.ops[j]) for cell in arch.cells() for b in cell for j in range(2)]
    expected = []
    for i, t in enumerate(alphas.logits):
        c = slot_candidates(space, (i // 2) % space.num_blocks)[int(t.argmax())]
        expected.append((c.source, c.op))
    assert chosen == expected


def test_unrolled_darts_records_its_order_and_steps_the_logits_differently(runs):
    """config.json says which order ran; the second-order gradient moves the logits
    elsewhere than the first-order one from the same seed and batches."""
    first, second = runs("darts"), runs("darts-unrolled")
    assert json.loads((first / "config.json").read_text())["method"]["order"] == 1
    method = json.loads((second / "config.json").read_text())["method"]
    assert method["name"] == "darts" and method["unrolled"] is True and method["order"] == 2
    a = load_checkpoint(first / CHECKPOINT_NAME)["hooks"]["method"]["alphas"]
    b = load_checkpoint(second / CHECKPOINT_NAME)["hooks"]["method"]["alphas"]
    assert not all(torch.equal(a[k], b[k]) for k in a)


class _Stop(Exception):
    pass


def test_an_unrolled_run_stopped_after_an_epoch_resumes_exactly(runs, tmp_path, one_thread):
    """Second order keeps no state beyond first order's (the virtual step reads the weight
    optimiser's momentum and learning rate, which the trainer's checkpoint holds): stopped
    after epoch 1 and resumed, the run ends bitwise equal to an uninterrupted one."""
    run_dir = tmp_path / "stopped"

    def stop(line):
        raise _Stop

    with pytest.raises(_Stop):
        run_oneshot(oneshot_config("darts-unrolled"), run_dir, on_epoch=stop)
    assert [line["epoch"] for line in trajectory(run_dir)] == [1]
    run_oneshot(None, run_dir, resume=True)
    whole = runs("darts-unrolled")
    assert trajectory(run_dir) == trajectory(whole)
    a, b = load_checkpoint(run_dir / CHECKPOINT_NAME), load_checkpoint(whole / CHECKPOINT_NAME)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["hooks"]["method"]["alphas"][k], b["hooks"]["method"]["alphas"][k])
               for k in a["hooks"]["method"]["alphas"])


@pytest.mark.parametrize("recipe", [
    TEST_RECIPE.name,
    # one epoch of 8 steps of 64 at F=8: 6.7 minutes on the loaded 2-core machine
    pytest.param("oneshot-smoke", marks=pytest.mark.slow)])
def test_unrolled_darts_from_the_cli_writes_a_valid_best_cell(recipe, tmp_path, capsys,
                                                              one_thread):
    """`nasforge search --searcher darts --searcher-option unrolled=true --recipe R` on the
    tests' 2-block, 3-op space, one epoch."""
    from nasforge.cli import main
    from nasforge.dsl import CellPair

    options = [a for k, v in OPTIONS.items() for a in ("--searcher-option",
                                                         f"{k}={json.dumps(v)}")]
    rc = main(["search", "--searcher", "darts", "--searcher-option", "unrolled=true",
               "--recipe", recipe, "--epochs", "1", "--runs-dir", str(tmp_path),
               "--name", "second", *options])
    err = capsys.readouterr().err
    assert rc == 0, err
    run = tmp_path / "second"
    pair = CellPair.from_dict(json.loads((run / "best_cell.json").read_text())).validate()
    assert pair.canonical_hash() == trajectory(run)[-1]["hash"]
    assert json.loads((run / "config.json").read_text())["method"]["order"] == 2


def test_a_one_shot_run_folder_round_trips_through_export_compare_and_transfer(runs,
                                                                                tmp_path):
    from nasforge.dsl import CellPair
    from nasforge.transfer.models import resolve_cell

    run = runs("gdas")
    best = CellPair.from_dict(json.loads((run / "best_cell.json").read_text()))
    out = tmp_path / "best.json"
    r = run_cli("export", "best_cell", "--run", run, "--format", "json", "-o", out)
    assert r.returncode == 0, r.stderr
    assert CellPair.from_dict(json.loads(out.read_text())).canonical_hash() == \
        best.canonical_hash()
    r = run_cli("compare", run, "--json")
    assert r.returncode == 0, r.stderr
    row, = json.loads(r.stdout)
    walls = [json.loads(ln)["wall_s"] for ln in (run / TRAJECTORY).read_text().splitlines()]
    assert row["searcher"] == "gdas" and row["finished"] == row["budget"] == 2
    assert row["device_hours"] == pytest.approx(sum(walls) / 3600)
    pair, _ = resolve_cell(str(run))  # what `nasforge transfer RUN` trains
    assert pair.canonical_hash() == best.canonical_hash()


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from test_oneshot_search import oneshot_config
from nasforge.oneshot.run import run_oneshot
run_oneshot(oneshot_config("gdas", epochs=3), {run!r})
"""


def test_sigkill_then_resume_loses_no_epoch_and_repeats_none(runs, tmp_path):
    """A driver SIGKILLed after its first epoch; `nasforge search --resume` finishes the run:
    every epoch once, the trajectory and the weights equal to an uninterrupted run's."""
    run_dir = tmp_path / "killed"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(Path(__file__).resolve().parent),
                                    run=str(run_dir)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    traj = run_dir / TRAJECTORY
    try:
        wait_for(lambda: lines_of(traj) >= 1, proc, "the first epoch's trajectory line")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert traj.read_text().count("\n") < 3  # killed before the end
    # one thread, as the runs compared with: a different thread count may sum differently
    r = subprocess.run([sys.executable, "-m", "nasforge", "search", "--resume", str(run_dir),
                        "--json"], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    resumed = trajectory(run_dir)
    assert [line["epoch"] for line in resumed] == [1, 2, 3]
    uninterrupted = tmp_path / "whole"
    torch.set_num_threads(1)
    run_oneshot(oneshot_config("gdas", epochs=3), uninterrupted)
    assert resumed == trajectory(uninterrupted)
    trials = [json.loads(ln) for ln in (run_dir / "trials.jsonl").read_text().splitlines()]
    assert [t["trial"] for t in trials] == [1, 2, 3]
    a = load_checkpoint(run_dir / CHECKPOINT_NAME)
    b = load_checkpoint(uninterrupted / CHECKPOINT_NAME)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])  # bitwise
    assert torch.equal(a["hooks"]["method"]["alphas"]["logits.0"],
                       b["hooks"]["method"]["alphas"]["logits.0"])


register_recipe(TEST_RECIPE.replace(name="oneshot-test-huge", train_subset=None,
                                    batch_size=50_000))
register_recipe(TEST_RECIPE.replace(name="oneshot-test-rmsprop", optimizer="rmsprop"))


@pytest.mark.parametrize("args, message", [
    (["--searcher-option", 'combines=["add","concat"]'], "only with the 'add' combine"),
    (["--searcher-option", "unrolled=true", "--recipe", "oneshot-test-rmsprop"],
     "unrolled=true simulates an SGD step"),
    (["--searcher-option", "unrolled=true", "--searcher-option", "xi=-1"], "xi must be >= 0"),
    (["--searcher-option", "tau=3"], "unknown key 'tau'"),
    (["--recipe", "oneshot-test-huge"], "does not fit in memory"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    from nasforge.cli import main

    options = ["--searcher-option", "blocks=2", "--searcher-option",
               'ops=["identity","max_pool_3x3"]']
    rc = main(["search", "--searcher", "darts", "--recipe", TEST_RECIPE.name, "--data",
               "synthetic", "--val-size", "64", "--runs-dir", str(tmp_path), "--name", "bad",
               *options, *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert message in err and "\n" not in err
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_an_unknown_method_is_one_line_and_exit_2(tmp_path, capsys):
    from nasforge.cli import main

    rc = main(["search", "--searcher", "nope", "--recipe", TEST_RECIPE.name, "--data",
               "synthetic", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "unknown searcher 'nope'" in err and "\n" not in err


# ----------------------------------------------------------------------------- data parallel
def _global_bn_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from nasforge.oneshot.global_bn import GlobalBatchNorm2d, local_batch_statistics

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 5, 5, generator=g) * 3 + 1
    weights = torch.randn(8, 3, 5, 5, generator=g)
    bn = GlobalBatchNorm2d(3)
    local = x[rank * 4:(rank + 1) * 4].clone().requires_grad_()
    (bn(local) * weights[rank * 4:(rank + 1) * 4]).sum().backward()
    torch.save({"y": bn(local).detach(), "grad": local.grad, "mean": bn.running_mean,
                "var": bn.running_var}, f"{out_dir}/rank{rank}.pt")
    if rank == 0:  # an evaluation batch only this rank holds (the trainer's evaluation shards)
        with torch.no_grad(), local_batch_statistics(bn):
            torch.save(bn(x[:3]), f"{out_dir}/local.pt")
    check = torch.ones(1)
    dist.all_reduce(check)  # the ranks' collectives still pair up
    torch.save(check, f"{out_dir}/check{rank}.pt")
    dist.destroy_process_group()


def test_global_batch_norm_on_two_gloo_ranks_is_batch_norm_of_the_whole_batch(tmp_path):
    """Two ranks with half a batch each normalise, and pass gradients, as torch's own
    BatchNorm2d does on the whole batch in one process; an evaluation batch one rank holds
    alone is normalised with its own statistics."""
    import torch.multiprocessing as mp

    # fork: the ranks reuse this process's imports (spawn re-imports torch: a minute here)
    mp.start_processes(_global_bn_rank, args=(2, str(tmp_path / "init"), str(tmp_path)),
                       nprocs=2, start_method="fork")
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(8, 3, 5, 5, generator=g) * 3 + 1).requires_grad_()
    weights = torch.randn(8, 3, 5, 5, generator=g)
    bn = torch.nn.BatchNorm2d(3)
    (bn(x) * weights).sum().backward()
    y = bn(x)  # a second step, as the ranks took (running statistics updated twice)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert torch.allclose(torch.cat([r["y"] for r in ranks]), y.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([r["grad"] for r in ranks]), x.grad, atol=1e-5)
    for r in ranks:
        assert torch.allclose(r["mean"], bn.running_mean, atol=1e-6)
        assert torch.allclose(r["var"], bn.running_var, atol=1e-5)
    # inside local_batch_statistics a rank normalises a batch of its own with that batch's
    # statistics and calls no collective (the other rank evaluated nothing)
    alone = torch.nn.functional.batch_norm(x[:3].detach(), None, None, training=True)
    assert torch.allclose(torch.load(tmp_path / "local.pt"), alone, atol=1e-5)
    assert [float(torch.load(tmp_path / f"check{r}.pt")) for r in range(2)] == [2.0, 2.0]


@pytest.mark.slow
def test_one_and_two_gloo_workers_derive_the_same_cells(runs, tmp_path):
    """The same seed and global batch on 1 process and on 2 Ray Train workers (gloo): every
    epoch derives the same cell (about 5 minutes on 2 busy cores: Ray and gloo start-up); the
    driver's ``on_epoch`` (the console) gets each epoch's line, which rank 0 writes."""
    torch.set_num_threads(1)
    path = tmp_path / "two"
    seen = []
    run_oneshot(oneshot_config("gdas", workers=2), path, on_epoch=seen.append)
    assert [line["hash"] for line in trajectory(path)] == \
        [line["hash"] for line in trajectory(runs("gdas"))]
    assert [{k: v for k, v in line.items() if k not in TIME_KEYS} for line in seen] == \
        trajectory(path)


def test_a_path_is_evaluated_with_its_own_batch_statistics():
    """Running statistics average every path trained; an evaluated path normalizes with its
    batch's statistics (train-mode BN) and leaves the running statistics as they were."""
    import numpy as np

    from nasforge.oneshot import Supernet
    from nasforge.oneshot.methods import OneShotModel
    from nasforge.search_spaces import NasNetSpace
    from nasforge.zoo import SETTINGS

    torch.manual_seed(0)
    space = NasNetSpace(combines=("add",), num_blocks=2)
    supernet = Supernet(space, replace(SETTINGS["cifar"], N=1, filters=4))
    arch = space.sample(np.random.default_rng(0))
    for module in supernet.modules():  # running statistics far from any batch's
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.fill_(5.0)
    model = OneShotModel(supernet)
    model.eval_route = {"arch": arch}
    x = torch.randn(8, 3, 32, 32)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    with torch.no_grad():
        evaluated = model.eval()(x)
        after = {k: v.clone() for k, v in supernet.state_dict().items()}
        supernet.train()
        batch_stats = supernet(x, arch=arch)
        supernet.eval()
        running_stats = supernet(x, arch=arch)
    torch.testing.assert_close(evaluated, batch_stats)
    assert not torch.allclose(evaluated, running_stats)
    assert all(torch.equal(before[k], after[k]) for k in before if "running" in k)


# the published search settings of each method's default recipe (docs/reference.md
# section 9: ENAS' cifar10_micro_search.sh, DARTS' train_search.py; GDAS: DARTS' split and
# optimiser for 240 epochs): (batch size, epochs)
PUBLISHED_SEARCH_SETTINGS = {"enas": (160, 150), "darts": (64, 50), "gdas": (64, 240)}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_one_shot_search_without_recipe_trains_with_its_methods_recipe(method, monkeypatch,
                                                                       tmp_path):
    """Without --recipe, a one-shot search takes its method's recipe, not the black-box
    children's ``search`` recipe."""
    import nasforge.cli.search  # `nasforge search`'s binding of run_oneshot

    class Started(Exception):
        pass

    seen = []

    def started(config, run_dir, **kw):
        seen.append(config.recipe)
        raise Started

    monkeypatch.setattr(nasforge.cli.search, "run_oneshot", started)
    monkeypatch.setenv("NASFORGE_DEBUG", "1")  # main() re-raises instead of printing
    from nasforge.cli import main

    with pytest.raises(Started):
        main(["search", "--searcher", method, "--data", "synthetic", "--runs-dir",
              str(tmp_path)])
    recipe = get_recipe(seen[0])
    assert recipe.name != SearchConfig().recipe
    if method in PUBLISHED_SEARCH_SETTINGS:
        assert (recipe.schedule.batch_size, recipe.schedule.epochs) == \
            PUBLISHED_SEARCH_SETTINGS[method]


def test_spos_search_phase_writes_the_black_box_searchs_tensorboard(runs):
    """Every evaluated candidate of spos' search phase is a point of ``search/val_acc`` and
    an HParams trial, as in a black-box search; the best so far never decreases."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nasforge.search import RunFolder, read_trials

    run = runs("spos")
    phase = [r for r in read_trials(run) if r.get("origin", {}).get("phase")]
    assert len(phase) == METHOD_OPTIONS["spos"]["candidates"]
    scalars = EventAccumulator(str(run)).Reload()
    values = [e.value for e in scalars.Scalars("search/val_acc")]
    assert values == pytest.approx([r["metrics"]["val_acc"] for r in phase])
    best = [e.value for e in scalars.Scalars("search/best_val_acc")]
    assert best == sorted(best) and best[-1] == pytest.approx(max(values))
    for r in phase:
        assert list(RunFolder(run).trial_dir(r["trial"]).glob("events.out.tfevents.*"))
