"""Fault injection for chaos tests of the search runner (never active unless asked for).

``NASFORGE_INJECT_FAULTS="raise:3,nan:5,kill:7"`` (read by ``nasforge search``) or
``SearchConfig(faults=(("raise", 3), ...))`` makes the named trial ids misbehave the way long
searches do, through the real code paths:

* ``raise``: the child's training raises an exception after its first epoch;
* ``nan``:   the child's weights are NaN, so its loss is non-finite and the trainer reports
             ``diverged``;
* ``kill``:  the worker process SIGKILLs itself after its first epoch's checkpoint, on the
             first attempt only (Ray retries the trial from that checkpoint).
"""
from __future__ import annotations

import os
import signal

FAULT_KINDS = ("raise", "nan", "kill")
ENV_VAR = "NASFORGE_INJECT_FAULTS"


class InjectedFault(RuntimeError):
    pass


def parse_faults(text: str | None) -> tuple[tuple[str, int], ...]:
    """``"raise:3,kill:7"`` -> ``(("raise", 3), ("kill", 7))``; ValueError on bad syntax."""
    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        kind, _, trial = item.partition(":")
        if kind not in FAULT_KINDS or not trial.strip().isdigit():
            raise ValueError(f"{ENV_VAR}: bad entry {item!r} (expected KIND:TRIAL_ID with KIND "
                             f"one of {', '.join(FAULT_KINDS)})")
        out.append((kind, int(trial)))
    return tuple(out)


class FaultPlan:
    """The faults of one trial; the trial calls each hook at the matching point."""

    def __init__(self, faults, trial_id: int, restored: bool):
        self.kinds = {k for k, t in faults if int(t) == int(trial_id)}
        self.restored = restored

    def before_training(self, model) -> None:
        if "nan" in self.kinds:
            import torch

            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))

    def after_epoch(self, epoch: int) -> None:
        """Called after the epoch's checkpoint has been reported to Ray."""
        if epoch != 1:
            return
        if "raise" in self.kinds:
            raise InjectedFault("injected fault: the child's training raised")
        if "kill" in self.kinds and not self.restored:
            os.kill(os.getpid(), signal.SIGKILL)
