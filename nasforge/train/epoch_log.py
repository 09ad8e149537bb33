"""Where a training run's per-epoch metrics go: ``metrics.jsonl`` and TensorBoard."""
from __future__ import annotations

import json
import math


def log_epoch(metrics_path, writer, epoch: int, metrics: dict) -> None:
    """Called once per finished epoch: append ``metrics`` as one line of ``metrics_path`` and
    write its finite numbers as TensorBoard scalars at step ``epoch`` (``writer`` may be
    None)."""
    with open(metrics_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(metrics) + "\n")
    if writer is not None:
        for k, v in metrics.items():
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
                writer.add_scalar(k, v, epoch)
        writer.flush()
