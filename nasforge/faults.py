"""Fault injection for chaos tests of training runs (never active unless asked for): the
children of a search and the models of a transfer, with one hook and one spelling.

``NASFORGE_INJECT_FAULTS="raise:3,nan:5,kill:7"`` (read by ``nasforge search`` and ``nasforge
transfer``; in code ``SearchConfig(faults=(("raise", 3), ...))`` or ``run_transfer(...,
faults=...)``) makes the named training runs misbehave the way long runs do, through the real
code paths. A run is named by its search trial id, by its transfer model's label
(``raise:resnet18``) or by ``*`` (every run):

* ``raise``: the training raises an exception after its first epoch (that epoch's checkpoint
             and metrics written);
* ``nan``:   the model's weights are NaN, so its loss is non-finite and the trainer reports
             ``diverged``;
* ``kill``:  the worker process SIGKILLs itself after its first epoch's checkpoint, on the
             first attempt only (Ray retries the run from that checkpoint);
* ``broken``: the run raises before training, the way a systematic error does (a nasforge
             bug, unreadable data, a missing CUDA library); its message names the run, so
             only the names differ from run to run.

A run resumed from its first epoch's checkpoint never ends that epoch again, so ``raise`` and
``kill`` strike once per run folder.
"""
from __future__ import annotations

import os
import re
import signal

FAULT_KINDS = ("raise", "nan", "kill", "broken")
EVERY_RUN = -1  # the target of ``KIND:*``
ENV_VAR = "NASFORGE_INJECT_FAULTS"
FAULT_EPOCH = 1  # ``raise`` and ``kill`` strike after this epoch
_LABEL = re.compile(r"[A-Za-z0-9_.-]+")  # a transfer model's label (its folder name)


class InjectedFault(RuntimeError):
    """Raised by the ``raise`` and ``broken`` faults."""


def parse_faults(text: str | None) -> tuple[tuple[str, int | str], ...]:
    """``"raise:3,kill:*,nan:resnet18"`` -> ``(("raise", 3), ("kill", EVERY_RUN), ("nan",
    "resnet18"))``; ValueError on bad syntax."""
    out = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        kind, _, target = item.partition(":")
        target = target.strip()
        if kind not in FAULT_KINDS or not (target == "*" or _LABEL.fullmatch(target)):
            raise ValueError(f"{ENV_VAR}: bad entry {item!r} (expected KIND:TRIAL_ID, "
                             f"KIND:MODEL_LABEL or KIND:* with KIND one of "
                             f"{', '.join(FAULT_KINDS)})")
        out.append((kind, EVERY_RUN if target == "*" else
                    int(target) if target.isdigit() else target))
    return tuple(out)


def faults_from_env(environ=None) -> tuple[tuple[str, int | str], ...]:
    """The faults ``NASFORGE_INJECT_FAULTS`` asks for (none when unset); ValueError on bad
    syntax. Read by the CLI commands, which pass them on as configuration."""
    return parse_faults((os.environ if environ is None else environ).get(ENV_VAR))


class FaultPlan:
    """The faults of one training run; the run calls each hook at the matching point."""

    def __init__(self, faults, target: int | str, restored: bool, name: str | None = None):
        """``target``: the run's trial id or model label; ``restored``: the run continues
        from a checkpoint (a retry); ``name``: the run in messages (default: ``target``)."""
        self.kinds = {k for k, t in faults if t == EVERY_RUN or str(t) == str(target)}
        self.name = str(target) if name is None else name
        self.restored = restored

    def before_training(self, model) -> None:
        """Called with the built model, before training starts."""
        if "broken" in self.kinds:
            raise InjectedFault(f"injected fault: {self.name} cannot start (a systematic "
                                f"error)")
        if "nan" in self.kinds:
            import torch

            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))

    def after_epoch(self, epoch: int) -> None:
        """Called after the epoch's checkpoint has been written and its metrics reported."""
        if epoch != FAULT_EPOCH:
            return
        if "raise" in self.kinds:
            raise InjectedFault(f"injected fault: the training of {self.name} raised")
        if "kill" in self.kinds and not self.restored:
            os.kill(os.getpid(), signal.SIGKILL)
