"""``run_oneshot``: a one-shot search (enas, darts, gdas, spos) into a search run folder.

One-shot search is a second evaluator, not a second framework: the supernet's shared weights
are trained by the one trainer (``nasforge.train.train``) with the method as its hooks, and
the run folder is a search run folder that every tool reads unchanged::

    config.json        format "nasforge.oneshot/1": the SearchConfig, recipe, macro, space
    checkpoint.pt      the trainer's checkpoint after every epoch (supernet, optimiser,
                       schedule, loaders, RNGs and the method's state): --resume continues
                       after its last epoch, bitwise on CPU
    trajectory.jsonl   per epoch: derived cell, its hash, supernet val accuracy, entropy of the
                       architecture distribution, wall time, method statistics
    trials.jsonl       per epoch one trial record of the derived cell (its supernet validation
                       accuracy as val_acc, the epoch's wall time as wall_s), plus one record
                       per candidate of spos's search phase (its recalibrated supernet scores,
                       or status ``infeasible`` with the measured values for a path refused
                       before evaluation): what `nasforge compare` (device-hours), `export
                       best_cell --run` and `transfer` read
    search_phase.json  spos: written when its search phase ends (candidates evaluated,
                       infeasible, why it stopped); without it a resume reruns the phase
    best_cell.json     the best record's cell by the one best-trial rule (run_folder), for the
                       search's primary objective, among records within its constraints
    pareto.json        several objectives: the front of the records (run_folder.write_pareto)
    events.out.tfevents.*   losses, accuracy, entropy, method statistics, architecture-weight
                       heatmaps and the derived cell's drawing per epoch

trajectory.jsonl and trials.jsonl are functions of the checkpoint's history (each epoch's
history entry holds what both lines need), so a resume rewrites them from the checkpoint:
an epoch a SIGKILL cut short is neither lost nor repeated.

Objectives and constraints (``--objective``, ``--objectives``, ``--constraint``) are honoured by
``spos`` only: its search phase screens every proposal with the black-box search's
``screen.Screen`` (a path over a params / mult-adds / latency_ms bound is never evaluated on the
supernet, is recorded as infeasible and told to the searcher so; the same cap on infeasible
proposals stops it), its searcher optimizes the primary objective (several: a Pareto search),
and every record (the per-epoch derived cells too) is judged against the constraints. enas,
darts and gdas derive their cell from a trained distribution (argmax, most likely sample), which
a constraint cannot filter honestly: they refuse them in one line.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np

import nasforge
from nasforge.controllers import Prescreen, Proposal
from nasforge.dsl.cell import node_label
from nasforge.data import load_data
from nasforge.oneshot.distributed import train_data_parallel
from nasforge.oneshot.global_bn import use_global_batch_norm
from nasforge.oneshot.memory import check_fits
from nasforge.oneshot.methods import (METHODS, Darts, DartsConfig, GdasConfig, OneShotModel,
                                      Spos, SposConfig, method_config)
from nasforge.oneshot.choices import (SupernetError, check_space_covered, choice_layout,
                                      collapse_shares, family_of, family_space_defaults)
from nasforge.oneshot.supernet import SLOTS
from nasforge.proxies.prescreen import parse_prescreen
from nasforge.search.board import SearchBoard, add_cell_drawing
from nasforge.search.config import SearchConfig, SearchError
from nasforge.search.objectives import Goal, ModelSetting, infeasible_cap
from nasforge.search.recorder import RunRecorder, SearchProgress, SearchRecorder
from nasforge.search.run_folder import RunFolder, best_trial, device_seconds, trial_score
from nasforge.search.screen import Screen, judge_finished, result_from_record
from nasforge.search.runner import describe_infeasible, goal_searcher, open_run, prescreen_scorer
from nasforge.search_spaces import SPACES, get_space
from nasforge.search_spaces.nasnet import NUM_INPUTS, NasNetSpace
from nasforge.tables.judge import table_judge
from nasforge.train import CHECKPOINT_NAME, Recipe, load_checkpoint, train
from nasforge.train.hooks import TrainHooks
from nasforge.train.data_parallel import worker_placement
from nasforge.trials import UNTRAINED, SearchSummary, Status, StopReason, TrialRecord

log = logging.getLogger(__name__)

FORMAT = "nasforge.oneshot/1"
TRAJECTORY = "trajectory.jsonl"
SEARCH_PHASE = "search"  # origin.phase of spos's search-phase records
SEARCH_PHASE_DONE = "search_phase.json"  # spos: written when its search phase has ended
CHILD_COUNTS = ("params", "mult_adds")  # measured for every epoch's derived cell
# spos's search phase: candidates with an HParams session (a TensorBoard run) of their own,
# the best by the primary objective; every candidate is a point of the run's search/ scalars
# (docs/oneshot.md, "TensorBoard")
BOARD_SESSIONS = 10
# the derived cell's figures shown in TensorBoard (derived/...): collapse and table
BOARD_JUDGED = ("skip_share", "parameter_free_share", "table_val_acc", "table_test_acc",
                "table_val_acc_200ep", "table_percentile")


def is_oneshot(config: SearchConfig | None, run_dir=None) -> bool:
    """Whether a search (``config``, or the run folder being resumed) is a one-shot one: a
    registry lookup of the method name, or the saved config's format."""
    if config is not None:
        return config.searcher in METHODS
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def macro_config(recipe, data, space):
    """The supernet's macro (the family's, ``choices.SupernetFamily.macro``): the recipe's
    setting and its overrides for a supernet (``Recipe.build_overrides``: its model overrides,
    e.g. N and filters; no drop-path, no auxiliary head), sized for ``data``."""
    overrides = recipe.build_overrides(network="supernet")
    try:
        return family_of(space).macro(space, recipe.defaults.setting, overrides, data)
    except SupernetError as e:
        raise SupernetError(f"recipe {recipe.name}: {e}", options=e.options) from None


def model_setting(recipe, data, space, latency_table: str | None = None) -> ModelSetting:
    """How static metrics (params, mult-adds, latency_ms) build a path's stand-alone child:
    the network ``macro_config`` describes, as an ``objectives.ModelSetting`` (a family whose
    children are the space's own full-size networks, NAS-Bench-201's, takes no overrides)."""
    family = family_of(space)
    overrides = recipe.build_overrides(network="supernet") if family.children_sized_by_recipe \
        else {}
    return ModelSetting(recipe.defaults.setting or family.setting, data.num_classes,
                        data.image_size[0], data.channels, tuple(sorted(overrides.items())),
                        latency_table)


class Recorder:
    """The trainer's ``report`` on rank 0: trajectory lines, the epoch's TensorBoard scalars
    and images, and its trial record through the search's ``RunRecorder`` (trials.jsonl,
    best_cell.json, pareto.json: the black-box search's recorder)."""

    def __init__(self, run: RunFolder, method, space, setting: ModelSetting, goal: Goal,
                 resources: dict, board: bool):
        self.run, self.method, self.space = run, method, space
        self.goal = goal
        # the screen measures; epochs are never refused
        self.book = RunRecorder(run, goal, screen=Screen(goal, space, setting))
        self.layout = choice_layout(space)
        self.judge = table_judge(space)  # the space's published table, if any
        self.resources = resources
        self.writer = None
        if board:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run.path))

    def child_static(self, proposal) -> dict:
        """params, mult-adds and the goal's other static metrics of a path's stand-alone
        child (objectives.measure_static: the counter constraints are checked with)."""
        return self.book.screen.measure(proposal, CHILD_COUNTS)

    def lines(self, entry: dict) -> tuple[dict, TrialRecord]:
        """(trajectory line, trials.jsonl record) of one epoch's history entry."""
        epoch = int(entry["epoch"])
        traj = {"epoch": epoch, "cell": entry["cell"], "hash": entry["hash"],
                "tokens": entry["tokens"], "val_acc": entry.get("val_acc"),
                "val_loss": entry.get("val_loss"), "train_loss": entry.get("train_loss"),
                "train_acc": entry.get("train_acc"), "entropy": entry.get("entropy"),
                "lr": entry.get("lr"), "wall_s": entry.get("epoch_s"),
                "elapsed_s": entry.get("elapsed_s")}
        traj.update({k: v for k, v in entry.items() if k.startswith("method_")})
        judged = self.judged(self.space.decode([int(t) for t in entry["tokens"]]))
        traj.update(judged)
        static = self.child_static(self._proposal(entry["tokens"], entry["hash"]))
        started = entry.get("started_at") or 0.0
        record = TrialRecord(
            trial=epoch, status=Status.OK, hash=entry["hash"], tokens=tuple(entry["tokens"]),
            origin={"origin": self.method_name, "epoch": epoch}, arch=entry["cell"],
            metrics={"val_acc": entry.get("val_acc"), "val_loss": entry.get("val_loss"),
                     **{k: v for k, v in static.items() if k not in CHILD_COUNTS},
                     **self.judged_metrics(self.space.decode(traj["tokens"])),
                     "epoch": epoch},
            epochs=epoch, params=static["params"], mult_adds=static["mult_adds"],
            wall_s=entry.get("epoch_s"), train_s=None, restored_epoch=0,
            resources=self.resources, error=None, failure=None, started_at=started,
            finished_at=started + float(entry.get("epoch_s") or 0))
        return traj, judge_finished(self.goal, record)

    def judged(self, arch) -> dict:
        """The derived cell's collapse shares (``choices.collapse_shares``) and, when the space
        has a table, what the table says of it (``tables.judge``; ``cell_string``: its
        NAS-Bench-201 string)."""
        out = collapse_shares(self.layout.ops(arch))
        if self.judge is not None:
            out["cell_string"] = str(arch)
            out.update(self.judge(arch))
        return out

    def judged_metrics(self, arch) -> dict:
        """``judged``'s numbers (a record's metrics)."""
        return {k: v for k, v in self.judged(arch).items() if k != "cell_string"}

    def _proposal(self, tokens, digest: str):
        tokens = tuple(int(t) for t in tokens)
        return Proposal(-1, self.space.decode(tokens), tokens, digest)

    @property
    def method_name(self) -> str:
        return next(name for name, cls in METHODS.items() if type(self.method) is cls)

    def sync(self, history: list[dict], keep_search_phase: bool) -> None:
        """Called before training: make trajectory.jsonl and trials.jsonl hold exactly the
        checkpoint's epochs (and, once every epoch is done and spos's search phase ended, its
        records; those of a phase cut short are dropped: it runs again)."""
        pairs = [self.lines(h) for h in history if "cell" in h]
        records = [r for _, r in pairs]
        if keep_search_phase and (self.run.path / SEARCH_PHASE_DONE).is_file():
            records += [r for r in self.run.trials()
                        if r.get("origin", {}).get("phase") == SEARCH_PHASE]
        self.run.write_lines(TRAJECTORY, [t for t, _ in pairs])
        self.book.rewrite(records)

    def epoch(self, epoch: int, entry: dict) -> None:
        """The trainer's ``report`` (rank 0): append the epoch's lines, update the best
        cell, write TensorBoard."""
        if "cell" not in entry:  # a diverged epoch derives nothing
            return
        traj, record = self.lines(entry)
        self.run.append_line(TRAJECTORY, traj)
        self.book.append(record)
        if self.writer is not None:
            self._board(epoch, traj)

    def _board(self, step: int, traj: dict) -> None:
        import math

        w = self.writer
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "entropy", "lr"):
            v = traj.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                w.add_scalar(f"oneshot/{key}", v, step)
        for key, v in traj.items():
            if key.startswith("method_") and isinstance(v, (int, float)) and math.isfinite(v):
                w.add_scalar(f"method/{key[len('method_'):]}", v, step)
        for key in BOARD_JUDGED:
            if isinstance(traj.get(key), (int, float)):
                w.add_scalar(f"derived/{key}", traj[key], step)
        if "cell_string" in traj:
            w.add_text("derived/cell_string", traj["cell_string"], step)
        for kind, table in self.method.heatmaps().items():
            title = f"{self.method_name}: {kind} cell, epoch {step}"
            slots = [self.layout.slots[s] for s in self.layout.groups()[kind]]
            w.add_image(f"architecture/{kind}", heatmap_image(table, self.space, title, slots),
                        step, dataformats="HWC")
        drawing = self.layout.drawing(self.space.decode([int(t) for t in traj["tokens"]]))
        add_cell_drawing(w, "oneshot/derived_cell", drawing.to_dict(), step)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def heatmap_axes(space, table, slots=()) -> tuple[np.ndarray, list[str], list[str]]:
    """(matrix, row labels, column labels) of a method's ``heatmaps()`` table for drawing.

    A NASNet space's table has a row per block slot and a column per (source, op) of
    ``slot_candidates`` (zero-padded); it is redrawn with a row per (block, slot, source),
    labelled like ``block 1b <- h_(i-1)`` (the drawings' input names), and a column per op.
    Any other table keeps its shape: a row per slot, labelled by its ``choices.Slot`` label
    when ``slots`` are given, a column per candidate (the slots' candidate names when they all
    have the same, else the space's ``ops`` when they match)."""
    table = np.asarray(table, np.float64)
    ops = list(getattr(space, "ops", ()) or ())
    if isinstance(space, NasNetSpace) and table.shape[0] == 2 * space.num_blocks and \
            table.shape[1] >= (NUM_INPUTS + space.num_blocks - 1) * len(ops):
        rows, labels = [], []
        for i, values in enumerate(table):
            block, slot = divmod(i, len(SLOTS))
            for source in range(NUM_INPUTS + block):
                name = node_label({"kind": "input", "index": source}) if source < NUM_INPUTS \
                    else f"block {source - NUM_INPUTS}"
                labels.append(f"block {block}{SLOTS[slot]} \u2190 {name}")
                rows.append(values[source * len(ops):(source + 1) * len(ops)])
        return np.array(rows), labels, ops
    if len(slots) == table.shape[0] and len({sl.candidates for sl in slots}) == 1 and \
            len(slots[0].candidates) == table.shape[1]:
        return table, [sl.label for sl in slots], list(slots[0].candidates)
    columns = ops if len(ops) == table.shape[1] else [str(j) for j in range(table.shape[1])]
    labels = [sl.label for sl in slots] if len(slots) == table.shape[0] else \
        [f"decision {i}" for i in range(table.shape[0])]
    return table, labels, columns


def heatmap_figure(table, space, title: str, slots=()):
    """A labelled matplotlib figure of a probability table (``heatmap_axes``): a cell per
    (row, op) with its probability in percent written in it (the largest of each slot in
    bold: the choice an argmax derives), coloured by probability x the slot's number of
    choices (1 = uniform: white; preferred: blue; avoided: red) with its colour bar, a line
    between slots. The ratio, not the probability, is coloured: a slot's probabilities
    shrink with its number of sources, which would otherwise be all the colours show."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    matrix, rows, columns = heatmap_axes(space, table, slots)
    slot_of = [label.split(" \u2190 ")[0] for label in rows]
    choices = {slot: slot_of.count(slot) * len(columns) for slot in slot_of}
    ratio = matrix * np.array([choices[slot] for slot in slot_of])[:, None]
    fig = Figure(figsize=(2.8 + 0.55 * len(columns), 1.4 + 0.24 * len(rows)), dpi=90)
    ax = fig.add_subplot()
    image = ax.imshow(ratio, cmap="RdBu", aspect="auto", interpolation="nearest",
                      norm=TwoSlopeNorm(1.0, 0.0, max(float(ratio.max()), 2.0)))
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("op")
    ax.set_ylabel("block, input slot \u2190 source")
    ax.set_title(f"{title} (cells: probability, %)", fontsize=9)
    strongest = {}
    for r, slot in enumerate(slot_of):
        c = int(np.argmax(matrix[r]))
        if slot not in strongest or matrix[r, c] > matrix[strongest[slot]]:
            strongest[slot] = (r, c)
    for r in range(len(rows)):
        if r and slot_of[r] != slot_of[r - 1]:
            ax.axhline(r - 0.5, color="0.4", linewidth=0.6)
        for c in range(len(columns)):
            ax.text(c, r, f"{100 * float(matrix[r, c]):.1f}", ha="center", va="center",
                    fontsize=6, color="white" if abs(ratio[r, c] - 1) > 0.75 * max(
                        float(ratio.max()) - 1, 1.0) else "black",
                    fontweight="bold" if strongest[slot_of[r]] == (r, c) else "normal")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02,
                 label="probability x the slot's choices (1 = uniform)")
    fig.tight_layout()
    return fig


def heatmap_image(table, space, title: str, slots=()) -> np.ndarray:
    """``heatmap_figure`` rendered as an RGB image (HWC, uint8) for TensorBoard."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = heatmap_figure(table, space, title, slots)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ----------------------------------------------------------------------------- the search
def _open(config: SearchConfig | None, run_dir, resume: bool):
    return open_run(config, run_dir, resume, FORMAT, "one-shot search")


def recipe_sized(method_cfg, options: dict, recipe):
    """The method's config with the sizes the recipe sets, where the search's options
    (``--searcher-option``) do not set them: spos's search phase evaluates
    ``recipe.schedule.search_candidates`` paths (when the recipe sets it), and the
    architecture / controller steps take validation batches of at most the recipe's training
    batch (``val_batch_size``; DARTS and GDAS take both steps on batches of one size), so the
    memory check of a training step bounds them too. Every preset's sizes are unchanged by
    this (their batches are at least the default 64)."""
    names = {f.name for f in fields(method_cfg)}
    changes = {}
    wanted = recipe.schedule.search_candidates
    if "candidates" in names and "candidates" not in options and wanted is not None:
        changes["candidates"] = wanted
    if "val_batch_size" in names and "val_batch_size" not in options:
        changes["val_batch_size"] = min(method_cfg.val_batch_size,
                                        recipe.schedule.batch_size)
    return replace(method_cfg, **changes) if changes else method_cfg


def prepare(config: SearchConfig, recipe):
    """(method config, space, data, macro) of a search, every input checked (SupernetError,
    SearchError, DataError) before anything is built or written."""
    method_cfg = recipe_sized(method_config(config.searcher, config.searcher_options),
                              config.searcher_options, recipe)
    if config.goal != Goal.parse() and METHODS[config.searcher] is not Spos:
        raise SearchError(f"{config.searcher} derives its cell from a trained distribution, "
                          f"which objectives and constraints cannot steer: they are "
                          f"supported with spos (and the black-box searchers)",
                          options=("objective", "objectives", "constraint"))
    if config.prescreen is not None and METHODS[config.searcher] is not Spos:
        raise SearchError(f"{config.searcher} has no candidates to prescreen (it derives its "
                          f"cell from a trained distribution): a prescreen applies to spos's "
                          f"search phase and to the black-box searchers",
                          options=("prescreen",))
    if isinstance(method_cfg, DartsConfig) and method_cfg.unrolled and \
            recipe.optim.kind != "sgd":
        raise SupernetError(f"unrolled=true simulates an SGD step; recipe {recipe.name} trains "
                            f"the weights with {recipe.optim.kind}")
    if config.space not in SPACES:
        raise SearchError(f"unknown search space {config.space!r} (known: {', '.join(SPACES)})")
    check_space_covered(config.space, SPACES)
    try:
        space = get_space(config.space, **{**family_space_defaults(SPACES[config.space]),
                                           **method_cfg.space_options()})
    except (TypeError, ValueError) as e:
        raise SupernetError(f"search space {config.space!r}: {e}") from None
    if isinstance(method_cfg, DartsConfig) and method_cfg.aux_skip and \
            not family_of(space).aux_skip:
        raise SupernetError(f"aux_skip (DARTS-' auxiliary skip) is implemented for the "
                            f"nas-bench-201 supernet, not for space {config.space!r}")
    if isinstance(method_cfg, GdasConfig) and not family_of(space).slot_samples_are_paths:
        raise SupernetError(f"gdas samples one candidate per slot, which is no architecture "
                            f"of space {config.space!r} (its nodes keep two edges each): use "
                            f"darts, enas, spos or rsps there", options=("searcher",))
    if isinstance(method_cfg, SposConfig):  # its searcher can take the objectives (one line)
        goal_searcher(method_cfg.evaluator, space, config.seed, config.goal)
    val_size = recipe.inputs.val_size if config.val_size is None else config.val_size
    data = load_data(config.data or recipe.defaults.data, split="search", val_size=val_size,
                     seed=config.seed, cache_dir=config.cache_dir)
    macro = macro_config(recipe, data, space)
    family_of(space).check(space, macro)
    return method_cfg, space, data, macro


def build(config: SearchConfig, recipe, method_cfg, space, data, macro, epochs: int):
    """(model, method): the supernet under the search seed, wrapped for the trainer, and the
    method that steers it. Called by the driver and by every data-parallel worker."""
    import torch

    torch.manual_seed(config.seed)
    # global-batch BN statistics: 1 and N data-parallel workers take the same steps
    model = OneShotModel(use_global_batch_norm(family_of(space).build(space, macro)))
    method = METHODS[config.searcher](space, model, data, epochs=epochs, seed=config.seed,
                                      config=method_cfg)
    return model, method


def run_oneshot(config: SearchConfig | None = None, run_dir=None, *, resume: bool = False,
                on_epoch: Callable[[dict], None] | None = None,
                on_start: Callable[[str], None] | None = None,
                on_step: Callable[["StepProgress"], None] | None = None,
                on_progress: Callable[[SearchProgress], None] | None = None) -> dict:
    """Run (or with ``resume=True`` continue) a one-shot search in ``run_dir``; return a
    summary shaped like ``run_search``'s. ``on_epoch`` receives each epoch's trajectory line;
    ``on_step`` a ``StepProgress`` before every training step after an epoch's first (one
    process only: a data-parallel run reports its epochs); ``on_progress`` the black-box
    search's ``SearchProgress`` after every candidate of spos's search phase. Bad input
    raises SupernetError / SearchError / DataError before anything is written."""
    import torch

    run, config, recipe = _open(config, run_dir, resume)
    method_cfg, space, data, macro = prepare(config, recipe)
    epochs = config.epochs or recipe.schedule.epochs
    workers = max(1, int(config.gpus or 0)) if config.gpus else max(1, config.workers)
    device = torch.device("cuda" if config.gpus else "cpu")
    batch = min(recipe.schedule.batch_size, len(data.train)) // workers
    estimate = check_fits(space, macro, batch, METHODS[config.searcher] is Darts, device,
                          processes=workers, unrolled=isinstance(method_cfg, DartsConfig)
                          and method_cfg.unrolled)
    if not resume:
        # a one-shot run's "trials" are its records: one per epoch (+ one per candidate of
        # spos's search phase), which is the budget `nasforge compare` shows
        candidates = method_cfg.candidates if isinstance(method_cfg, SposConfig) else 0
        config = replace(config, trials=epochs + candidates)
        run.create(_description(config, recipe, epochs, data, macro, space, estimate,
                                method_cfg))
    resources = {"cpu": float(workers), "gpu": float(config.gpus or 0)}
    setting = model_setting(recipe, data, space, config.latency_table)
    t0 = time.time()
    if workers > 1 or config.address:
        if on_start is not None:
            on_start(f"{config.searcher} on a supernet of {estimate.params:,} parameters, "
                     f"{workers} data-parallel workers")
        # the epochs' lines come from rank 0's process: the console follows its file
        following = run.following(TRAJECTORY, on_epoch) if on_epoch is not None \
            else contextlib.nullcontext()
        with following:
            result = train_data_parallel(config, recipe, run, epochs, workers, resources,
                                         worker=oneshot_worker)
        # the driver's copy of the trained state, for spos's search phase
        model, method = build(config, recipe, method_cfg, space, data, macro, epochs)
        state = load_checkpoint(run.path / CHECKPOINT_NAME)
        model.load_state_dict(state["model"])
        model.to(device)
        method.bind(device, 0, 1)
        method.load_state_dict(state.get("hooks") or {})
        recorder = Recorder(run, method, space, setting, config.goal, resources, board=False)
    else:
        model, method = build(config, recipe, method_cfg, space, data, macro, epochs)
        if on_start is not None:
            on_start(f"{config.searcher} on a supernet of {estimate.params:,} parameters "
                     f"(about {estimate.total_bytes / 2 ** 30:.2f} GiB per step), one process")
        recorder = Recorder(run, method, space, setting, config.goal, resources, board=True)
        try:
            result = train_supernet(config, recipe, run, model, method, data, epochs,
                                    recorder, on_epoch, device, on_step=on_step)
        finally:
            recorder.close()
    phase = None
    if isinstance(method, Spos) and result["status"] == Status.OK:
        phase = _search_phase(run, recorder, method, config, epochs, setting, on_progress)
    return _summary(run, config, result, epochs, time.time() - t0, phase)


def oneshot_worker(loop_config: dict) -> None:
    """``train_loop_per_worker`` of the data-parallel search's ``TorchTrainer``
    (:func:`nasforge.oneshot.distributed.train_data_parallel`)."""
    rank, world, device, distributed = worker_placement(loop_config["use_gpu"],
                                                        loop_config["threads"])
    config = SearchConfig.from_dict(loop_config["search"])
    recipe = Recipe.from_dict(loop_config["recipe"])
    run = RunFolder(loop_config["run_dir"])
    method_cfg, space, data, macro = prepare(config, recipe)
    model, method = build(config, recipe, method_cfg, space, data, macro,
                          loop_config["epochs"])
    recorder = None
    if rank == 0:
        recorder = Recorder(run, method, space,
                            model_setting(recipe, data, space, config.latency_table),
                            config.goal,
                            loop_config["resources"], board=True)
    try:
        train_supernet(config, recipe, run, model, method, data, loop_config["epochs"],
                       recorder, None, device, distributed=distributed)
    finally:
        if recorder is not None:
            recorder.close()


@dataclass(frozen=True)
class StepProgress:
    """Handed to ``run_oneshot``'s ``on_step`` before a training step of the supernet: an
    epoch of a mixture method (darts) on a CPU can take minutes, its steps seconds."""

    epoch: int  # the epoch being trained, 1-based
    epochs: int  # epochs the search trains
    step: int  # steps done in this epoch
    steps: int | None  # steps per epoch: known once an epoch has ended (None in the first)
    step_s: float  # mean wall seconds per step in this epoch so far (architecture steps too)

    @property
    def eta_s(self) -> float | None:
        """Seconds left in this epoch's training pass (None while ``steps`` is unknown)."""
        return None if self.steps is None else max(0, self.steps - self.step) * self.step_s


class StepReporter(TrainHooks):
    """The method as the trainer's hooks, reporting a ``StepProgress`` to ``on_step`` before
    every step but an epoch's first; every call is the method's, so the training and its
    checkpoint are the method's alone."""

    def __init__(self, method: TrainHooks, epochs: int,
                 on_step: Callable[[StepProgress], None]):
        self.method, self.epochs, self.on_step = method, int(epochs), on_step
        self.find_unused_parameters = method.find_unused_parameters
        self.steps: int | None = None
        self._t0 = 0.0
        self._last = 0

    def bind(self, device, rank, world):
        self.method.bind(device, rank, world)

    def bind_optimizer(self, optimizer, loss):
        self.method.bind_optimizer(optimizer, loss)

    def before_step(self, epoch, step, batch):
        now = time.perf_counter()
        if step == 0:
            self._t0 = now
        else:
            self.on_step(StepProgress(epoch + 1, self.epochs, step, self.steps,
                                      (now - self._t0) / step))
        self._last = step
        self.method.before_step(epoch, step, batch)

    def end_epoch(self, epoch):
        self.steps = self._last + 1
        return self.method.end_epoch(epoch)

    def state_dict(self):
        return self.method.state_dict()

    def load_state_dict(self, state):
        self.method.load_state_dict(state)


def train_supernet(config, recipe, run: RunFolder, model, method, data, epochs: int,
                   recorder: Recorder | None, on_epoch, device, distributed: bool = False,
                   on_step: Callable[[StepProgress], None] | None = None):
    """Train the supernet with the one trainer (``method`` as its hooks) into ``run``'s
    checkpoint, after syncing the run's per-epoch files with it (``recorder``: rank 0);
    ``on_step``: see ``StepReporter``."""
    ckpt = run.path / CHECKPOINT_NAME
    if recorder is not None:
        history = load_checkpoint(ckpt)["history"] if ckpt.exists() else []
        recorder.sync(history, keep_search_phase=len(history) >= epochs)

    def report(epoch: int, entry: dict) -> None:
        if recorder is not None:
            recorder.epoch(epoch, entry)
            if on_epoch is not None:
                on_epoch(recorder.lines(entry)[0])

    hooks = method if on_step is None else StepReporter(method, epochs, on_step)
    return train(model, data, recipe, report=report, checkpoint_dir=run.path, device=device,
                 seed=config.seed, epochs=epochs, distributed=distributed, hooks=hooks)


class SearchPhaseJudge:
    """spos's search phase as a search: the ``CandidateJudge`` of ``search_with_supernet``.

    Every proposal is screened first with the search's ``Screen`` (the one the black-box
    adapter uses): one that violates a constraint on a static metric is recorded as
    ``infeasible`` with its measured values, told to the searcher so and counted toward the
    cap, never evaluated. Every evaluated candidate becomes a record (supernet metrics, its
    static metrics, evaluation time as wall_s), judged against the constraints on measured
    metrics. Records go through the black-box search's ``SearchRecorder`` (trials.jsonl,
    best_cell.json by the primary objective, pareto.json with several objectives), whose
    progress goes to ``on_progress`` after every candidate; its board writes HParams
    sessions for the best ``BOARD_SESSIONS`` candidates only. A candidate's trial id is
    ``epochs + 1 + proposal.id``."""

    def __init__(self, run: RunFolder, recorder: Recorder, screen: Screen, method: Spos,
                 epochs: int, records: list[dict], searcher,
                 on_progress: Callable[[SearchProgress], None] | None = None):
        self.recorder, self.screen, self.epochs = recorder, screen, epochs
        self.goal = recorder.goal
        self.searcher = searcher
        # the black-box search's TensorBoard: per-candidate HParams, search/ scalars
        # per-candidate HParams sessions for the best BOARD_SESSIONS candidates only
        board = SearchBoard(run, f"{recorder.method_name} search phase", self.goal,
                            sessions=BOARD_SESSIONS)
        # the budget counts the epochs' records too (they are in ``records``), so the
        # progress reads "trial 7 of epochs + candidates", as trials.jsonl and compare do
        self.book = SearchRecorder(run, board, records, epochs + method.config.candidates, 1,
                                   on_progress, goal=self.goal)
        self.origin = {"origin": recorder.method_name, "phase": SEARCH_PHASE,
                       "evaluator": method.config.evaluator,
                       "candidates": method.config.candidates}
        self.static: dict[int, dict] = {}
        self.evaluated = self.ok = 0

    def _fields(self, proposal) -> dict:
        return {"trial": self.epochs + 1 + proposal.id,
                "origin": {**proposal.meta, **self.origin, "proposal": proposal.id,
                           "proposed_by": proposal.meta.get("origin")},
                "resources": self.recorder.resources}

    def before(self, proposal):
        self._record_screened()
        static = self.screen.measure(proposal)
        record = self.screen.refusal(proposal, static, **self._fields(proposal))
        if record is None:
            self.static[proposal.id] = static
            return None
        self.book.finished(record)  # recorded before the searcher is told, as black-box
        self.screen.count_refusal()
        return result_from_record(record)

    def _record_screened(self) -> None:
        """The candidates a prescreen (``--prescreen``) passed over in the last ask: recorded
        as ``screened`` with the proxy's score, already told to the searcher, never
        evaluated on the supernet and not candidates of the phase."""
        take = getattr(self.searcher, "take_screened", None)
        for proposal, result in (take() if take is not None else ()):
            now = time.time()
            self.book.finished(TrialRecord(
                trial=0, status=Status.SCREENED, hash=proposal.hash,
                tokens=tuple(proposal.tokens), origin={},
                arch=self.recorder.space.to_graph(proposal.arch).to_dict(),
                metrics=dict(result.metrics), wall_s=0.0, train_s=0.0, resources={},
                error=result.error, started_at=now, finished_at=now
            ).replace(**self._fields(proposal)))

    def after(self, proposal, result, seconds: float):
        self.evaluated += 1
        static = self.static.pop(proposal.id)
        now = time.time()
        record = TrialRecord(
            trial=0, status=result.status, hash=proposal.hash, tokens=tuple(proposal.tokens),
            origin={}, arch=self.recorder.space.to_graph(proposal.arch).to_dict(),
            metrics={**result.metrics, **static, **self.recorder.judged_metrics(proposal.arch),
                     "epoch": self.epochs}, epochs=self.epochs,
            params=static.get("params"), mult_adds=static.get("mult_adds"), wall_s=seconds,
            train_s=None, restored_epoch=0, resources={}, error=result.error, failure=None,
            started_at=now - seconds, finished_at=now).replace(**self._fields(proposal))
        record = judge_finished(self.goal, record)
        best = self.book.best
        if record.params is None and \
                best_trial([r for r in (best, record) if r], self.goal.primary) is record:
            # a new best: its counts, as every epoch's record has (measured only for bests:
            # counting costs about a candidate's evaluation on a GPU)
            counts = self.recorder.child_static(proposal)
            record = record.replace(params=counts["params"], mult_adds=counts["mult_adds"])
        self.book.finished(record)
        self.book.told(self.searcher, record)
        self.ok += record.status == Status.OK
        return result_from_record(record)

    def stop(self) -> bool:
        return self.screen.capped

    def close(self) -> None:
        """Called when the phase ends: flushes its TensorBoard files."""
        self.book.board.close()


def _search_phase(run: RunFolder, recorder: Recorder, method: Spos, config: SearchConfig,
                  epochs: int, setting: ModelSetting,
                  on_progress: Callable[[SearchProgress], None] | None = None) -> dict:
    """spos after its last epoch: the searcher (``evaluator``, for the search's objectives)
    with the supernet as evaluator, every candidate recorded (``SearchPhaseJudge``); returns
    and saves (search_phase.json) its summary. Skipped when it already ended."""
    done = run.read_json(SEARCH_PHASE_DONE, "search-phase summary")
    if done is not None:
        return done
    t0 = time.time()
    cfg = method.config
    records = [r for r in run.trials() if r.get("origin", {}).get("phase") != SEARCH_PHASE]
    if len(records) != len(run.trials()):  # a phase cut short (not synced: data parallel)
        recorder.book.rewrite(records)
    screen = Screen(config.goal, method.space, setting,
                    infeasible_cap(cfg.candidates, config.max_infeasible))
    searcher = goal_searcher(cfg.evaluator, method.space, method.seed, config.goal)
    if config.prescreen is not None:  # each candidate the best of K by the proxy
        proxy, k = parse_prescreen(config.prescreen)
        searcher = Prescreen(searcher, prescreen_scorer(config, run, method.space, setting,
                                                        method.data), k, proxy)
    judge = SearchPhaseJudge(run, recorder, screen, method, epochs, records, searcher,
                             on_progress)
    try:
        method.search_phase(searcher, judge)
    finally:
        judge.close()
    if judge.evaluated and not judge.ok:
        raise SupernetError("the search phase evaluated no path successfully")
    done = {"candidates": cfg.candidates, "evaluated": judge.evaluated,
            Status.INFEASIBLE.value: screen.seen,  # paths refused before evaluation
            "stopped": StopReason.INFEASIBLE.value if screen.capped else None,
            **({Status.SCREENED.value: searcher.screened} if config.prescreen else {}),
            "wall_s": time.time() - t0}
    run.write_json(SEARCH_PHASE_DONE, done)
    return done


def _description(config, recipe, epochs, data, macro, space, estimate, method_cfg) -> dict:
    from dataclasses import asdict

    method = {"name": config.searcher, **asdict(method_cfg)}  # every option, defaults too
    if isinstance(method_cfg, DartsConfig):
        method["order"] = method_cfg.order  # 1: first order, 2: unrolled (second order)
    return {"format": FORMAT, "search": config.to_dict(), "method": method,
            "nasforge_version": nasforge.__version__,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "recipe": recipe.to_dict(), "epochs": epochs,
            "setting": recipe.defaults.setting or family_of(space).setting,
            "macro": asdict(macro),
            "space": {"name": config.space, "decisions": list(space.decisions()),
                      **{k: v if isinstance(v, (int, str)) else list(v)
                         for k in ("num_blocks", "ops", "combines", "dataset")
                         if (v := getattr(space, k, None)) is not None}},
            "supernet": {"params": estimate.params,
                         "activation_bytes_per_image": estimate.activation_bytes_per_image},
            "data": {"source": data.source, "format": data.format,
                     "train": len(data.train), "val": len(data.val),
                     "classes": list(data.classes), "image_size": list(data.image_size)}}


def _summary(run: RunFolder, config: SearchConfig, result: dict, epochs: int,
             wall_s: float, phase: dict | None = None) -> dict:
    goal = config.goal
    records = [TrialRecord.from_json(r) for r in run.trials()]
    trained = [r for r in records if r.status not in UNTRAINED]
    best = best_trial(records, goal.primary)
    ok = result["status"] == Status.OK  # the supernet's training
    stopped = None if ok else StopReason.BROKEN
    if stopped is None and phase is not None and phase.get("stopped") == StopReason.INFEASIBLE:
        stopped = StopReason.INFEASIBLE
    return SearchSummary(
        run_dir=str(run.path), searcher=config.searcher, budget=config.trials,
        objective=str(goal.primary), finished=len(trained),
        failed=sum(r.status == Status.FAILED for r in records), pruned=0,
        infeasible=sum(r.status == Status.INFEASIBLE for r in records),
        best=None if best is None else trial_score(best, goal.primary),
        best_val_acc=None if best is None else trial_score(best),
        best_trial=None if best is None else best.trial,
        best_hash=None if best is None else best.hash,
        best_cell=str(run.best_path) if run.best_path.is_file() else None,
        pareto_front=[r.trial for r in goal.front(records)] if goal.multi else None,
        stopped=stopped,
        infeasible_message=describe_infeasible(
            config, phase["candidates"], "evaluation on the supernet")
        if stopped == StopReason.INFEASIBLE else None,
        broken=None if ok else {"message": f"supernet training {result['status']}",
                                "trial": None, "traceback": None},
        status=result["status"], epochs=result["epochs"], wall_s=wall_s,
        device_s=sum(device_seconds(r) for r in trained)).to_json()
