"""The configuration of one search run (what ``nasforge search`` resolves its flags into)."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from nasforge.errors import NasforgeError
from nasforge.latency import LatencyTableError, load_table
from nasforge.proxies import ProxyError
from nasforge.proxies.prescreen import parse_prescreen
from nasforge.rules import reject_unknown_keys
from nasforge.safe_load import RefusedFileError
from nasforge.search.objectives import HELD_OUT_METRICS, Goal, ObjectiveError


class SearchError(NasforgeError, ValueError):
    """Bad search input (unknown space or searcher, impossible resources, not a run folder):
    the CLI prints it as one line and exits with code 2."""


SCHEDULERS = ("fifo", "asha")


def _strings(value) -> tuple:
    """A tuple of specs from one string or a sequence of them."""
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search needs; saved as ``config.json`` in the run folder and reloaded by
    ``--resume`` (so a resumed search runs with exactly the original settings)."""

    space: str = "nasnet"  # search_spaces registry name
    searcher: str = "evolution"  # controllers registry name: rl | evolution | optuna | random
    searcher_options: dict = field(default_factory=dict)  # fields of the searcher's config
    trials: int = 100  # finished trials (ok + failed + pruned) the search runs to
    recipe: str = "search"  # nasforge.train recipe for each child
    epochs: int | None = None  # override of the recipe's epochs per child
    data: str | None = None  # data source (default: the recipe's); always split for search
    val_size: int | None = None  # images held out for validation (default: the recipe's)
    cache_dir: str | None = None  # nasforge data cache folder
    gpus: float | None = None  # GPUs the search may use; None = all GPUs of the cluster
    gpus_per_trial: float = 1.0  # GPUs per child when gpus > 0 (fractions share a GPU)
    cpus_per_trial: float = 1.0  # CPU cores per child (its torch threads)
    scheduler: str = "fifo"  # fifo (every child trains to the end) | asha (early stopping)
    max_retries: int = 2  # re-runs of a trial whose worker process died
    max_consecutive_failures: int = 5  # trials failing alike in a row that stop the search
    #   as broken (failures.FailureWatch; 0 = never stop)
    seed: int = 0  # seeds the searcher, the data split and every child
    address: str | None = None  # Ray cluster: None = start a local one, "auto", "ray://h:p"
    workers: int = 1  # one-shot search: data-parallel CPU training processes (--gpus N: N)
    storage: str | None = None  # Ray storage for trial checkpoints (default: <run>/ray)
    faults: tuple[tuple[str, int], ...] = ()  # chaos testing: (kind, trial id), nasforge/faults.py
    # objectives.py: NAME[:max|min], the primary first; several = a Pareto search
    objectives: tuple[str, ...] = ("val_acc:max",)
    constraints: tuple[str, ...] = ()  # "mult_adds<=600e6", ... (objectives.py)
    latency_table: str | None = None  # per-op latency table file for the latency_ms metric
    #   (nasforge latency --build-table; its space must be this search's space)
    max_infeasible: int | None = None  # infeasible proposals (never trained) before the search
    #   stops; None = objectives.DEFAULT_INFEASIBLE_FACTOR x trials
    backend: str = "train"  # how a trial gets its figures (search/backends.py BACKENDS):
    #   train | nas-bench-201 (looked up in NAS-Bench-201's table)
    dataset: str | None = None  # NAS-Bench-201's data set: cifar10 | cifar100 | imagenet16
    #   (the nas-bench-201 space's classes and input size, the table's columns)
    table: str | None = None  # a user's NAS-Bench-201 table file (None: the shipped one)
    prescreen: str | None = None  # PROXY:K: each trial the best of K proposals by a zero-cost
    #   proxy (nasforge.proxies); the others are recorded as screened, never trained

    def __post_init__(self):
        if isinstance(self.trials, bool) or int(self.trials) < 1:
            raise SearchError(f"trials must be at least 1, got {self.trials}", options=("trials",))
        if self.epochs is not None and self.epochs < 1:
            raise SearchError(f"epochs must be at least 1, got {self.epochs}", options=("epochs",))
        if self.scheduler not in SCHEDULERS:
            raise SearchError(f"unknown scheduler {self.scheduler!r} "
                              f"(known: {', '.join(SCHEDULERS)})")
        if self.gpus is not None and (self.gpus < 0 or not math.isfinite(self.gpus)):
            raise SearchError(f"gpus must be >= 0, got {self.gpus}", options=("gpus",))
        if not 0 < self.gpus_per_trial <= 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise SearchError(f"gpus_per_trial must be a fraction of one GPU or a whole "
                              f"number, got {self.gpus_per_trial}", options=("gpus_per_trial",))
        if self.gpus_per_trial <= 0 or self.cpus_per_trial <= 0:
            raise SearchError("gpus_per_trial and cpus_per_trial must be positive",
                              options=("gpus_per_trial", "cpus_per_trial"))
        if isinstance(self.workers, bool) or int(self.workers) < 1:
            raise SearchError(f"workers must be at least 1, got {self.workers}",
                              options=("workers",))
        if self.max_retries < 0:
            raise SearchError(f"max_retries must be >= 0, got {self.max_retries}",
                              options=("max_retries",))
        if isinstance(self.max_consecutive_failures, bool) or self.max_consecutive_failures < 0:
            raise SearchError(f"max_consecutive_failures must be >= 0 (0: never stop), got "
                              f"{self.max_consecutive_failures}",
                              options=("max_consecutive_failures",))

        try:  # kept in canonical form: a resumed search compares them as text
            goal = Goal.parse(_strings(self.objectives), _strings(self.constraints))
        except ObjectiveError as e:
            raise SearchError(str(e)) from None
        spec = goal.spec()
        held_out = [n for n in (*goal.static_metrics(), *(o.name for o in goal.objectives),
                                *(c.metric for c in goal.constraints)) if n in HELD_OUT_METRICS]
        if held_out:
            raise SearchError(f"{held_out[0]} is held out from the searcher (it is reported, "
                              f"never searched on): not an objective or a constraint")
        object.__setattr__(self, "objectives", tuple(spec["objectives"]))
        object.__setattr__(self, "constraints", tuple(spec["constraints"]))
        self._check_latency_table(goal)
        if self.prescreen is not None:
            try:
                parse_prescreen(self.prescreen)
            except ProxyError as e:
                raise SearchError(str(e), options=("prescreen",)) from None
        if self.max_infeasible is not None and (isinstance(self.max_infeasible, bool)
                                                or int(self.max_infeasible) < 0):
            raise SearchError(f"max_infeasible must be >= 0, got {self.max_infeasible}")

    def _check_latency_table(self, goal: Goal) -> None:
        """latency_ms needs a table of this search's space; a table without latency_ms is
        a mistake worth one line too."""
        if "latency_ms" not in goal.static_metrics():
            if self.latency_table is not None:
                raise SearchError("a latency table is given but no objective or constraint "
                                  "uses latency_ms", options=("latency_table",))
            return
        if self.latency_table is None:
            raise SearchError("latency_ms needs a per-op latency table (nasforge.latency."
                              "build_table writes one)", options=("latency_table",))

        try:
            table = load_table(self.latency_table)
        except (OSError, ValueError, LatencyTableError, RefusedFileError) as e:
            raise SearchError(f"latency table {self.latency_table}: {e}",
                              options=("latency_table",)) from None
        if table.space != self.space:
            raise SearchError(f"latency table {self.latency_table} was built for space "
                              f"{table.space!r}, this search's space is {self.space!r}",
                              options=("latency_table",))

    @property
    def goal(self) -> Goal:
        """The objectives and constraints (objectives.Goal)."""
        return Goal.parse(self.objectives, self.constraints)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "SearchConfig":
        reject_unknown_keys(cls, data, "search config", SearchError)
        data = dict(data)
        try:
            data["faults"] = tuple((str(k), int(t)) for k, t in data.get("faults", ()))
            for key in ("objectives", "constraints"):  # JSON lists; absent in older runs
                if key in data:
                    data[key] = tuple(data[key])
            return cls(**data)
        except SearchError:
            raise
        except (TypeError, ValueError) as e:  # a field of the wrong type in a saved config
            raise SearchError(f"search config: a field has the wrong type ({e})") from None
