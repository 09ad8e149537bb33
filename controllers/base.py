"""The ask/tell protocol every searcher implements (installed as ``nasforge.controllers.base``).

A search loop (a Ray Tune searcher adapter, the planted-cell benchmark, a hand-written loop of
worker processes) drives a searcher like this::

    searcher = get_searcher("evolution", space, seed=0)
    proposals = searcher.ask(8)                 # 8 workers start
    ...                                         # any worker finishes, in any order
    searcher.tell(proposals[3], Result.ok(val_acc=0.91))
    searcher.tell(proposals[0], Result.failed("CUDA OOM"))
    proposals += searcher.ask(2)                # ask again before the others come back
    torch.save(searcher.state_dict(), "searcher.pt")   # resume later with load_state_dict

Searchers only propose and learn: they never train a model and never import Ray.

Serialization: ``state_dict()`` of the random, evolution and Optuna searchers is
JSON-serializable (plain dicts, lists, ints, floats, strings: an in-memory Optuna study's
trials as JSON, its sampler's random streams as lists); the RL controller's holds torch
tensors. No state holds a pickled object. Every state dict round-trips through
``torch.save``/``torch.load(weights_only=True)`` (``save_state``/``load_state`` below), which is
the one format that works for all of them.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from nasforge.trials import TRIAL_STATUSES, Direction, Status, rank_key
from nasforge.safe_load import load_plain

log = logging.getLogger(__name__)

STATUSES = TRIAL_STATUSES
# counted from the start; a screened result (a prescreen's) is counted once there is one
COUNTED = tuple(s for s in STATUSES if s != Status.SCREENED)
STATE_FORMAT = "nasforge.searcher/1"
HASH_MEMO_SIZE = 100_000  # decision sequences whose canonical hash is remembered


@dataclass(frozen=True)
class Proposal:
    """One architecture to evaluate, as handed to a worker by ``Searcher.ask``.

    ``id`` is unique within the searcher that made it (a counter, restored with the state);
    ``tokens`` are the decision indices (``space.encode(arch)``); ``hash`` is the isomorphism-
    invariant ``space.to_graph(arch).canonical_hash()``; ``meta`` says where it came from
    (``origin``: random / mutation / identity / policy / optuna, plus searcher-specific keys such
    as the parent id or the Optuna trial number). ``meta`` holds JSON values only.
    """

    id: int
    arch: Any = field(compare=False)
    tokens: tuple[int, ...]
    hash: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        return {"id": self.id, "tokens": list(self.tokens), "hash": self.hash,
                "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: Mapping, space) -> "Proposal":
        tokens = tuple(int(t) for t in data["tokens"])
        return cls(int(data["id"]), space.decode(tokens), tokens, str(data["hash"]),
                   dict(data.get("meta", {})))


@dataclass(frozen=True)
class Result:
    """The outcome of evaluating a proposal.

    ``status``: ``ok`` (trained to the end; ``metrics`` holds the objective, by default
    ``val_acc``, and anything else such as ``mult_adds``), ``failed`` (crashed, diverged, out of
    memory: no usable metric), ``pruned`` (stopped early by a scheduler; ``metrics`` may hold
    the last intermediate value) or ``infeasible`` (violates a constraint of the search:
    ``metrics`` holds what was measured, possibly without the objective when it was refused
    before training; it ranks below every feasible result). ``error`` is a free-text reason.
    ``constraints``: ``{constraint name: value}``, Optuna's convention (feasible when every
    value is <= 0), for searchers that model constraints (Optuna); empty when unconstrained.
    """

    status: Status = Status.OK  # its text is accepted too
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    constraints: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"result status {self.status!r} is not one of {', '.join(STATUSES)}")
        object.__setattr__(self, "status", Status(self.status))

    @classmethod
    def ok(cls, **metrics: float) -> "Result":
        return cls(Status.OK, dict(metrics))

    @classmethod
    def failed(cls, error: str | None = None, **metrics: float) -> "Result":
        return cls(Status.FAILED, dict(metrics), error)

    @classmethod
    def pruned(cls, **metrics: float) -> "Result":
        return cls(Status.PRUNED, dict(metrics))

    @classmethod
    def infeasible(cls, constraints: Mapping[str, float], error: str | None = None,
                   **metrics: float) -> "Result":
        return cls(Status.INFEASIBLE, dict(metrics), error, dict(constraints))

    def to_dict(self) -> dict:
        d = {"status": self.status.value, "metrics": dict(self.metrics), "error": self.error}
        if self.constraints:
            d["constraints"] = dict(self.constraints)
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> "Result":
        return cls(data["status"], dict(data.get("metrics", {})), data.get("error"),
                   dict(data.get("constraints", {})))


class Searcher(abc.ABC):
    """The protocol. Every method may be called at any time after construction, in any order
    consistent with "tell only what was asked, once"; several proposals may be in flight."""

    name: ClassVar[str] = ""

    @abc.abstractmethod
    def ask(self, n: int = 1) -> list[Proposal]:
        """Called when ``n`` workers are free: returns ``n`` new proposals to evaluate.

        Never blocks on results still in flight (asynchronous search)."""

    @abc.abstractmethod
    def tell(self, proposal: Proposal | int, result: Result) -> None:
        """Called once per proposal when its evaluation ends (ok, failed or pruned), in any order.

        Raises KeyError for a proposal that is not in flight and ValueError for an ``ok`` result
        without the objective; a failed, pruned or infeasible result never raises."""

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """Called to checkpoint: everything needed to continue, every RNG included, so that a
        searcher restored with ``load_state_dict`` proposes exactly what this one will."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping) -> None:
        """Called on a freshly constructed searcher (same class, space and config) to resume."""

    def in_flight(self) -> list[Proposal]:
        """Proposals asked and not yet told (also restored by ``load_state_dict``)."""
        return []

    def stats(self) -> dict[str, float]:
        """Called after a tell by whoever logs the search (TensorBoard): flat scalar
        statistics of the searcher's model (controller reward/entropy, population scores)."""
        return {}


class SearcherWrapper(Searcher):
    """A searcher around another one (``inner``), with the same protocol: its name, and every
    attribute it does not define itself (config, space, best(), stats ...), are the inner
    searcher's. Subclasses (the duplicate cache, the prescreen) override ask/tell/state."""

    inner: Searcher

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    def __getattr__(self, item):
        if item == "inner":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(item)
        return getattr(self.inner, item)

    @staticmethod
    def check_ask(n: int) -> int:
        """``n`` as an int; ValueError unless at least 1."""
        if int(n) < 1:
            raise ValueError(f"ask(n) needs n >= 1, got {n}")
        return int(n)


class SearcherBase(Searcher):
    """Bookkeeping shared by the concrete searchers: ids, proposals in flight, result counts,
    the best result, the objective, a ``numpy.random.Generator`` seeded from ``seed``, and the
    state-dict envelope. Subclasses implement ``_propose``, ``_observe`` and (for extra state)
    ``_get_state``/``_set_state``.

    ``objective`` is the metric key to optimize and ``direction`` a ``Direction`` (or its text:
    ``maximize``/``minimize``, ``max``/``min``); internally a *score* is the objective signed
    so that higher is better.
    """

    Config: ClassVar[type | None] = None
    # whether a search with several objectives may use this searcher (it models them, or,
    # like random search, learns nothing); its config's ``objectives`` field takes them
    multi_objective: ClassVar[bool] = False

    def __init__(self, space, config=None, seed: int = 0, objective: str = "val_acc",
                 direction: Direction | str = Direction.MAX):
        direction = Direction.parse(direction)
        if self.Config is not None:
            config = self.Config() if config is None else config
            if not isinstance(config, self.Config):
                raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, "
                                f"got {type(config).__name__}")
        self.space = space
        self.config = config
        self.seed = int(seed)
        self.objective = objective
        self.direction = direction
        self.rng = np.random.default_rng(self.seed)
        self._next_id = 0
        self._pending: dict[int, Proposal] = {}
        self.counts = {s: 0 for s in COUNTED}
        self._best: tuple[float, dict, dict] | None = None  # (score, proposal, result)
        self._hashes: dict[tuple[int, ...], str] = {}  # derived data: not in the state

    # ------------------------------------------------------------- protocol
    def ask(self, n: int = 1) -> list[Proposal]:
        if int(n) < 1:
            raise ValueError(f"ask(n) needs n >= 1, got {n}")
        proposals = []
        for arch, meta in self._propose(int(n)):
            proposals.append(self._register(arch, meta))
        return proposals

    def tell(self, proposal: Proposal | int, result: Result) -> None:
        pid = proposal.id if isinstance(proposal, Proposal) else int(proposal)
        own = self._pending.get(pid)
        if own is None:
            raise KeyError(f"proposal {pid} is not in flight (never asked, or already told)")
        if not isinstance(result, Result):
            raise TypeError(f"tell() needs a Result, got {type(result).__name__}")
        result = self._checked(result)
        del self._pending[pid]
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        if result.status == Status.OK:
            value = float(result.metrics[self.objective])
            if self._best is None or self._rank_key(value, own.id) < \
                    self._rank_key(*self._best_value()):
                self._best = (self.score(result), own.to_dict(), result.to_dict())
        self._observe(own, result)

    def in_flight(self) -> list[Proposal]:
        return list(self._pending.values())

    def stats(self) -> dict[str, float]:
        return {f"{status}_results": float(n) for status, n in self.counts.items()}

    def best(self) -> tuple[Proposal, Result] | None:
        """The best ``ok`` result told so far, or None: ranked by the run folder's rule
        (``trials.rank_key``: the objective in its direction, ties to the lowest proposal id),
        whatever order the results arrived in."""
        if self._best is None:
            return None
        return Proposal.from_dict(self._best[1], self.space), Result.from_dict(self._best[2])

    def _best_value(self) -> tuple[float, int]:
        """(objective value, proposal id) of the best result so far."""
        return float(self._best[2]["metrics"][self.objective]), int(self._best[1]["id"])

    def _rank_key(self, value: float, proposal_id: int) -> tuple[float, int]:
        return rank_key(value, self.direction, proposal_id)

    # ---------------------------------------------------------------- score
    def score(self, result: Result) -> float:
        """The objective of an ``ok`` result, signed so that higher is better."""
        return self.direction.sign * float(result.metrics[self.objective])

    def _checked(self, result: Result) -> Result:
        """Validate before any state changes. An ``ok`` result whose objective is NaN or
        infinite (a diverged run) is handled as failed."""
        if result.status != Status.OK:
            return result
        if self.objective not in result.metrics:
            raise ValueError(f"an ok result needs the objective {self.objective!r} in its metrics"
                             f" (got {sorted(result.metrics)})")
        if not math.isfinite(float(result.metrics[self.objective])):
            log.warning("objective %s=%s is not finite: handled as a failed result",
                        self.objective, result.metrics[self.objective])
            return Result(Status.FAILED, dict(result.metrics), "non-finite objective")
        return result

    # ----------------------------------------------------------------- hooks
    @abc.abstractmethod
    def _propose(self, n: int) -> list[tuple[Any, dict]]:
        """``n`` (architecture, meta) pairs; draws randomness only from the searcher's RNGs."""

    def _observe(self, proposal: Proposal, result: Result) -> None:
        """Learn from a finished proposal (already removed from the in-flight set)."""

    def _get_state(self) -> dict:
        return {}

    def _set_state(self, state: Mapping) -> None:
        pass

    # --------------------------------------------------------------- helpers
    def _register(self, arch, meta: dict) -> Proposal:
        tokens = tuple(int(t) for t in self.space.encode(arch))
        # memo of canonical hashes by decision sequence: a converged searcher repeats itself,
        # and building the graph to hash it is most of the cost of a proposal
        digest = self._hashes.get(tokens)
        if digest is None:
            if len(self._hashes) >= HASH_MEMO_SIZE:
                self._hashes.clear()
            digest = self._hashes[tokens] = self.space.to_graph(arch).canonical_hash()
        proposal = Proposal(self._next_id, arch, tokens, digest, dict(meta))
        self._next_id += 1
        self._pending[proposal.id] = proposal
        return proposal

    def _config_dict(self) -> dict | None:
        if self.config is None:
            return None
        return json.loads(json.dumps(dataclasses.asdict(self.config)))

    # ------------------------------------------------------------ state dict
    def state_dict(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "searcher": self.name,
            "space": {"name": getattr(self.space, "name", ""),
                      "decisions": [int(v) for v in self.space.decisions()]},
            "config": self._config_dict(),
            "seed": self.seed,
            "objective": self.objective,
            "direction": self.direction.optuna,
            "rng": self.rng.bit_generator.state,
            "next_id": self._next_id,
            "pending": [p.to_dict() for p in self._pending.values()],
            "counts": {s.value: n for s, n in self.counts.items()},
            "best": list(self._best) if self._best is not None else None,
            "searcher_state": self._get_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a searcher state (format {state.get('format')!r})")
        if state["searcher"] != self.name:
            raise ValueError(f"state of searcher {state['searcher']!r} loaded into {self.name!r}")
        if list(state["space"]["decisions"]) != [int(v) for v in self.space.decisions()]:
            raise ValueError("state was saved for a different search space (decisions differ)")
        if state.get("config") != self._config_dict():
            raise ValueError(f"state was saved with a different config: {state.get('config')} "
                             f"!= {self._config_dict()}")
        if state["objective"] != self.objective or \
                Direction.parse(state["direction"]) != self.direction:
            raise ValueError("state was saved for a different objective/direction")
        self.seed = int(state["seed"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self._next_id = int(state["next_id"])
        self._pending = {}
        for d in state["pending"]:
            p = Proposal.from_dict(d, self.space)
            self._pending[p.id] = p
        self.counts = {s: int(state["counts"].get(s, 0)) for s in STATUSES
                       if s in COUNTED or s in state["counts"]}
        best = state.get("best")
        self._best = (float(best[0]), dict(best[1]), dict(best[2])) if best else None
        self._set_state(state["searcher_state"])


def save_state(searcher: Searcher, path) -> None:
    """Write ``searcher.state_dict()`` with ``torch.save`` (works for every searcher)."""
    import torch

    torch.save(searcher.state_dict(), path)


def load_state(searcher: Searcher, path) -> Searcher:
    """Restore a state written by ``save_state`` into ``searcher``; returns it.

    Loaded with ``torch.load(weights_only=True)`` (``nasforge.safe_load.load_plain``): plain
    containers and tensors only, so a crafted file is refused (``RefusedFileError``, one line)
    before anything in it runs."""
    searcher.load_state_dict(load_plain(path, "searcher state"))
    return searcher
