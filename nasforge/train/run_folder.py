"""The folder of one training run: ``nasforge train``'s run and each model of a transfer.

::

    config.json              what ran (``nasforge train``: recipe, model, data, versions)
    checkpoint.pt            written by ``train`` after every epoch; a run started again in
                             the folder continues after its last epoch
    metrics.jsonl            one JSON line per finished epoch, in step with the checkpoint
    events.out.tfevents.*    the same metrics as TensorBoard scalars

A run calls, in this order: ``resumed_epochs()`` before its data loads (a refused checkpoint
stops it early; ``metrics.jsonl`` is brought in step with the checkpoint), ``open()`` when
training starts, ``log_epoch`` from the trainer's ``report`` and ``close()`` at the end (or
``with folder.open():``). In a data-parallel run only rank 0 has a folder.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from nasforge.train.checkpoint import CHECKPOINT_NAME, sync_metrics

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"


class TrainingRunFolder:
    """One training run's folder (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path)
        self.metrics_path = self.path / METRICS_NAME
        self.checkpoint_path = self.path / CHECKPOINT_NAME
        self.board = None  # TensorBoard's SummaryWriter while open (None without tensorboard)
        self._epochs_done: int | None = None  # metrics.jsonl is in step with the checkpoint

    def resumed_epochs(self) -> int:
        """The epochs of the checkpoint a run in this folder continues after (0: a new run);
        with a checkpoint, ``metrics.jsonl`` holds exactly its epochs afterwards.
        ``load_checkpoint``'s errors (a refused file) propagate."""
        if not self.checkpoint_path.exists():
            return 0
        if self._epochs_done is None:
            self._epochs_done = sync_metrics(self.metrics_path, self.checkpoint_path)
        return self._epochs_done

    def write_config(self, config: dict) -> None:
        """``config.json``: what the run trains, with what (called before ``open``)."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")

    def open(self, board: bool = True) -> "TrainingRunFolder":
        """Called when training starts: the folder exists, ``metrics.jsonl`` holds the
        checkpoint's epochs (empty for a new run) and, with ``board``, TensorBoard's writer is
        open (``self.board``; None where tensorboard is not installed)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self._epochs_done is None:
            self._epochs_done = sync_metrics(self.metrics_path, self.checkpoint_path)
        if board and self.board is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # a dependency; a broken install still trains
                log.info("tensorboard is not installed: no event files in %s", self.path)
            else:
                self.board = SummaryWriter(log_dir=str(self.path))
        return self

    def log_epoch(self, epoch: int, metrics: dict) -> None:
        """Called once per finished epoch (the trainer's ``report``): a line of
        ``metrics.jsonl`` and TensorBoard scalars (the finite numbers) at step ``epoch``."""
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.board is not None:
            for k, v in metrics.items():
                if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.board.add_scalar(k, v, epoch)
            self.board.flush()

    def close(self) -> None:
        """Called when training has ended (also after an error): closes TensorBoard."""
        if self.board is not None:
            self.board.close()
            self.board = None

    def __enter__(self) -> "TrainingRunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
