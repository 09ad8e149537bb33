"""TensorBoard output of a search, written by the driver with TensorBoard's own event files.

Layout (so ``tensorboard --logdir runs`` compares every run side by side); ``<obj>`` is the
search's primary objective (``val_acc`` unless ``--objective`` says otherwise):

* ``runs/<name>/`` (the run): ``search/best_<obj>`` and ``search/<obj>`` per finished trial
  (step = trials finished), ``search/best_<obj>_by_device_s`` (step = accumulated device
  seconds: trial wall time x GPUs per trial, x 1 for a CPU trial), ``search/failed``,
  ``search/pruned``, ``search/infeasible`` (proposals refused before training),
  ``search/pareto_front_size`` (several objectives), ``searcher/*`` (``Searcher.stats()``:
  controller reward, baseline, entropy, loss, KL; evolution population scores and age;
  duplicate hits). Images: with one objective ``search/<obj>_vs_mult_adds`` (or
  ``_vs_val_acc`` when the objective is mult-adds) and ``search/best_cell`` whenever the best
  changes; with several ``search/pareto_front`` (the first two objectives, the front
  highlighted) and ``search/best_cell`` whenever the front changes. Cells are drawn with
  Graphviz, or with matplotlib (``nasforge.dsl.draw``) where ``dot`` is missing.
* ``runs/<name>/trials/<id>/``: that child's learning curve (``val_acc``, ``train_loss``, ...
  per epoch) and its HParams entry (searcher, hash, origin, params, mult-adds, and for a
  NAS-Bench-201 cell its string and arch_index -> objectives).
  A board built with ``sessions=k`` (spos's search phase: hundreds of candidates scored in
  seconds each, no curve of their own) writes these folders for the best k trials only, when
  it is closed: TensorBoard's run selector then lists k + 1 runs, not one per candidate.
"""
from __future__ import annotations

import io
import logging
import math

from nasforge.dsl import CellChain
from nasforge.dsl.cell import render
from nasforge.dsl.draw import draw_png
from nasforge.search.objectives import Goal
from nasforge.search.run_folder import ranked_trials
from nasforge.search_spaces import record_graph
from nasforge.search_spaces.nas_bench_201 import stored_cell
from nasforge.trials import metric_value

log = logging.getLogger(__name__)

CURVE_KEYS = ("val_acc", "val_loss", "train_acc", "train_loss")


def scatter_axes(goal: Goal) -> tuple[str, str]:
    """(x metric, y metric) of the search's objective scatter."""
    if goal.multi:
        return goal.objectives[1].name, goal.objectives[0].name
    y = goal.primary.name
    return ("val_acc" if y == "mult_adds" else "mult_adds"), y


class SearchBoard:
    """Called by the recorder: ``epoch`` per intermediate report, ``finished`` per trial."""

    def __init__(self, run, searcher_name: str, goal: Goal | None = None,
                 sessions: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.searcher_name = searcher_name
        self.goal = goal or Goal()
        # None: each trial's folder (curve, HParams session) as it finishes; k: only the best
        # k trials' (primary objective, ranked_trials), written by close()
        self.sessions = sessions
        self._kept: list[dict] = []  # sessions=k: the best k records so far
        self.writer = SummaryWriter(log_dir=str(run.path))
        self._writers: dict[int, object] = {}
        self._points: list[dict] = []  # feasible ok records (what the scatter shows)

    def _trial_writer(self, trial_id: int):
        from torch.utils.tensorboard import SummaryWriter

        w = self._writers.get(trial_id)
        if w is None:
            w = self._writers[trial_id] = SummaryWriter(log_dir=str(self.run.trial_dir(trial_id)))
        return w

    def epoch(self, trial_id: int, metrics: dict) -> None:
        step = int(metrics.get("epoch", 0))
        w = self._trial_writer(trial_id)
        for k in CURVE_KEYS:
            if k in metrics:
                w.add_scalar(k, metrics[k], step)
        w.flush()

    def finished(self, record: dict, progress, searcher_stats: dict,
                 best_changed: bool, best_record: dict | None,
                 front: list[dict] | None = None) -> None:
        """After each trained trial (``progress``: the search's ``recorder.SearchProgress``
        after it); ``front``: the new Pareto front when it just changed."""
        feasible = self.goal.values(record) is not None
        if self.sessions is None:
            self._session(record, feasible)
        else:
            self._kept = ranked_trials(self._kept + [record], self.goal.primary)[:self.sessions]

        step = int(progress.finished)
        s = self.writer
        name = self.goal.primary.name
        value = metric_value(record, name) if feasible else None
        if value is not None:
            s.add_scalar(f"search/{name}", value, step)
        if feasible:
            self._points.append(record)
        if progress.best is not None:
            s.add_scalar(f"search/best_{name}", progress.best, step)
            s.add_scalar(f"search/best_{name}_by_device_s", progress.best,
                         int(round(progress.device_s)))
        s.add_scalar("search/failed", progress.failed, step)
        s.add_scalar("search/pruned", progress.pruned, step)
        s.add_scalar("search/infeasible", progress.infeasible, step)
        if progress.front is not None:
            s.add_scalar("search/pareto_front_size", progress.front, step)
        for k, v in searcher_stats.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                s.add_scalar(f"searcher/{k}", v, step)
        if self.goal.multi:
            if front is not None:
                self._images(front, best_record, step)
        elif best_changed and best_record is not None:
            self._images([best_record], best_record, step)
        s.flush()

    def _session(self, record: dict, feasible: bool) -> None:
        """A trial's folder: its curve's last point and its HParams session."""
        from torch.utils.tensorboard.summary import hparams

        tid = int(record["trial"])
        metrics = record["metrics"]
        w = self._trial_writer(tid)
        self.epoch(tid, metrics)
        hp = {"searcher": self.searcher_name, "hash": record["hash"][:16],
              "origin": str(record["origin"].get("origin", "")), "status": record["status"],
              "params": float(record["params"] or 0), "mult_adds": float(record["mult_adds"] or 0),
              **arch_hparams(record.get("arch"))}
        result_metrics = {}
        for o in self.goal.objectives:
            v = metric_value(record, o.name) if feasible else None
            result_metrics[f"hparams/{o.name}"] = float("nan") if v is None else v
        for summary in hparams(hp, result_metrics):
            w.file_writer.add_summary(summary)
        for k, v in result_metrics.items():
            w.add_scalar(k, v, 0)
        w.close()
        self._writers.pop(tid, None)

    def _images(self, highlight: list[dict], best: dict | None, step: int) -> None:
        import numpy as np
        from PIL import Image

        x, y = scatter_axes(self.goal)
        tag = "search/pareto_front" if self.goal.multi else f"search/{y}_vs_{x}"
        try:
            png = _scatter_png(self._points, highlight, x, y, self.goal.multi)
            self.writer.add_image(tag, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
                                  step, dataformats="HWC")
        except ImportError:
            log.warning("matplotlib is not installed: no %s image", tag)
        if best is not None:
            add_cell_drawing(self.writer, "search/best_cell", best["arch"], step)

    def close(self) -> None:
        for record in self._kept:  # sessions=k: the best k trials' folders
            self._session(record, True)
        self._kept = []
        for w in self._writers.values():
            w.close()
        self._writers.clear()
        self.writer.close()


def arch_hparams(arch) -> dict:
    """HParams that name a record's architecture where it has a short name: a NAS-Bench-201
    cell's string (``cell``) and, where the search loaded a table, its ``arch_index``."""
    cell = stored_cell(arch)
    if cell is None:
        return {}
    return {"cell": cell[0], **({} if cell[1] is None else {"arch_index": cell[1]})}


def add_cell_drawing(writer, tag: str, pair_dict: dict, step: int) -> None:
    """Add the drawing of a cell pair (``CellPair.to_dict()``) to a SummaryWriter as an image
    (``cell_png``); logs a warning instead when it cannot be drawn at all."""
    try:
        import numpy as np
        from PIL import Image

        png = cell_png(pair_dict)
        writer.add_image(tag, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), step,
                         dataformats="HWC")
    except Exception as e:  # neither Graphviz nor matplotlib: the search goes on
        log.warning("cell drawing skipped: %s", e)


def cell_png(arch_dict: dict) -> bytes:
    """PNG of a cell pair (or of a whole network, a cell chain: nas-bench-201): Graphviz when
    its ``dot`` program is there, else matplotlib (a chain: its first cell that is not the
    stem)."""
    arch = record_graph(arch_dict)
    try:
        return render(arch.to_dot(), "png")
    except RuntimeError as e:  # no Graphviz
        log.info("%s: drawing the cell with matplotlib", e)

        return draw_png(arch.cells[min(1, len(arch.cells) - 1)]
                        if isinstance(arch, CellChain) else arch)


def _scatter_png(records: list[dict], highlight: list[dict], x: str, y: str,
                 front: bool) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def scale(name):  # mult-adds and params read better in millions
        return (1e6, f"{name} (M)") if name in ("mult_adds", "params") else (1.0, name)

    (sx, lx), (sy, ly) = scale(x), scale(y)

    def coords(rs):
        pts = [(metric_value(r, x), metric_value(r, y)) for r in rs]
        pts = [(a / sx, b / sy) for a, b in pts if a is not None and b is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=80)
    xs, ys = coords(records)
    ax.scatter(xs, ys, s=12, alpha=0.6, label="trials")
    hx, hy = coords(highlight)
    if front:
        order = sorted(zip(hx, hy))
        ax.plot([p[0] for p in order], [p[1] for p in order], color="red", lw=1, alpha=0.6)
        ax.scatter(hx, hy, s=40, marker="*", color="red",
                   label=f"Pareto front ({len(highlight)})")
    else:
        ax.scatter(hx, hy, s=60, marker="*", color="red",
                   label=f"best (trial {highlight[0]['trial']})")
    ax.set_xlabel(lx)
    ax.set_ylabel(ly)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
