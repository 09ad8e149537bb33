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
                       accuracy as val_acc, the epoch's wall time as wall_s), plus spos's
                       search-phase winner: what `nasforge compare` (device-hours), `export
                       best_cell --run` and `transfer` read
    best_cell.json     the best record's cell by the one best-trial rule (run_folder)
    events.out.tfevents.*   losses, accuracy, entropy, method statistics, architecture-weight
                       heatmaps and the derived cell's drawing per epoch

trajectory.jsonl and trials.jsonl are functions of the checkpoint's history (each epoch's
history entry holds what both lines need), so a resume rewrites them from the checkpoint:
an epoch a SIGKILL cut short is neither lost nor repeated.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import nasforge
from nasforge.oneshot.global_bn import use_global_batch_norm
from nasforge.oneshot.methods import (METHODS, Darts, DartsConfig, OneShotModel, Spos,
                                      method_config)
from nasforge.oneshot.supernet import Supernet, SupernetError, check_shareable
from nasforge.search.config import SearchConfig, SearchError
from nasforge.search.objectives import Goal
from nasforge.search.run_folder import TRIALS, RunFolder, best_trial, device_seconds

log = logging.getLogger(__name__)

FORMAT = "nasforge.oneshot/1"
TRAJECTORY = "trajectory.jsonl"
SEARCH_PHASE = "search"  # origin.phase of spos's search-phase record


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


def macro_config(recipe, data):
    """The supernet's NASNet macro: the recipe's setting and model overrides (N, filters),
    sized for ``data``; no drop-path, no auxiliary head (the supernet has neither)."""
    from nasforge.zoo import SETTINGS

    setting = recipe.setting or "cifar"
    if setting not in SETTINGS:
        raise SupernetError(f"recipe {recipe.name}: setting {setting!r} is not a cell-network "
                            f"setting ({', '.join(SETTINGS)})")
    return replace(SETTINGS[setting], **dict(recipe.model_overrides),
                   num_classes=data.num_classes, input_size=data.image_size[0],
                   in_channels=data.channels, drop_path_keep_prob=1.0, aux_head=False)


class Recorder:
    """The trainer's ``report`` on rank 0: run-folder lines, best cell and TensorBoard."""

    def __init__(self, run: RunFolder, method, space, macro, resources: dict, board: bool):
        self.run, self.method, self.space, self.macro = run, method, space, macro
        self.resources = resources
        self.sizes: dict[str, tuple[int, int]] = {}
        self.writer = None
        if board:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run.path))

    def child_size(self, tokens) -> tuple[int, int]:
        """(params, mult-adds) of a derived cell's stand-alone network under the macro."""
        key = ",".join(map(str, tokens))
        if key not in self.sizes:
            from nasforge.compiler.network import Network
            from nasforge.flops import count_mult_adds, count_params

            net = Network(self.space.to_graph(self.space.decode(tokens)), self.macro)
            self.sizes[key] = (count_params(net),
                               count_mult_adds(net, self.macro.input_size,
                                               self.macro.in_channels)[0])
        return self.sizes[key]

    def lines(self, entry: dict) -> tuple[dict, dict]:
        """(trajectory line, trials.jsonl record) of one epoch's history entry."""
        epoch = int(entry["epoch"])
        traj = {"epoch": epoch, "cell": entry["cell"], "hash": entry["hash"],
                "tokens": entry["tokens"], "val_acc": entry.get("val_acc"),
                "val_loss": entry.get("val_loss"), "train_loss": entry.get("train_loss"),
                "train_acc": entry.get("train_acc"), "entropy": entry.get("entropy"),
                "lr": entry.get("lr"), "wall_s": entry.get("epoch_s"),
                "elapsed_s": entry.get("elapsed_s")}
        traj.update({k: v for k, v in entry.items() if k.startswith("method_")})
        params, mult_adds = self.child_size(entry["tokens"])
        started = entry.get("started_at") or 0.0
        record = {
            "trial": epoch, "status": "ok", "hash": entry["hash"], "tokens": entry["tokens"],
            "origin": {"origin": self.method_name, "epoch": epoch},
            "arch": entry["cell"],
            "metrics": {"val_acc": entry.get("val_acc"), "val_loss": entry.get("val_loss"),
                        "epoch": epoch},
            "epochs": epoch, "params": params, "mult_adds": mult_adds,
            "wall_s": entry.get("epoch_s"), "train_s": None, "restored_epoch": 0,
            "resources": self.resources, "error": None, "failure": None,
            "started_at": started, "finished_at": started + float(entry.get("epoch_s") or 0),
        }
        return traj, record

    @property
    def method_name(self) -> str:
        return next(name for name, cls in METHODS.items() if type(self.method) is cls)

    def sync(self, history: list[dict], keep_search_phase: bool) -> None:
        """Called before training: make trajectory.jsonl and trials.jsonl hold exactly the
        checkpoint's epochs (and, once every epoch is done, spos's search-phase record)."""
        pairs = [self.lines(h) for h in history if "cell" in h]
        records = [r for _, r in pairs]
        if keep_search_phase:
            records += [r for r in self.run.trials()
                        if r.get("origin", {}).get("phase") == SEARCH_PHASE]
        self.run.write_lines(TRAJECTORY, [t for t, _ in pairs])
        self.run.write_lines(TRIALS, records)
        self._write_best(records)

    def _write_best(self, records: list[dict]) -> dict | None:
        from nasforge.dsl import CellPair

        best = best_trial(records)
        if best is not None:
            self.run.write_best(CellPair.from_dict(best["arch"]).to_json() + "\n")
        return best

    def epoch(self, epoch: int, entry: dict) -> None:
        """The trainer's ``report`` (rank 0): append the epoch's lines, update the best
        cell, write TensorBoard."""
        if "cell" not in entry:  # a diverged epoch derives nothing
            return
        traj, record = self.lines(entry)
        self.run.append_line(TRAJECTORY, traj)
        self.run.append_trial(record)
        self._write_best(self.run.trials())
        if self.writer is not None:
            self._board(epoch, traj)

    def add_record(self, record: dict) -> None:
        self.run.append_trial(record)
        self._write_best(self.run.trials())

    def _board(self, step: int, traj: dict) -> None:
        import math

        from nasforge.search.board import add_cell_drawing

        w = self.writer
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "entropy", "lr"):
            v = traj.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                w.add_scalar(f"oneshot/{key}", v, step)
        for key, v in traj.items():
            if key.startswith("method_") and isinstance(v, (int, float)) and math.isfinite(v):
                w.add_scalar(f"method/{key[len('method_'):]}", v, step)
        for kind, table in self.method.heatmaps().items():
            w.add_image(f"architecture/{kind}", _heatmap(table), step, dataformats="HWC")
        add_cell_drawing(w, "oneshot/derived_cell", traj["cell"], step)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _heatmap(table):
    """A probability table (rows: block slots, columns: candidates) as an RGB image, 8 px per
    cell: white = 0, dark blue = 1."""
    import numpy as np

    t = np.clip(np.asarray(table, np.float32), 0, 1)
    t = t / max(float(t.max()), 1e-12)
    rgb = np.stack([1 - t, 1 - 0.6 * t, 1 - 0.2 * t], -1)
    return (np.kron(rgb, np.ones((8, 8, 1))) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- the search
def _open(config: SearchConfig | None, run_dir, resume: bool):
    from nasforge.search.runner import open_run

    return open_run(config, run_dir, resume, FORMAT, "one-shot search")


def prepare(config: SearchConfig, recipe):
    """(method config, space, data, macro) of a search, every input checked (SupernetError,
    SearchError, DataError) before anything is built or written."""
    from nasforge.data import load_data
    from nasforge.search_spaces import SPACES, get_space

    method_cfg = method_config(config.searcher, config.searcher_options)
    if config.goal != Goal.parse():
        # one-shot methods rank paths by supernet accuracy; issue 13's part 5 (constraints
        # filtering derived or evaluated paths) is not built yet
        raise SearchError(f"one-shot searches ({config.searcher}) optimize val_acc only: "
                          f"--objective/--objectives/--constraint are for black-box searchers")
    if isinstance(method_cfg, DartsConfig) and method_cfg.unrolled and \
            recipe.optimizer != "sgd":
        raise SupernetError(f"unrolled=true simulates an SGD step; recipe {recipe.name} trains "
                            f"the weights with {recipe.optimizer}")
    if config.space not in SPACES:
        raise SearchError(f"unknown search space {config.space!r} (known: {', '.join(SPACES)})")
    try:
        space = get_space(config.space, **method_cfg.space_options())
    except (TypeError, ValueError) as e:
        raise SupernetError(f"search space {config.space!r}: {e}") from None
    val_size = recipe.val_size if config.val_size is None else config.val_size
    data = load_data(config.data or recipe.data, split="search", val_size=val_size,
                     seed=config.seed, cache_dir=config.cache_dir)
    macro = macro_config(recipe, data)
    check_shareable(space, macro)
    return method_cfg, space, data, macro


def build(config: SearchConfig, recipe, method_cfg, space, data, macro, epochs: int):
    """(model, method): the supernet under the search seed, wrapped for the trainer, and the
    method that steers it. Called by the driver and by every data-parallel worker."""
    import torch

    torch.manual_seed(config.seed)
    # global-batch BN statistics: 1 and N data-parallel workers take the same steps
    model = OneShotModel(use_global_batch_norm(Supernet(space, macro)))
    method = METHODS[config.searcher](space, model, data, epochs=epochs, seed=config.seed,
                                      config=method_cfg)
    return model, method


def run_oneshot(config: SearchConfig | None = None, run_dir=None, *, resume: bool = False,
                on_epoch: Callable[[dict], None] | None = None,
                on_start: Callable[[str], None] | None = None) -> dict:
    """Run (or with ``resume=True`` continue) a one-shot search in ``run_dir``; return a
    summary shaped like ``run_search``'s. ``on_epoch`` receives each epoch's trajectory line.
    Bad input raises SupernetError / SearchError / DataError before anything is written."""
    import torch

    from nasforge.oneshot.memory import check_fits
    from nasforge.train import CHECKPOINT_NAME, load_checkpoint

    run, config, recipe = _open(config, run_dir, resume)
    method_cfg, space, data, macro = prepare(config, recipe)
    epochs = config.epochs or recipe.epochs
    workers = max(1, int(config.gpus or 0)) if config.gpus else max(1, config.workers)
    device = torch.device("cuda" if config.gpus else "cpu")
    batch = min(recipe.batch_size, len(data.train)) // workers
    estimate = check_fits(space, macro, batch, METHODS[config.searcher] is Darts, device,
                          processes=workers)
    if not resume:
        # a one-shot run's "trials" are its records: one per epoch (+ spos's search phase),
        # which is the budget `nasforge compare` shows
        config = replace(config, trials=epochs + (METHODS[config.searcher] is Spos))
        run.create(_description(config, recipe, epochs, data, macro, space, estimate,
                                method_cfg))
    resources = {"cpu": float(workers), "gpu": float(config.gpus or 0)}
    t0 = time.time()
    if workers > 1 or config.address:
        from nasforge.oneshot.distributed import train_data_parallel

        if on_start is not None:
            on_start(f"{config.searcher} on a supernet of {estimate.params:,} parameters, "
                     f"{workers} data-parallel workers")
        result = train_data_parallel(config, recipe, run, epochs, workers, resources)
        # the driver's copy of the trained state, for spos's search phase
        model, method = build(config, recipe, method_cfg, space, data, macro, epochs)
        state = load_checkpoint(run.path / CHECKPOINT_NAME)
        model.load_state_dict(state["model"])
        model.to(device)
        method.bind(device, 0, 1)
        method.load_state_dict(state.get("hooks") or {})
        recorder = Recorder(run, method, space, macro, resources, board=False)
    else:
        model, method = build(config, recipe, method_cfg, space, data, macro, epochs)
        if on_start is not None:
            on_start(f"{config.searcher} on a supernet of {estimate.params:,} parameters "
                     f"(about {estimate.total_bytes / 2 ** 30:.2f} GiB per step), one process")
        recorder = Recorder(run, method, space, macro, resources, board=True)
        try:
            result = train_supernet(config, recipe, run, model, method, data, epochs,
                                    recorder, on_epoch, device)
        finally:
            recorder.close()
    if isinstance(method, Spos) and result["status"] == "ok":
        _search_phase(run, recorder, method, epochs)
    return _summary(run, config, result, epochs, time.time() - t0)


def train_supernet(config, recipe, run: RunFolder, model, method, data, epochs: int,
                   recorder: Recorder | None, on_epoch, device, distributed: bool = False):
    """Train the supernet with the one trainer (``method`` as its hooks) into ``run``'s
    checkpoint, after syncing the run's per-epoch files with it (``recorder``: rank 0)."""
    from nasforge.train import CHECKPOINT_NAME, load_checkpoint, train

    ckpt = run.path / CHECKPOINT_NAME
    if recorder is not None:
        history = load_checkpoint(ckpt)["history"] if ckpt.exists() else []
        recorder.sync(history, keep_search_phase=len(history) >= epochs)

    def report(epoch: int, entry: dict) -> None:
        if recorder is not None:
            recorder.epoch(epoch, entry)
            if on_epoch is not None:
                on_epoch(recorder.lines(entry)[0])

    return train(model, data, recipe, report=report, checkpoint_dir=run.path, device=device,
                 seed=config.seed, epochs=epochs, distributed=distributed, hooks=method)


def _search_phase(run: RunFolder, recorder: Recorder, method: Spos, epochs: int) -> None:
    """spos after its last epoch: the searcher with the supernet as evaluator; its best path
    becomes one more record (origin.phase "search"). Skipped when already recorded."""
    if any(r.get("origin", {}).get("phase") == SEARCH_PHASE for r in run.trials()):
        return
    t0 = time.time()
    proposal, result = method.search_phase()
    pair = method.space.to_graph(proposal.arch)
    params, mult_adds = recorder.child_size(list(proposal.tokens))
    now = time.time()
    recorder.add_record({
        "trial": epochs + 1, "status": "ok", "hash": pair.canonical_hash(),
        "tokens": list(proposal.tokens),
        "origin": {"origin": recorder.method_name, "phase": SEARCH_PHASE,
                   "evaluator": method.config.evaluator,
                   "candidates": method.config.candidates},
        "arch": pair.to_dict(),
        "metrics": {"val_acc": float(result.metrics["val_acc"]), "epoch": epochs},
        "epochs": epochs, "params": params, "mult_adds": mult_adds, "wall_s": now - t0,
        "train_s": None, "restored_epoch": 0, "resources": recorder.resources, "error": None,
        "failure": None, "started_at": t0, "finished_at": now})


def _description(config, recipe, epochs, data, macro, space, estimate, method_cfg) -> dict:
    from dataclasses import asdict

    method = {"name": config.searcher, **asdict(method_cfg)}  # every option, defaults too
    if isinstance(method_cfg, DartsConfig):
        method["order"] = method_cfg.order  # 1: first order, 2: unrolled (second order)
    return {"format": FORMAT, "search": config.to_dict(), "method": method,
            "nasforge_version": nasforge.__version__,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "recipe": recipe.to_dict(), "epochs": epochs,
            "setting": recipe.setting or "cifar",
            "macro": asdict(macro),
            "space": {"name": config.space, "num_blocks": space.num_blocks,
                      "ops": list(space.ops), "combines": list(space.combines)},
            "supernet": {"params": estimate.params,
                         "activation_bytes_per_image": estimate.activation_bytes_per_image},
            "data": {"source": data.source, "format": data.format,
                     "train": len(data.train), "val": len(data.val),
                     "classes": list(data.classes), "image_size": list(data.image_size)}}


def _summary(run: RunFolder, config: SearchConfig, result: dict, epochs: int,
             wall_s: float) -> dict:
    records = run.trials()
    best = best_trial(records)
    return {"run_dir": str(run.path), "searcher": config.searcher,
            "budget": epochs,
            "finished": len(records), "failed": 0, "pruned": 0,
            "best_val_acc": None if best is None else best["metrics"]["val_acc"],
            "best_trial": None if best is None else best["trial"],
            "best_hash": None if best is None else best["hash"],
            "best_cell": str(run.best_path) if run.best_path.is_file() else None,
            "stopped": None if result["status"] == "ok" else "broken",
            "broken": None if result["status"] == "ok" else {
                "message": f"supernet training {result['status']}", "trial": None,
                "traceback": None},
            "status": result["status"], "epochs": result["epochs"], "wall_s": wall_s,
            "device_s": sum(device_seconds(r) for r in records)}
