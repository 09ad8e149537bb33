"""Optuna behind the ask/tell protocol: any Optuna sampler, any Optuna storage.

Define-by-run over the space's decision sequence: each proposal is an Optuna trial from
``study.ask()`` whose decisions are ``trial.suggest_categorical("d00", [0, .., n-1])``,
``"d01"``, ... (one per entry of ``space.decisions()``); ``tell`` calls ``study.tell`` with the
objective value(s), ``TrialState.FAIL`` for failed results and ``TrialState.PRUNED`` for pruned
ones. Everything else (the model, the liar for running trials, persistence) is Optuna's.

* Sampler: ``"auto"`` is TPE (``multivariate=True, constant_liar=True``; run as
  ``FastTPESampler`` from ``optuna_tpe.py``, same proposals, unless ``fast_tpe=False``) for one
  objective and NSGA-II for several
  (``objectives=(("val_acc", "maximize"), ("mult_adds", "minimize"))``);
  any other name is a class of ``optuna.samplers`` (``"TPESampler"``, ``"NSGAIISampler"``,
  ``"GPSampler"``, ...) or a short alias (``tpe``, ``nsga2``, ``nsga3``, ``random``, ``qmc``,
  ``gp``, ``cmaes``, ``bruteforce``); ``sampler_kwargs`` are passed to it (the sampler's seed is
  the searcher's seed unless given there).
* Storage: ``None`` keeps the study in memory; a URL (``sqlite:///search.db``,
  ``postgresql://...``) lets several processes share one study
  (``load_if_exists``) and a new process resume a search from the storage alone. Give each
  process its own seed, or they propose the same architectures.

State (``state_dict``): plain JSON data, no pickle anywhere (a run folder's ``searcher.pt``
is read with ``torch.load(weights_only=True)``, and nothing in it is unpickled later). With the
study in memory the state holds every trial as JSON (number, state, values, params, Optuna's
own ``distribution_to_json`` for each distribution, user/system attributes, intermediate
values, times) plus the study's attributes; restoring re-adds them with ``study.add_trial`` to
a fresh in-memory study, so trial ids and numbers are the same as before. Why trials as JSON
rather than an Optuna journal/RDB file in the run folder: the state is one snapshot, written
atomically together with the searcher's pending proposals, counters and RNGs; a storage file
beside it would be written at other moments (every ask and tell) and a driver killed between
the two would resume with trials the rest of the state has not seen. The sampler is rebuilt
from the config and its random streams (every ``numpy.random.RandomState`` it holds, found by
attribute path: TPE's own and its start-up ``RandomSampler``'s, NSGA-II's, ...) are restored
from their ``get_state()`` as lists. Whatever else a sampler keeps is derived from the trials
(TPE's search-space and row caches, NSGA-II's populations live in study/trial system
attributes), so TPE, NSGA-II and random search continue with exactly the proposals an
uninterrupted searcher makes, and so does QMC (its sample counter is a study attribute)
(``tests/test_safe_loading.py``); a sampler with private warm-start caches (GPSampler's fitted
kernel) refits them from the trials. Attribute values that are encoded pickles (CMA-ES keeps
its optimizer so, and Optuna unpickles it) are refused on restore. (An Optuna JournalStorage
file would not do either: its snapshots are read back with ``pickle.loads``.) With a database
storage the trials stay in the database and the state names the study and holds the sampler's
random streams. States saved as base64 pickles by earlier nasforge releases are refused,
not unpickled.
"""
from __future__ import annotations

import base64
import datetime
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from nasforge.controllers.base import Proposal, Result, SearcherBase
from nasforge.trials import Direction, Status
from nasforge.controllers.optuna_tpe import FastTPESampler, fast_tpe_available

log = logging.getLogger(__name__)

SAMPLER_ALIASES = {
    "tpe": "TPESampler", "nsga2": "NSGAIISampler", "nsga3": "NSGAIIISampler",
    "random": "RandomSampler", "qmc": "QMCSampler", "gp": "GPSampler",
    "cmaes": "CmaEsSampler", "bruteforce": "BruteForceSampler",
}
SAMPLER_DEFAULTS = {"TPESampler": {"multivariate": True, "constant_liar": True}}


@dataclass(frozen=True)
class OptunaConfig:
    sampler: str = "auto"  # "auto" (TPE; NSGA-II when several objectives), an alias or class name
    sampler_kwargs: dict = field(default_factory=dict)  # extra sampler arguments (JSON values)
    storage: str | None = None  # None = in memory; "sqlite:///file.db", "postgresql://..."
    study_name: str | None = None  # default: "nasforge-<space>-<sampler>" (shared by processes)
    # ((metric, "maximize" | "minimize"), ...) for multi-objective search; None = the
    # searcher's single objective/direction
    objectives: tuple[tuple[str, str], ...] | None = None
    # TPE as FastTPESampler (controllers/optuna_tpe.py): same proposals, about 3x less
    # time per ask at 1,000 trials
    fast_tpe: bool = True

    def __post_init__(self):
        if self.objectives is not None:
            # Optuna's spelling, as configs and searcher states on disk hold it
            objs = tuple((str(k), Direction.parse(d).optuna) for k, d in self.objectives)
            if not objs:
                raise ValueError("objectives is empty")
            object.__setattr__(self, "objectives", objs)


def sampler_class_name(name: str, multi_objective: bool) -> str:
    if name == "auto":
        return "NSGAIISampler" if multi_objective else "TPESampler"
    return SAMPLER_ALIASES.get(name.lower(), name)


STATE_VERSION = 2  # 1: base64 pickles (refused); 2: trials as JSON, sampler RNGs as lists
_RNG_SEARCH_DEPTH = 4  # attribute levels searched for a sampler's random streams


def _random_streams(sampler) -> dict[str, Any]:
    """``{attribute path: RandomState or Generator or LazyRandomState}`` of a sampler:
    Optuna keeps each sampler's randomness in such objects (directly, or lazily seeded, or in
    a helper such as TPE's start-up ``RandomSampler``), under private names that differ by
    sampler, so they are found by walking the sampler's attributes (Optuna objects only, each
    object once, in name order) rather than named one by one. A stream shared by two helpers
    (NSGA-II's crossover uses the sampler's) is listed once, under its first path."""
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def walk(obj, path, depth):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (np.random.RandomState, np.random.Generator)) or \
                type(obj).__name__ == "LazyRandomState":
            found[path] = obj
            return
        module = type(obj).__module__ or ""
        if depth == 0 or not (module.startswith("optuna") or
                              module.startswith("nasforge")) or not hasattr(obj, "__dict__"):
            return
        for name in sorted(vars(obj)):
            walk(vars(obj)[name], f"{path}.{name}" if path else name, depth - 1)

    walk(sampler, "", _RNG_SEARCH_DEPTH)
    return found


def _stream_state(stream) -> dict | None:
    if type(stream).__name__ == "LazyRandomState":
        stream = stream._rng  # None until first use: the fresh sampler's is unused too
        if stream is None:
            return None
    if isinstance(stream, np.random.Generator):
        return {"generator": _plain(stream.bit_generator.state)}
    return {"random_state": _plain(stream.get_state(legacy=False))}


def _set_stream_state(stream, state: dict | None) -> None:
    if state is None:
        return
    if type(stream).__name__ == "LazyRandomState":
        stream = stream.rng  # materialized here, then overwritten below
    if "generator" in state:
        stream.bit_generator.state = state["generator"]
    else:
        rs = dict(state["random_state"])
        rs["state"] = {"key": np.asarray(rs["state"]["key"], dtype=np.uint32),
                       "pos": int(rs["state"]["pos"])}
        stream.set_state(rs)


def _plain(value):
    """``value`` with numpy arrays and scalars as lists and Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _trial_to_json(trial) -> dict:
    from optuna.distributions import distribution_to_json

    def when(t):
        return None if t is None else t.isoformat()

    return {"number": trial.number, "trial_id": trial._trial_id, "state": trial.state.name,
            "values": None if trial.values is None else [float(v) for v in trial.values],
            "params": _plain(dict(trial.params)),
            "distributions": {k: distribution_to_json(d)
                              for k, d in trial.distributions.items()},
            "user_attrs": _plain(dict(trial.user_attrs)),
            "system_attrs": _plain(dict(trial.system_attrs)),
            "intermediate_values": [[int(k), float(v)]
                                    for k, v in sorted(trial.intermediate_values.items())],
            "datetime_start": when(trial.datetime_start),
            "datetime_complete": when(trial.datetime_complete)}


_PICKLE_HEADS_HEX = ("8002", "8003", "8004", "8005")  # PROTO opcode + protocols 2 to 5


def _refuse_pickles(attrs: Mapping, where: str) -> None:
    """Raises ValueError when an attribute value is a hex or base64 encoded pickle: Optuna's
    CMA-ES sampler keeps its optimizer so in trial system attributes and unpickles it on a
    later ask, so a crafted state could smuggle one in."""
    for key, value in attrs.items():
        if not isinstance(value, str) or len(value) < 4:
            continue
        hexed = value[:4].lower() in _PICKLE_HEADS_HEX and \
            all(c in "0123456789abcdefABCDEF" for c in value)
        try:
            head = base64.b64decode(value[:8], validate=True)
        except ValueError:
            head = b""
        if hexed or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04",
                                                           b"\x05")):
            raise ValueError(f"{where} attribute {key!r} holds an encoded pickle, which Optuna "
                             f"could unpickle: refused")


def _trial_from_json(d: Mapping):
    from optuna.distributions import json_to_distribution
    from optuna.trial import FrozenTrial, TrialState

    def when(t):
        return None if t is None else datetime.datetime.fromisoformat(t)

    _refuse_pickles(d["system_attrs"], f"trial {d['number']}: system")
    _refuse_pickles(d["user_attrs"], f"trial {d['number']}: user")
    values = d["values"]
    return FrozenTrial(
        number=int(d["number"]), trial_id=int(d["trial_id"]), state=TrialState[d["state"]],
        value=None, values=None if values is None else [float(v) for v in values],
        datetime_start=when(d["datetime_start"]), datetime_complete=when(d["datetime_complete"]),
        params=dict(d["params"]),
        distributions={k: json_to_distribution(v) for k, v in d["distributions"].items()},
        user_attrs=dict(d["user_attrs"]), system_attrs=dict(d["system_attrs"]),
        intermediate_values={int(k): float(v) for k, v in d["intermediate_values"]})


def _finite_or(value, direction: Direction | str) -> float:
    """``value`` if finite, else the worst value of ``direction``."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return Direction.parse(direction).worst_value


class OptunaSearcher(SearcherBase):
    """Optuna sampler + study behind ask/tell. ``study`` is the live ``optuna.Study``."""

    name = "optuna"
    Config = OptunaConfig
    multi_objective = True

    def __init__(self, space, config: OptunaConfig | None = None, seed: int = 0, **kw):
        import optuna

        # Optuna's own handler writes to the stderr it saw first; its records go through the
        # standard logging tree instead, where the application (the CLI) decides what shows
        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
        super().__init__(space, config, seed, **kw)
        cfg = self.config
        self.objectives = cfg.objectives or ((self.objective, self.direction.optuna),)
        # the first objective is the searcher's (best(), score())
        self.objective, direction = self.objectives[0]
        self.direction = Direction.parse(direction)
        self._sampler_name = sampler_class_name(cfg.sampler, len(self.objectives) > 1)
        cls = getattr(optuna.samplers, self._sampler_name, None)
        if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
            raise ValueError(f"unknown Optuna sampler {cfg.sampler!r} (aliases: "
                             f"{', '.join(SAMPLER_ALIASES)}, or a class of optuna.samplers)")
        if self._sampler_name == "TPESampler" and cfg.fast_tpe:
            if fast_tpe_available():
                cls = FastTPESampler
            else:
                log.info("optuna %s lacks the hooks FastTPESampler uses: stock TPESampler",
                         optuna.__version__)
        self._sampler_cls = cls
        self.sampler = self._new_sampler()
        self.study_name = cfg.study_name or \
            f"nasforge-{getattr(space, 'name', 'space')}-{self._sampler_name}"
        self.study = self._open_study(cfg.storage)
        sizes = [int(n) for n in space.decisions()]
        width = max(2, len(str(len(sizes) - 1)))
        self._params = [(f"d{i:0{width}d}", list(range(n))) for i, n in enumerate(sizes)]

    def _new_sampler(self):
        """A sampler as the config describes it, in its initial state (seeded)."""
        kwargs = {**SAMPLER_DEFAULTS.get(self._sampler_name, {}), "seed": self.seed,
                  **self.config.sampler_kwargs}
        return self._sampler_cls(**kwargs)

    def _open_study(self, storage):
        """The study named ``self.study_name`` with ``self.sampler``: created (or loaded from a
        database) in ``storage``, or in a new in-memory storage kept as ``self._storage``."""
        import optuna

        self._storage = optuna.storages.InMemoryStorage() if storage is None else None
        return optuna.create_study(
            storage=self._storage if storage is None else storage, sampler=self.sampler,
            study_name=self.study_name, directions=[d for _, d in self.objectives],
            load_if_exists=True)

    # ------------------------------------------------------------- protocol
    def _propose(self, n: int):
        out = []
        for _ in range(n):
            trial = self.study.ask()
            tokens = [trial.suggest_categorical(name, choices) for name, choices in self._params]
            out.append((self.space.decode(tokens),
                        {"origin": "optuna", "trial_number": trial.number}))
        return out

    def _checked(self, result: Result) -> Result:
        result = super()._checked(result)
        if result.status == Status.OK:
            missing = [k for k, _ in self.objectives if k not in result.metrics]
            if missing:
                raise ValueError(f"an ok result needs the objectives {missing} in its metrics")
            if not all(math.isfinite(float(result.metrics[k])) for k, _ in self.objectives):
                return Result(Status.FAILED, dict(result.metrics), "non-finite objective")
        return result

    def _observe(self, proposal: Proposal, result: Result) -> None:
        from optuna.trial import TrialState

        number = proposal.meta["trial_number"]
        if result.constraints and not self._set_constraints(number, result.constraints) \
                and result.status == Status.INFEASIBLE:
            self.study.tell(number, state=TrialState.FAIL)
            return
        if result.status in (Status.OK, Status.INFEASIBLE):
            # an infeasible trial is complete with its constraint values; Optuna's samplers
            # (TPE, NSGA-II, GP) rank it by its violation, never by these values, which for a
            # child refused before training are the worst possible
            values = [_finite_or(result.metrics.get(k), d) for k, d in self.objectives]
            self.study.tell(number, values if len(values) > 1 else values[0])
        elif result.status == Status.PRUNED:
            self.study.tell(number, state=TrialState.PRUNED)
        else:
            self.study.tell(number, state=TrialState.FAIL)

    def _set_constraints(self, number: int, constraints: Mapping[str, float]) -> bool:
        """Attach constraint values to running trial ``number`` (Optuna 5's
        ``Trial.set_constraint``, which every constraint-aware sampler reads); False on an
        Optuna without it (the trial is then told as failed)."""
        import optuna

        if not hasattr(optuna.trial.Trial, "set_constraint"):
            log.warning("optuna %s has no Trial.set_constraint: infeasible trials are told as "
                        "failures", optuna.__version__)
            return False
        frozen = self.study.get_trials(deepcopy=False)[number]
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        for key, value in constraints.items():
            trial.set_constraint(key, min(float(value), 1e300))  # inf is not a value to store
        return True

    # ---------------------------------------------------------------- state
    def _get_state(self) -> dict:
        state: dict[str, Any] = {
            "version": STATE_VERSION, "study_name": self.study_name,
            "sampler_class": self._sampler_name,
            "sampler_rng": {path: _stream_state(stream)
                            for path, stream in _random_streams(self.sampler).items()}}
        if self._storage is not None:  # in memory: the trials travel with the state
            study_id = self._storage.get_study_id_from_name(self.study_name)
            state["trials"] = [_trial_to_json(t) for t in self.study.get_trials(deepcopy=False)]
            state["study_system_attrs"] = _plain(self._storage.get_study_system_attrs(study_id))
            state["study_user_attrs"] = _plain(dict(self.study.user_attrs))
        return state

    def _set_state(self, state: Mapping) -> None:
        if "version" not in state and ("study" in state or "sampler" in state):
            raise ValueError("this Optuna searcher state was saved by an earlier nasforge as a "
                             "pickle, which nasforge no longer loads (unpickling a file can "
                             "run code): start the search afresh")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown Optuna searcher state version {state.get('version')!r}")
        if state["sampler_class"] != self._sampler_name:
            raise ValueError(f"state was saved with sampler {state['sampler_class']}, this "
                             f"searcher uses {self._sampler_name}")
        in_memory = "trials" in state
        if in_memory != (self.config.storage is None):
            raise ValueError("state holds an in-memory study; this searcher has a storage"
                             if in_memory else "state names a study in a database storage; "
                             "construct the searcher with that storage URL")
        # a fresh sampler and study: caches of the current ones may describe other trials
        self.sampler = self._new_sampler()
        streams = _random_streams(self.sampler)
        missing = set(state["sampler_rng"]) - set(streams)
        if missing:
            raise ValueError(f"the saved sampler state has random streams this "
                             f"{self._sampler_name} lacks: {', '.join(sorted(missing))}")
        for path, stream_state in state["sampler_rng"].items():
            _set_stream_state(streams[path], stream_state)
        self.study_name = state["study_name"]
        if not in_memory:
            import optuna

            self.study = optuna.load_study(study_name=self.study_name,
                                           storage=self.config.storage, sampler=self.sampler)
            return
        _refuse_pickles(state["study_system_attrs"], "study system")
        _refuse_pickles(state["study_user_attrs"], "study user")
        self.study = self._open_study(None)
        study_id = self._storage.get_study_id_from_name(self.study_name)
        for key, value in state["study_system_attrs"].items():
            self._storage.set_study_system_attr(study_id, key, value)
        for key, value in state["study_user_attrs"].items():
            self.study.set_user_attr(key, value)
        for d in sorted(state["trials"], key=lambda d: int(d["number"])):
            trial = _trial_from_json(d)
            self.study.add_trial(trial)
        restored = self.study.get_trials(deepcopy=False)
        if [t._trial_id for t in restored] != [int(d["trial_id"]) for d in
                                                sorted(state["trials"],
                                                       key=lambda d: int(d["number"]))]:
            raise ValueError("the restored study numbers its trials differently from the saved "
                             "one")
