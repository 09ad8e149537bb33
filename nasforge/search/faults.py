"""Fault injection for chaos tests of the search runner (never active unless asked for).

``NASFORGE_INJECT_FAULTS="raise:3,nan:5,kill:7"`` (read by ``nasforge search``) or
``SearchConfig(faults=(("raise", 3), ...))`` makes the named trial ids misbehave the way long
searches do, through the real code paths (``KIND:*`` names every trial):

* ``raise``: the child's training raises an exception after its first epoch;
* ``nan``:   the child's weights are NaN, so its loss is non-finite and the trainer reports
             ``diverged``;
* ``kill``:  the worker process SIGKILLs itself after its first epoch's checkpoint, on the
             first attempt only (Ray retries the trial from that checkpoint);
* ``broken``: the child raises before training, the way a systematic error does (a nasforge
             bug, unreadable data, a missing CUDA library); its message names the trial id, so
             only the numbers differ from trial to trial.
"""
from __future__ import annotations

import os
import signal

FAULT_KINDS = ("raise", "nan", "kill", "broken")
EVERY_TRIAL = -1  # the trial id of ``KIND:*``
ENV_VAR = "NASFORGE_INJECT_FAULTS"


class InjectedFault(RuntimeError):
    pass


def parse_faults(text: str | None) -> tuple[tuple[str, int], ...]:
    """``"raise:3,kill:*"`` -> ``(("raise", 3), ("kill", EVERY_TRIAL))``; ValueError on bad
    syntax."""
    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        kind, _, trial = item.partition(":")
        trial = trial.strip()
        if kind not in FAULT_KINDS or not (trial.isdigit() or trial == "*"):
            raise ValueError(f"{ENV_VAR}: bad entry {item!r} (expected KIND:TRIAL_ID or KIND:* "
                             f"with KIND one of {', '.join(FAULT_KINDS)})")
        out.append((kind, EVERY_TRIAL if trial == "*" else int(trial)))
    return tuple(out)


class FaultPlan:
    """The faults of one trial; the trial calls each hook at the matching point."""

    def __init__(self, faults, trial_id: int, restored: bool):
        self.kinds = {k for k, t in faults if int(t) in (int(trial_id), EVERY_TRIAL)}
        self.trial_id = int(trial_id)
        self.restored = restored

    def before_training(self, model) -> None:
        if "broken" in self.kinds:
            raise InjectedFault(f"injected fault: trial {self.trial_id} cannot start (a "
                                f"systematic error)")
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
