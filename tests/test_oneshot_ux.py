"""What a user of a one-shot search sees (issue 26, item 5): spos's search phase sized by the
recipe, progress lines while a supernet trains and while the phase runs, labelled
architecture heatmaps, and a TensorBoard run selector that does not grow with the number of
candidates."""
from __future__ import annotations

import re

import numpy as np
import pytest

import nasforge.oneshot.run as oneshot_run
from nasforge.cli import main
from nasforge.oneshot.methods import DartsConfig, SposConfig
from nasforge.oneshot.run import StepReporter, heatmap_figure, recipe_sized
from nasforge.search import read_trials
from nasforge.search.board import SearchBoard
from nasforge.search.objectives import Goal
from nasforge.search.run_folder import RunFolder
from nasforge.search_spaces import get_space
from nasforge.train import get_recipe, register_recipe
from nasforge.train.hooks import TrainHooks
from nasforge.trials import Status, TrialRecord

# a supernet of 5 cells (N=1) of 4 filters, 2 blocks over 3 ops, 2 steps of 16 images per
# epoch; the search phase's size comes from the recipe only
UX_RECIPE = register_recipe(get_recipe("oneshot-smoke").replace(
    name="oneshot-ux-test", train_subset=32, batch_size=16, val_size=64, eval_batch_size=64,
    epochs=2, model_overrides=(("N", 1), ("filters", 4)), search_candidates=5))
OPS = ["sep_conv_3x3", "max_pool_3x3", "identity"]


def test_the_recipe_sizes_the_search_phase_and_an_option_overrides_it():
    recipe = get_recipe("oneshot-smoke")
    assert 10 <= recipe.schedule.search_candidates <= 100  # "a few dozen", not 1,000
    sized = recipe_sized(SposConfig(), {}, recipe.replace(search_candidates=7))
    assert sized.candidates == 7
    # --searcher-option candidates=N wins over the recipe
    assert recipe_sized(SposConfig(candidates=3), {"candidates": 3},
                        recipe.replace(search_candidates=7)).candidates == 3
    # a recipe without a size keeps the method's own default
    assert recipe_sized(SposConfig(), {}, get_recipe("spos-search")).candidates == \
        SposConfig().candidates
    # architecture steps take batches of at most the training batch (unless told)
    assert recipe_sized(DartsConfig(), {}, recipe.replace(batch_size=16)).val_batch_size == 16
    assert recipe_sized(DartsConfig(val_batch_size=48), {"val_batch_size": 48},
                        recipe.replace(batch_size=16)).val_batch_size == 48
    with pytest.raises(ValueError, match="search_candidates"):
        recipe.replace(search_candidates=0)


def test_heatmap_labels_every_block_slot_source_and_op_and_writes_the_values():
    space = get_space("nasnet", num_blocks=2, ops=OPS, combines=("add",))
    # rows: block 0 a/b, block 1 a/b; columns: (source, op) flat, 3 sources x 3 ops (padded)
    table = np.zeros((4, 9))
    table[:2, :6] = 1 / 6
    table[2:, :] = 0.05
    table[3, 2 * 3 + 1] = 0.6  # block 1, slot b, source "block 0", max_pool_3x3
    fig = heatmap_figure(table, space, "darts: normal cell")
    ax = fig.axes[0]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert columns == OPS
    assert rows == ["block 0a \u2190 h_i", "block 0a \u2190 h_(i-1)",
                    "block 0b \u2190 h_i", "block 0b \u2190 h_(i-1)",
                    "block 1a \u2190 h_i", "block 1a \u2190 h_(i-1)", "block 1a \u2190 block 0",
                    "block 1b \u2190 h_i", "block 1b \u2190 h_(i-1)", "block 1b \u2190 block 0"]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert len(cells) == len(rows) * len(OPS)
    strong = cells[(rows.index("block 1b \u2190 block 0"), OPS.index("max_pool_3x3"))]
    assert strong.get_text() == "60.0" and strong.get_fontweight() == "bold"
    assert cells[(0, 0)].get_text() == "16.7"
    assert cells[(rows.index("block 1a \u2190 h_i"), 0)].get_text() == "5.0"
    # the colour bar: a slot's probability x its number of choices, so 1 is uniform
    bar, = fig.axes[1:]
    assert "1 = uniform" in bar.get_ylabel()
    image_of = ax.images[0].get_array()
    assert image_of[0, 0] == pytest.approx(1.0)  # block 0a: 6 choices at 1/6
    assert image_of[rows.index("block 1b \u2190 block 0"), 1] == pytest.approx(0.6 * 9)
    image = oneshot_run.heatmap_image(table, space, "x")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_a_board_with_k_sessions_writes_k_plus_one_runs_for_any_number_of_trials(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    board = SearchBoard(run, "spos search phase", Goal(), sessions=3)
    accs = [0.31, 0.52, 0.18, 0.77, 0.40, 0.66, 0.05, 0.59, 0.71, 0.12, 0.44, 0.25]
    progress = type("P", (), dict(finished=0, best=None, device_s=0.0, failed=0, pruned=0,
                                  infeasible=0, front=None))
    for i, acc in enumerate(accs):
        record = TrialRecord(trial=i + 1, status=Status.OK, hash=f"{i:064x}", tokens=(0,),
                             origin={"origin": "spos"}, arch={}, metrics={"val_acc": acc},
                             epochs=1, params=None, mult_adds=None, wall_s=0.1)
        board.finished(record.to_json(), progress, {}, False, None)
    board.close()
    runs = {p.parent for p in run.path.rglob("events.out.tfevents.*")}
    best3 = sorted(range(len(accs)), key=lambda i: -accs[i])[:3]
    assert runs == {run.path} | {run.trial_dir(i + 1) for i in best3}


def test_spos_smoke_prints_progress_and_bounds_its_tensorboard_runs(tmp_path, capsys,
                                                                   monkeypatch, one_thread):
    """End to end through the CLI: the recipe's 5 candidates, a progress line per candidate
    (done/total, best so far, ETA), HParams sessions for the best 2 only (k patched to 2)."""
    monkeypatch.setattr(oneshot_run, "BOARD_SESSIONS", 2)
    args = ["search", "--searcher", "spos", "--recipe", UX_RECIPE.name, "--data", "synthetic",
            "--val-size", "64", "--runs-dir", str(tmp_path), "--name", "run",
            "--searcher-option", "blocks=2", "--searcher-option", f"ops={OPS}".replace("'", '"'),
            "--searcher-option", "val_batch_size=16",
            "--searcher-option", "derive_candidates=2", "--searcher-option", "derive_batches=1",
            "--searcher-option", "recalibration_batches=1",
            "--searcher-option", "recalibration_batch_size=16"]
    assert main(args) == 0
    err = capsys.readouterr().err
    run = tmp_path / "run"
    phase = [r for r in read_trials(run) if r.get("origin", {}).get("phase")]
    assert len(phase) == 5
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    assert [re.match(r"\[\s*(\d+)/(\d+)\]", ln).groups() for ln in lines] == \
        [(str(2 + i), "7") for i in range(1, 6)]
    best = max(r["metrics"]["val_acc"] for r in read_trials(run))  # epochs' cells too
    assert f"best val_acc {best:.4f}" in lines[-1] and lines[-1].endswith("ETA 0:00")
    assert all("ETA" in ln for ln in lines)
    runs = {p.parent for p in run.rglob("events.out.tfevents.*")}
    ranked = sorted(phase, key=lambda r: (-r["metrics"]["val_acc"], r["trial"]))
    assert runs == {run} | {RunFolder(run).trial_dir(r["trial"]) for r in ranked[:2]}


def test_step_reporter_reports_every_step_but_the_first_and_forwards_every_call():
    calls, seen = [], []

    class Method(TrainHooks):
        find_unused_parameters = True

        def before_step(self, epoch, step, batch):
            calls.append((epoch, step))

        def end_epoch(self, epoch):
            return {"cell": epoch}

        def state_dict(self):
            return {"state": 1}

    hooks = StepReporter(Method(), 2, seen.append)
    assert hooks.find_unused_parameters
    for epoch in range(2):
        for step in range(3):
            hooks.before_step(epoch, step, None)
        assert hooks.end_epoch(epoch) == {"cell": epoch}
    assert calls == [(e, s) for e in range(2) for s in range(3)]
    assert hooks.state_dict() == {"state": 1}
    # 3 steps per epoch: known once the first epoch has ended
    assert [(p.epoch, p.epochs, p.step, p.steps) for p in seen] == \
        [(1, 2, 1, None), (1, 2, 2, None), (2, 2, 1, 3), (2, 2, 2, 3)]
    assert seen[0].eta_s is None and seen[-1].eta_s == pytest.approx(seen[-1].step_s)


def test_the_console_says_what_runs_after_a_silence_and_throttles_step_lines(capsys):
    import time

    from nasforge.cli.search import OneShotConsole

    console = OneShotConsole(every_s=60.0, heartbeat_s=0.3)
    console.say("forced line", True)
    console.say("throttled line")  # within every_s of the last: dropped
    console.doing("training epoch 1/2, step 2/2")
    lines = []
    with console.beating():
        # wait for the heartbeat itself (a loaded machine may delay the thread), at most 30 s
        end = time.monotonic() + 30
        while time.monotonic() < end and len(lines) < 2:
            time.sleep(0.1)
            lines += capsys.readouterr().err.splitlines()
        silent_since = time.monotonic()
        time.sleep(0.5)
    lines += capsys.readouterr().err.splitlines()
    window_s = time.monotonic() - silent_since
    assert lines[0] == "forced line" and "throttled line" not in lines
    beats = lines[1:]
    assert beats and all(b.startswith("... training epoch 1/2, step 2/2 (") for b in beats)
    # one per silence of heartbeat_s (0.3 s), not one per check (every 0.1 s)
    assert len(beats) <= 1 + window_s / 0.3 + 1
