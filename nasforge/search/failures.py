"""Telling a broken search from an unlucky one: the rule that stops a search whose children
keep failing the same way.

A child fails for one of these reasons (its record's ``failure``, decided where it failed):

* ``error``: the child raised. Usually systematic (a nasforge bug, unreadable data, a missing
  CUDA library): every later child would fail alike, so these count toward the stop rule;
* ``diverged``: its loss went non-finite: a property of that architecture and recipe;
* ``out_of_memory``: the child did not fit the device (``torch.OutOfMemoryError``,
  ``MemoryError`` or an allocator's "out of memory" message): a property of its size;
* ``worker_died``: Ray lost the trial's worker on every attempt (preemption, the host's or Ray's
  OOM killer; Ray already retried it ``max_retries`` times).

Only ``error`` counts: the other three say something about one child, not about the search.
``FailureWatch`` sees the records of one invocation in finishing order and declares the search
broken when the last ``limit`` counted failures in a row share an error signature (exception
type + message with numbers stripped, so "trial 3 cannot start" and "trial 4 cannot start"
are the same error), or when the first ``limit`` trials of the invocation all failed with
errors (whatever their messages). An ``ok`` or ``pruned`` trial, or an error with another
signature, restarts the count; the non-counted failures leave it as it is. Each invocation
starts afresh, so ``--resume`` after a fix runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from nasforge.trials import Status

ERROR = "error"
DIVERGED = Status.DIVERGED.value  # its training ended with that status
OUT_OF_MEMORY = "out_of_memory"
WORKER_DIED = "worker_died"
FAILURE_KINDS = (ERROR, DIVERGED, OUT_OF_MEMORY, WORKER_DIED)
COUNTED = frozenset({ERROR})  # the kinds that count toward the stop rule

_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def failure_kind(exc: BaseException) -> str:
    """``out_of_memory`` or ``error`` for an exception a child raised."""
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):  # CUDA's, also raised by other backends
            return OUT_OF_MEMORY
    except (ImportError, AttributeError):
        pass
    # cuDNN, cuBLAS and the MPS allocator report a full device as a RuntimeError
    return OUT_OF_MEMORY if "out of memory" in str(exc).lower() else ERROR


def error_signature(error: str | None) -> str:
    """``"ValueError: bad shape 3x4 in cell 12"`` -> ``"ValueError: bad shape #x# in cell #"``."""
    return _NUMBER.sub("#", (error or "").strip())


@dataclass(frozen=True)
class BrokenSearch:
    """Why a search was stopped as broken (see the module docstring)."""

    error: str  # the error of the last failed trial, as its record has it
    trial: int  # the last failed trial: read its traceback
    count: int  # the failures that made the decision (= the limit)
    first_trials: bool  # True: the first trials all failed; False: `count` in a row alike


class FailureWatch:
    """Fed every finished record of one invocation, in finishing order; ``observe`` returns a
    ``BrokenSearch`` once the rule fires (``limit`` 0: never)."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.seen = 0  # records observed
        self.first_all_errors = True  # so far, every observed record was a counted failure
        self.streak = 0
        self.signature: str | None = None

    def observe(self, record: dict) -> BrokenSearch | None:
        self.seen += 1
        failed = record.get("status") == Status.FAILED
        kind = record.get("failure") or (ERROR if failed else None)
        if failed and kind not in COUNTED:
            self.first_all_errors = False
            return None  # diverged, out of memory, worker died: neither counts nor resets
        if not failed:
            self.first_all_errors = False
            self.streak, self.signature = 0, None
            return None
        signature = error_signature(record.get("error"))
        if signature == self.signature:
            self.streak += 1
        else:
            self.streak, self.signature = 1, signature
        if self.limit <= 0:
            return None
        first = self.first_all_errors and self.seen == self.limit
        if self.streak >= self.limit or first:
            return BrokenSearch(error=record.get("error") or "unknown error",
                                trial=int(record["trial"]), count=self.limit,
                                first_trials=first and self.streak < self.limit)
        return None


def describe_broken(broken: BrokenSearch) -> str:
    """One sentence: why the search was stopped as broken."""
    if broken.first_trials:
        return f"the first {broken.count} trials all failed, the last with {broken.error}"
    return f"{broken.count} trials in a row failed with {broken.error}"
