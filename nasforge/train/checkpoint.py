"""The trainer's checkpoint file: its name, how it is written and read, and the
``metrics.jsonl`` that must agree with it after a resume.

A checkpoint holds only tensors (weights, optimiser moments, RNG states as uint8 tensors),
plain containers, numbers and strings, so it is read with ``torch.load(weights_only=True)``
(:func:`nasforge.safe_load.load_plain`): a crafted file from someone else's run folder is
refused before anything in it runs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from nasforge.safe_load import RefusedFileError, load_plain, read_text

CHECKPOINT_NAME = "checkpoint.pt"  # in the run's checkpoint_dir (nasforge train, trials, transfer)
CHECKPOINT_VERSION = 1


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file in the same folder, then
    ``os.replace``): a run killed while saving keeps its previous checkpoint."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path`` (on the CPU). Called when a run resumes and wherever a
    checkpoint's epoch or history is read. Raises
    :class:`~nasforge.safe_load.RefusedFileError` for a file that is not a plain-data
    checkpoint."""
    state = load_plain(path, "checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise RefusedFileError(f"cannot read checkpoint {path}: not a nasforge checkpoint "
                               f"(no epoch)")
    return state


def sync_metrics(metrics_path, checkpoint_path) -> int:
    """Called when a run starts, before training: make ``metrics_path`` (one JSON line per
    epoch) hold exactly the checkpoint's epochs, so a resumed run appends after them. Lines a
    kill left beyond the checkpoint are dropped; epochs whose line was never written are taken
    from the checkpoint's history; lines that are kept keep their extra fields. Without a
    checkpoint the file is emptied. Returns the number of epochs in the checkpoint."""
    metrics_path, checkpoint_path = Path(metrics_path), Path(checkpoint_path)
    history = load_checkpoint(checkpoint_path).get("history", []) \
        if checkpoint_path.exists() else []
    lines = []
    if metrics_path.exists():
        lines = [ln for ln in read_text(metrics_path, "metrics file").splitlines()
                 if ln.strip()][:len(history)]
    lines += [json.dumps(h) for h in history[len(lines):]]
    metrics_path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return len(history)
