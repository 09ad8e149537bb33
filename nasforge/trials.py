"""One trial record: its ``Status``, the ``Direction`` of an objective, the ``TrialRecord`` that
is one line of a search's ``trials.jsonl``, the best-trial rule and a search's summary.

Every search driver (the Ray adapter, the constraint screen, the one-shot driver), the
searchers (``nasforge.controllers``), objectives and ``nasforge compare`` use these types; the
JSON forms are exactly what run folders already hold, so old runs load and resume unchanged.

Importing this module imports nothing but the standard library (the searchers, the run folder
and the CLI all import it).
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator


class Status(str, enum.Enum):
    """How a trial (or a training run) ended; the ``status`` of a ``trials.jsonl`` line.

    str-valued: a status compares equal to, and serializes as, its JSON text."""

    OK = "ok"  # trained (evaluated) to the end: its metrics hold the objective
    FAILED = "failed"  # crashed, diverged, out of memory: no usable metric
    PRUNED = "pruned"  # stopped early by a scheduler (ASHA)
    INFEASIBLE = "infeasible"  # refused before training: violates a constraint
    SCREENED = "screened"  # never trained: a zero-cost proxy ranked another candidate above it
    DIVERGED = "diverged"  # a training run whose loss went non-finite (the trainer's status;
    # a search records such a child as failed)

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


TRIAL_STATUSES = (Status.OK, Status.FAILED, Status.PRUNED, Status.INFEASIBLE,
                  Status.SCREENED)  # of a trial
# proposals recorded without being trained: not trials of the budget, never the best
UNTRAINED = (Status.INFEASIBLE, Status.SCREENED)


class StopReason(str, enum.Enum):
    """Why a search ended before its budget (a summary's ``stopped``)."""

    BROKEN = "broken"  # its children kept failing alike (failures.FailureWatch)
    INTERRUPTED = "interrupted"  # Ctrl-C
    INFEASIBLE = Status.INFEASIBLE.value  # the cap on infeasible proposals was reached

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Direction(str, enum.Enum):
    """Which way an objective is better. The text is ``max``/``min`` (objectives, configs,
    Ray's ``mode``); ``optuna`` is Optuna's spelling (``maximize``/``minimize``), which
    ``parse`` also accepts (searcher states and configs on disk hold it)."""

    MAX = "max"
    MIN = "min"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @classmethod
    def parse(cls, text) -> "Direction":
        """``max``/``min``, ``maximize``/``minimize`` or a Direction; ValueError otherwise."""
        if isinstance(text, Direction):
            return text
        found = _SPELLINGS.get(str(text).strip())
        if found is None:
            raise ValueError(f"direction {text!r} is not one of "
                             f"{', '.join(_SPELLINGS)}")
        return found

    @property
    def sign(self) -> float:
        """+1 when larger is better: ``sign * value`` is a score to maximize."""
        return 1.0 if self is Direction.MAX else -1.0

    @property
    def optuna(self) -> str:
        """Optuna's name of the direction (``create_study(direction=...)``)."""
        return "maximize" if self is Direction.MAX else "minimize"

    @property
    def worst_value(self) -> float:
        """The worst value there is: -inf when larger is better, else +inf."""
        return -math.inf if self is Direction.MAX else math.inf

    def worst(self, values: Iterable[float]) -> float:
        """The worst of ``values`` (at least one)."""
        return (min if self is Direction.MAX else max)(values)

    def worse(self, a: float, b: float) -> float:
        """The worse of two values."""
        return self.worst((a, b))


_SPELLINGS = {"max": Direction.MAX, "min": Direction.MIN,
              "maximize": Direction.MAX, "minimize": Direction.MIN}


# ------------------------------------------------------------------- the best-trial rule
def rank_key(value: float, direction: Direction | str, trial_id: int) -> tuple[float, int]:
    """The sort key of a ranked trial, best first: its value in ``direction``, ties broken on
    the lowest trial id. The one best-trial rule: ``run_folder.ranked_trials`` (best_cell.json,
    ``compare``, ``export``) and ``Searcher.best()`` both rank with it; only ok trials within
    the constraints are ranked."""
    return -Direction.parse(direction).sign * float(value), int(trial_id)


def metric_value(record: Mapping, name: str) -> float | None:
    """A record's finite value of ``name``: its ``metrics`` (trained and pre-measured static
    values), else the record's own top-level field (``params`` and ``mult_adds``, counted by
    the trial on the real child)."""
    v = (record.get("metrics") or {}).get(name)
    if v is None:
        v = record.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def rankable(record: Mapping) -> bool:
    """Whether a record competes for "best": status ok and within the search's constraints."""
    return record.get("status") == Status.OK and record.get("feasible") is not False


# ------------------------------------------------------------------------ the record
class _Absent(enum.Enum):
    ABSENT = "absent"


ABSENT = _Absent.ABSENT  # a key the record's line does not have (not the same as null)


@dataclass(frozen=True, eq=True)
class TrialRecord(Mapping):
    """One line of ``trials.jsonl``: a finished trial, or a proposal refused before training.

    Also a read-only mapping of that line (``record["trial"]``, ``record.get("feasible")``), so
    whatever reads records from a run folder (the board, the failure rule, ``compare``) reads a
    record still in memory the same way.

    ``trial``: nasforge's trial id; ``status``; ``hash``/``tokens``/``arch``: the proposal
    (canonical hash, decision indices, cell pair as a dict); ``origin``: where it came from
    (the proposal's meta); ``metrics``: trained and static metric values (and ``epoch``);
    ``epochs`` trained; ``params``/``mult_adds`` of the child; ``wall_s`` (seconds, proposal to
    record) and ``train_s`` (seconds in the trainer); ``restored_epoch``: the epoch a retried
    trial restarted from; ``resources``: ``{"cpu", "gpu"}`` per trial; ``error``: why it
    failed or is infeasible; ``failure``: the failure kind (``failures.FAILURE_KINDS``);
    ``started_at``/``finished_at``: Unix seconds. Keys a line may lack: ``ray_trial_id`` (Ray's
    id: black-box searches only), ``constraints`` (``{constraint: violation}``, <= 0 feasible)
    and ``feasible`` (both only in constrained searches). ``extra``: keys of a line this class
    does not know, kept so a line reads back and writes out the same; ``key_order``: the
    order of a line read from a file, kept for the same reason (a new record writes its keys
    in the order the search drivers always have).
    """

    trial: int
    status: Status
    hash: str | None = None
    tokens: tuple[int, ...] = ()
    origin: Mapping[str, Any] = field(default_factory=dict)
    arch: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 0
    params: float | None = None
    mult_adds: float | None = None
    wall_s: float | None = 0.0
    train_s: float | None = None
    restored_epoch: int = 0
    resources: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    failure: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    ray_trial_id: str | None | _Absent = ABSENT
    constraints: Mapping[str, float] | None = None  # None: the line has no such key
    feasible: bool | None = None  # None: the line has no such key
    extra: Mapping[str, Any] = field(default_factory=dict)
    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "status", Status(self.status))

    # the line's keys in the order the search drivers write them
    _ORDER = ("trial", "ray_trial_id", "status", "hash", "tokens", "origin", "arch", "metrics",
              "epochs", "params", "mult_adds", "wall_s", "train_s", "restored_epoch",
              "resources", "error", "failure", "started_at", "finished_at", "constraints",
              "feasible")

    def to_json(self) -> dict:
        """The ``trials.jsonl`` line (a new dict of JSON values)."""
        return dict(self._line)

    @functools.cached_property
    def _line(self) -> dict:
        out = {}
        for key in self._ORDER:
            v = getattr(self, key)
            if v is ABSENT or (key in ("constraints", "feasible") and v is None):
                continue
            if key == "status":
                v = v.value
            elif key == "tokens":
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            out[key] = v
        out.update(self.extra)
        if self.key_order:
            out = {**{k: out[k] for k in self.key_order if k in out}, **out}
        return out

    # the read-only mapping of the line
    def __getitem__(self, key: str) -> Any:
        return self._line[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._line)

    def __len__(self) -> int:
        return len(self._line)

    @classmethod
    def of(cls, record: "TrialRecord | Mapping") -> "TrialRecord":
        """``record`` itself, or the record of a ``trials.jsonl`` line."""
        return record if isinstance(record, TrialRecord) else cls.from_json(record)

    @classmethod
    def from_json(cls, line: Mapping) -> "TrialRecord":
        """A record from its ``trials.jsonl`` line (lines of older runs lack some keys)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "key_order"}
        values = {k: v for k, v in line.items() if k in known}
        values["tokens"] = tuple(values.get("tokens") or ())
        return cls(**values, extra={k: v for k, v in line.items() if k not in known},
                   key_order=tuple(line))

    def replace(self, **changes) -> "TrialRecord":
        return dataclasses.replace(self, **changes)

    @property
    def rankable(self) -> bool:
        """Status ok and within the constraints (see ``rankable``)."""
        return self.status is Status.OK and self.feasible is not False

    def value(self, name: str) -> float | None:
        """The record's finite value of metric ``name`` (see ``metric_value``)."""
        return metric_value(self.to_json(), name)


# ----------------------------------------------------------------------- the summary
@dataclass(frozen=True)
class SearchSummary:
    """What a search (black-box or one-shot) returns and ``nasforge search --json`` prints.

    ``budget``: trials (one-shot: epochs + search-phase candidates); ``finished``: trials
    trained or evaluated (not the infeasible ones); ``best``: the best value of the primary
    ``objective`` (``"val_acc:max"``) and ``best_val_acc`` that best trial's val_acc;
    ``stopped``: why it ended before its budget (``broken``, ``interrupted``, ``infeasible``;
    None when it did not), with ``broken``/``infeasible_message`` saying more; ``wall_s`` and
    ``device_s`` in seconds. A one-shot search also has ``status`` (of the supernet's
    training) and ``epochs`` (None for a black-box search, and then absent from the JSON).
    """

    run_dir: str
    searcher: str
    budget: int
    objective: str
    finished: int
    failed: int
    pruned: int
    infeasible: int
    best: float | None
    best_val_acc: float | None
    best_trial: int | None
    best_hash: str | None
    best_cell: str | None
    pareto_front: list[int] | None
    stopped: StopReason | None
    infeasible_message: str | None
    broken: Mapping[str, Any] | None
    wall_s: float
    device_s: float
    status: Status | None = None  # one-shot: how the supernet's training ended
    epochs: int | None = None  # one-shot: supernet epochs trained

    @property
    def oneshot(self) -> bool:
        """Whether this is a one-shot search (its trials are epochs and candidates)."""
        return self.epochs is not None

    def __post_init__(self):
        if self.stopped is not None:
            object.__setattr__(self, "stopped", StopReason(self.stopped))
        if self.status is not None:
            object.__setattr__(self, "status", Status(self.status))

    def to_json(self) -> dict:
        """The summary as JSON values (a black-box search's has no ``status``/``epochs``)."""
        out = dataclasses.asdict(self)
        out["stopped"] = None if self.stopped is None else self.stopped.value
        if not self.oneshot:
            del out["status"], out["epochs"]
        elif self.status is not None:
            out["status"] = self.status.value
        return out

    @classmethod
    def from_json(cls, data: Mapping) -> "SearchSummary":
        """The summary of its JSON; a key it lacks reads as None (``objective``: val_acc, what
        a search optimized before objectives existed)."""
        missing = {"objective": "val_acc"}
        return cls(**{f.name: data.get(f.name, missing.get(f.name))
                      for f in dataclasses.fields(cls)})


__all__ = ["Status", "TRIAL_STATUSES", "UNTRAINED", "StopReason", "Direction", "rank_key", "metric_value",
           "rankable", "TrialRecord", "ABSENT", "SearchSummary"]
