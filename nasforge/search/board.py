"""TensorBoard output of a search, written by the driver with TensorBoard's own event files.

Layout (so ``tensorboard --logdir runs`` compares every run side by side):

* ``runs/<name>/`` (the run): ``search/best_val_acc`` and ``search/val_acc`` per finished trial
  (step = trials finished), ``search/best_val_acc_by_device_s`` (step = accumulated device
  seconds: trial wall time x GPUs per trial, x 1 for a CPU trial), ``search/failed``,
  ``search/pruned``, ``searcher/*`` (``Searcher.stats()``: controller reward, baseline, entropy,
  loss, KL; evolution population scores and age; duplicate hits); images
  ``search/val_acc_vs_mult_adds`` and ``search/best_cell`` whenever the best changes.
* ``runs/<name>/trials/<id>/``: that child's learning curve (``val_acc``, ``train_loss``, ...
  per epoch) and its HParams entry (searcher, hash, origin, params, mult-adds -> accuracy).
"""
from __future__ import annotations

import io
import logging
import math

log = logging.getLogger(__name__)

CURVE_KEYS = ("val_acc", "val_loss", "train_acc", "train_loss")


class SearchBoard:
    """Called by the recorder: ``epoch`` per intermediate report, ``finished`` per trial."""

    def __init__(self, run, searcher_name: str):
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.searcher_name = searcher_name
        self.writer = SummaryWriter(log_dir=str(run.path))
        self._writers: dict[int, object] = {}
        self._points: list[tuple[float, float, bool]] = []  # (mult_adds, val_acc, ok)

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

    def finished(self, record: dict, progress: dict, searcher_stats: dict,
                 best_changed: bool, best_record: dict | None) -> None:
        from torch.utils.tensorboard.summary import hparams

        tid = int(record["trial"])
        metrics = record["metrics"]
        w = self._trial_writer(tid)
        self.epoch(tid, metrics)
        acc = metrics.get("val_acc") if record["status"] == "ok" else None
        hp = {"searcher": self.searcher_name, "hash": record["hash"][:16],
              "origin": str(record["origin"].get("origin", "")), "status": record["status"],
              "params": float(record["params"] or 0), "mult_adds": float(record["mult_adds"] or 0)}
        result_metrics = {"hparams/val_acc": acc if acc is not None else float("nan")}
        for summary in hparams(hp, result_metrics):
            w.file_writer.add_summary(summary)
        w.add_scalar("hparams/val_acc", result_metrics["hparams/val_acc"], 0)
        w.close()
        self._writers.pop(tid, None)

        step = int(progress["finished"])
        s = self.writer
        if acc is not None:
            s.add_scalar("search/val_acc", acc, step)
            self._points.append((float(record["mult_adds"] or 0), acc, True))
        if progress["best"] is not None:
            s.add_scalar("search/best_val_acc", progress["best"], step)
            s.add_scalar("search/best_val_acc_by_device_s", progress["best"],
                         int(round(progress["device_s"])))
        s.add_scalar("search/failed", progress["failed"], step)
        s.add_scalar("search/pruned", progress["pruned"], step)
        for k, v in searcher_stats.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                s.add_scalar(f"searcher/{k}", v, step)
        if best_changed and best_record is not None:
            self._images(best_record, step)
        s.flush()

    def _images(self, best: dict, step: int) -> None:
        import numpy as np
        from PIL import Image

        try:
            png = _scatter_png(self._points, best)
            self.writer.add_image("search/val_acc_vs_mult_adds",
                                  np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
                                  step, dataformats="HWC")
        except ImportError:
            log.warning("matplotlib is not installed: no accuracy vs mult-adds image")
        add_cell_drawing(self.writer, "search/best_cell", best["arch"], step)

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()
        self.writer.close()


def add_cell_drawing(writer, tag: str, pair_dict: dict, step: int) -> None:
    """Add the Graphviz drawing of a cell pair (``CellPair.to_dict()``) to a SummaryWriter as
    an image; logs a warning instead when it cannot be drawn (Graphviz missing)."""
    try:
        import numpy as np
        from PIL import Image

        from nasforge.dsl import CellPair
        from nasforge.dsl.cell import render

        png = render(CellPair.from_dict(pair_dict).to_dot(), "png")
        writer.add_image(tag, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), step,
                         dataformats="HWC")
    except Exception as e:  # Graphviz missing: the search goes on without the drawing
        log.warning("cell drawing skipped: %s", e)


def _scatter_png(points, best: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=80)
    xs = [p[0] / 1e6 for p in points]
    ys = [p[1] for p in points]
    ax.scatter(xs, ys, s=12, alpha=0.6, label="trials")
    ax.scatter([float(best["mult_adds"] or 0) / 1e6], [best["metrics"]["val_acc"]], s=60,
               marker="*", color="red", label=f"best (trial {best['trial']})")
    ax.set_xlabel("multiply-adds (M)")
    ax.set_ylabel("validation accuracy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
