"""What a search optimizes and what it must respect: objectives, constraints, Pareto fronts.

The one place for these rules (the CLI, ``SearchConfig``, the run folder's best-trial rule, the
Ray adapter's pre-training screen, TensorBoard, ``compare`` and ``export`` all import them):

* **Metrics** (``METRICS``): the names an objective or a constraint may use, each with its
  natural direction. *Trained* metrics (``val_acc``, ``val_loss``, ...) exist once a child has
  trained; *static* metrics are computed from the architecture alone, before training, by a
  function registered with ``register_static_metric(name, fn)`` (``fn(arch, setting)`` gets the
  proposal's ``CellPair`` and the search's ``ModelSetting`` and returns a float). nasforge
  registers ``params`` and ``mult_adds`` (nasforge.flops on the meta device: no memory, no
  training) and ``latency_ms`` (predicted by summing a per-op latency table, nasforge.latency,
  for the table's device, space and setting: ``--latency-table FILE``).
* **Objectives**: ``val_acc`` (its natural direction), ``mult_adds:min``; several
  (``val_acc:max,mult_adds:min``) make a Pareto search; the first is the *primary* objective
  (``best_cell.json``, ASHA, the progress line).
* **Constraints**: ``mult_adds<=600e6`` (operators ``<=``, ``>=``, ``<``, ``>``). A constraint on
  a static metric is checked before a child trains (an infeasible proposal is never trained);
  one on a trained metric (an accuracy floor) after. Violation amounts are relative to the
  bound, so constraints on metrics of very different scales add up sensibly (Optuna sums the
  positive constraint values of an infeasible trial to rank it).
* **Dominance, the front and hypervolume** over the feasible ``ok`` trials.

Importing this module does not import torch (the run folder reads records with it).
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from nasforge.api import build_model
from nasforge.dsl import CellChain, CellPair, load_architecture
from nasforge.errors import NasforgeError
from nasforge.flops import count_mult_adds, count_params
from nasforge.latency import latency_metric
from nasforge.trials import Direction, metric_value, rankable

OPERATORS = ("<=", ">=", "<", ">")
DEFAULT_OBJECTIVE = "val_acc"
DEFAULT_INFEASIBLE_FACTOR = 20  # infeasible proposals allowed per trial of the budget


class ObjectiveError(NasforgeError, ValueError):
    """Bad objective or constraint text: the CLI prints it as one line and exits with 2."""


@dataclass(frozen=True)
class Metric:
    name: str
    direction: Direction  # of "better" ("max" | "min" accepted)
    static: bool  # known from the architecture before training
    bound: float | None = None  # the worst value it can take (a hypervolume reference), if any
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "direction", Direction.parse(self.direction))


@dataclass(frozen=True)
class ModelSetting:
    """How a search builds its children (what a static metric needs besides the cells)."""

    setting: str  # nasforge.zoo network setting (cifar, mobile, ...)
    num_classes: int
    input_size: int  # pixels (square input)
    in_channels: int
    overrides: tuple[tuple[str, object], ...] = ()  # NetworkConfig fields (N, filters, ...)
    latency_table: str | None = None  # per-op latency table file (latency_ms; nasforge.latency)

    def build(self, arch):
        """The child network of ``arch`` (on torch's current default device: wrap the call in
        ``with torch.device("meta")`` for shapes only, no memory)."""
        if isinstance(arch, CellChain):  # a whole network (nas-bench-201): it fixes its
            return build_model(arch, input_size=self.input_size)  # classes and options
        return build_model(arch, self.setting, num_classes=self.num_classes,
                           input_size=self.input_size, in_channels=self.in_channels,
                           **dict(self.overrides))


METRICS: dict[str, Metric] = {}
STATIC_METRICS: dict[str, Callable] = {}  # name -> fn(arch, ModelSetting) -> float


def _add_metric(metric: Metric) -> Metric:
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    METRICS[metric.name] = metric
    return metric


def register_static_metric(name: str, fn: Callable, direction: str = "min",
                           bound: float | None = None, description: str = "") -> Metric:
    """Make ``name`` usable in objectives and constraints; ``fn(arch, setting)`` computes it
    from a ``CellPair`` and a ``ModelSetting`` (called in the search driver, before training,
    once per proposal that an objective or a constraint needs it for)."""
    metric = _add_metric(Metric(name, direction, True, bound, description))
    STATIC_METRICS[name] = fn
    return metric


for _name, _direction, _bound, _text in (
        ("val_acc", "max", 0.0, "validation accuracy"),
        ("val_loss", "min", None, "validation loss"),
        ("train_acc", "max", 0.0, "training accuracy"),
        ("train_loss", "min", None, "training loss"),
        ("test_acc", "max", 0.0, "test accuracy (table backends only; held out)")):
    _add_metric(Metric(_name, _direction, False, _bound, _text))

# reported in trials.jsonl but never told to a searcher, nor searched on: a table backend's
# test accuracy (search/backends.py)
HELD_OUT_METRICS = ("test_acc",)


@functools.lru_cache(maxsize=256)
def _counts(arch_json: str, setting: ModelSetting) -> tuple[int, int]:
    """(params, mult-adds) of one child, counted once for both metrics (nasforge.flops, the
    counter the trainer and ``nasforge info`` use)."""
    import torch

    with torch.device("meta"):  # as nasforge.api.model_info: shapes only, no memory
        model = setting.build(load_architecture(arch_json))  # a pair or a chain
        return count_params(model), count_mult_adds(model, setting.input_size,
                                                    setting.in_channels)[0]


def _params(arch, setting: ModelSetting) -> float:
    return float(_counts(arch.to_json(), setting)[0])


def _mult_adds(arch, setting: ModelSetting) -> float:
    return float(_counts(arch.to_json(), setting)[1])


register_static_metric("params", _params, "min", None, "trainable parameters")
register_static_metric("mult_adds", _mult_adds, "min", None,
                       "multiply-adds of one forward pass at batch 1")


@functools.lru_cache(maxsize=4)
def _latency_predictor(table_path: str):
    return latency_metric(table_path)


def _latency_ms(arch, setting: ModelSetting) -> float:
    if setting.latency_table is None:
        raise ObjectiveError("latency_ms needs a per-op latency table (nasforge.latency."
                             "build_table writes one)", options=("latency_table",))
    return float(_latency_predictor(setting.latency_table)(arch))


register_static_metric("latency_ms", _latency_ms, "min", None,
                       "predicted ms of one forward pass on the latency table's device")


def _metric(name: str, what: str) -> Metric:
    metric = METRICS.get(name)
    if metric is None:
        raise ObjectiveError(f"unknown metric {name!r} in {what} (known: {', '.join(METRICS)})")
    return metric


# ---------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class Objective:
    name: str
    direction: Direction  # "max" | "min" (and Optuna's spelling) accepted

    def __post_init__(self):
        object.__setattr__(self, "direction", Direction.parse(self.direction))

    @property
    def sign(self) -> float:
        """+1 when larger is better: ``sign * value`` is a score to maximize."""
        return self.direction.sign

    @property
    def optuna_direction(self) -> str:
        return self.direction.optuna

    def __str__(self) -> str:
        return f"{self.name}:{self.direction}"


def parse_objective(text) -> Objective:
    """``"val_acc"`` (its natural direction), ``"mult_adds:min"``; an ``Objective`` passes."""
    if isinstance(text, Objective):
        return text
    name, sep, direction = str(text).strip().partition(":")
    name, direction = name.strip(), direction.strip()
    metric = _metric(name, f"objective {text!r}")
    if not sep:
        direction = metric.direction
    elif direction not in (d.value for d in Direction):
        raise ObjectiveError(f"objective {text!r}: direction {direction!r} is not "
                             f"{' or '.join(d.value for d in Direction)}")
    return Objective(name, direction)


def parse_objectives(text: str) -> tuple[Objective, ...]:
    """``"val_acc:max,mult_adds:min"``: the objectives of a Pareto search, primary first."""
    parts = [p for p in str(text).split(",")]
    if not parts or any(not p.strip() for p in parts):
        raise ObjectiveError(f"objectives {text!r}: give NAME[:max|min] entries separated "
                             f"by commas", options=("objectives",))
    objectives = tuple(parse_objective(p) for p in parts)
    names = [o.name for o in objectives]
    if len(set(names)) != len(names):
        raise ObjectiveError(f"objectives {text!r} names a metric twice", options=("objectives",))
    return objectives


# --------------------------------------------------------------------------- constraints
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str  # one of OPERATORS
    bound: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound!r}"

    def holds(self, value: float) -> bool:
        return {"<=": value <= self.bound, ">=": value >= self.bound,
                "<": value < self.bound, ">": value > self.bound}[self.op]

    def violation(self, value: float) -> float:
        """0 when the constraint holds, else how far it is off relative to the bound (> 0):
        Optuna's convention (feasible when every value is <= 0)."""
        if math.isfinite(value) and self.holds(value):
            return 0.0
        if not math.isfinite(value):
            return math.inf
        scale = max(abs(self.bound), 1e-12)
        return max(abs(value - self.bound) / scale, 1e-12)  # a strict bound hit exactly: > 0


def parse_constraint(text) -> Constraint:
    """``"mult_adds<=600e6"``; a ``Constraint`` passes."""
    if isinstance(text, Constraint):
        return text
    m = _CONSTRAINT.match(str(text))
    if m is None:
        raise ObjectiveError(f"constraint {text!r} is malformed: expected METRIC OP NUMBER with "
                             f"OP one of {' '.join(OPERATORS)} (e.g. mult_adds<=600e6)")
    name, op, bound = m.groups()
    _metric(name, f"constraint {text!r}")
    try:
        value = float(bound)
    except ValueError:
        raise ObjectiveError(f"constraint {text!r}: bound {bound!r} is not a number") from None
    if not math.isfinite(value):
        raise ObjectiveError(f"constraint {text!r}: the bound must be a finite number")
    return Constraint(name, op, value)


# ------------------------------------------------------------------------------ the goal
@dataclass(frozen=True)
class Goal:
    """The objectives (primary first) and constraints of one search."""

    objectives: tuple[Objective, ...] = (Objective("val_acc", "max"),)
    constraints: tuple[Constraint, ...] = field(default=())

    @classmethod
    def parse(cls, objectives: Iterable = (DEFAULT_OBJECTIVE,),
              constraints: Iterable = ()) -> "Goal":
        objs = tuple(parse_objective(o) for o in objectives)
        if not objs:
            raise ObjectiveError("a search needs at least one objective")
        if len({o.name for o in objs}) != len(objs):
            raise ObjectiveError("the objectives name a metric twice")
        return cls(objs, tuple(parse_constraint(c) for c in constraints))

    @property
    def primary(self) -> Objective:
        return self.objectives[0]

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def spec(self) -> dict:
        """The JSON form saved in config.json and compared on resume."""
        return {"objectives": [str(o) for o in self.objectives],
                "constraints": [str(c) for c in self.constraints]}

    def static_metrics(self) -> tuple[str, ...]:
        """Static metrics the search must measure before training (objectives, constraints)."""
        names = [o.name for o in self.objectives] + [c.metric for c in self.constraints]
        return tuple(dict.fromkeys(n for n in names if METRICS[n].static))

    def constraint_values(self, values: dict, only_known: bool = False) -> dict[str, float]:
        """``{str(constraint): violation}`` (<= 0 feasible) for the constraints whose metric is
        in ``values``; a missing metric counts as violated unless ``only_known``."""
        out = {}
        for c in self.constraints:
            v = values.get(c.metric)
            if v is None:
                if not only_known:
                    out[str(c)] = math.inf
                continue
            out[str(c)] = c.violation(float(v))
        return out

    def violated(self, values: dict, only_known: bool = False) -> list[str]:
        """One phrase per violated constraint, e.g. ``mult_adds=7.1e+08 violates
        mult_adds<=600000000.0``."""
        cv = self.constraint_values(values, only_known)
        return [f"{c.metric}={values.get(c.metric, float('nan')):.4g} violates {c}"
                for c in self.constraints if cv.get(str(c), 0.0) > 0]

    # ------------------------------------------------------------------ records
    def values(self, record: dict) -> tuple[float, ...] | None:
        """The objective values of a feasible ``ok`` record (None otherwise)."""
        if not rankable(record):
            return None
        out = []
        for o in self.objectives:
            v = metric_value(record, o.name)
            if v is None:
                return None
            out.append(v)
        return tuple(out)

    def dominates(self, a: Sequence[float], b: Sequence[float]) -> bool:
        """Whether objective values ``a`` Pareto-dominate ``b`` (no worse in every objective,
        strictly better in one)."""
        sa = [o.sign * x for o, x in zip(self.objectives, a)]
        sb = [o.sign * x for o, x in zip(self.objectives, b)]
        return all(x >= y for x, y in zip(sa, sb)) and any(x > y for x, y in zip(sa, sb))

    def front(self, records: Iterable[dict]) -> list[dict]:
        """The non-dominated feasible ``ok`` records, by trial id; of records with identical
        objective values only the lowest trial id is kept."""
        scored = sorted(((r, self.values(r)) for r in records), key=lambda p: int(p[0]["trial"]))
        scored = [(r, v) for r, v in scored if v is not None]
        front, seen = [], set()
        for r, v in scored:
            if v in seen or any(self.dominates(w, v) for _, w in scored):
                continue
            seen.add(v)
            front.append(r)
        return front

    def reference_point(self, records: Iterable[dict] = (),
                        given: dict | None = None) -> tuple[float, ...] | None:
        """The hypervolume reference: ``given[name]`` if set, else the metric's worst possible
        value (accuracy: 0), else the worst value among ``records``' feasible ok trials (a
        minimized metric without a natural bound); None when some objective has none."""
        given = given or {}
        vals = [v for v in (self.values(r) for r in records) if v is not None]
        out = []
        for i, o in enumerate(self.objectives):
            if o.name in given:
                out.append(float(given[o.name]))
            elif METRICS[o.name].bound is not None and o.direction == METRICS[o.name].direction:
                out.append(METRICS[o.name].bound)
            elif vals:
                out.append(o.direction.worst(v[i] for v in vals))
            else:
                return None
        return tuple(out)

    def hypervolume(self, records: Iterable[dict], reference: Sequence[float]) -> float:
        """The hypervolume of the front of ``records`` with respect to ``reference``."""
        points = [self.values(r) for r in self.front(records)]
        return hypervolume([[-o.sign * x for o, x in zip(self.objectives, p)] for p in points],
                           [-o.sign * x for o, x in zip(self.objectives, reference)])


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume dominated by ``points`` (all objectives minimized) and bounded by
    ``reference``; points not strictly better than the reference in every coordinate add
    nothing. Two objectives: an exact sweep written here (a few lines); more: Optuna's exact
    ``compute_hypervolume`` (``optuna._hypervolume``, what Optuna's own hypervolume history
    plot uses; no public Optuna API exposes it and pymoo is not a dependency)."""
    ref = [float(r) for r in reference]
    pts = [tuple(float(x) for x in p) for p in points
           if all(x < r for x, r in zip(p, ref))]
    if not pts:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    if len(ref) == 2:
        volume, best_y = 0.0, ref[1]
        for x, y in sorted(pts):  # by the first objective; each step adds a new strip
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return volume
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(np.asarray(pts), np.asarray(ref)))


def measure_static(names: Iterable[str], arch, setting: ModelSetting) -> dict[str, float]:
    """``{name: value}`` of the static metrics ``names`` for one architecture."""
    return {n: float(STATIC_METRICS[n](arch, setting)) for n in names}


def infeasible_cap(trials: int, max_infeasible: int | None) -> int:
    """Infeasible proposals a search may see before it stops (``max_infeasible`` or
    ``DEFAULT_INFEASIBLE_FACTOR`` x the trial budget)."""
    return DEFAULT_INFEASIBLE_FACTOR * int(trials) if max_infeasible is None \
        else int(max_infeasible)


__all__ = ["Metric", "ModelSetting", "METRICS", "HELD_OUT_METRICS", "STATIC_METRICS",
           "register_static_metric",
           "Objective", "Direction", "Constraint", "Goal", "ObjectiveError", "parse_objective",
           "parse_objectives", "parse_constraint", "metric_value", "hypervolume",
           "measure_static", "infeasible_cap", "DEFAULT_OBJECTIVE"]
