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

State (``state_dict``): JSON-serializable; the sampler (its RNG included) is a base64 pickle, as
Optuna's FAQ recommends for resuming a sampler, and so is the whole study when it lives in memory.
With a database storage the trials stay in the database and the state names the study.
"""
from __future__ import annotations

import base64
import logging
import math
import pickle
from dataclasses import dataclass, field
from typing import Any, Mapping

from nasforge.controllers.base import Proposal, Result, SearcherBase

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
            objs = tuple((str(k), str(d)) for k, d in self.objectives)
            for _, d in objs:
                if d not in ("maximize", "minimize"):
                    raise ValueError(f"objective direction {d!r} is not maximize/minimize")
            if not objs:
                raise ValueError("objectives is empty")
            object.__setattr__(self, "objectives", objs)


def __getattr__(name):
    # states pickled by earlier nasforge releases name the fast TPE by its former name
    if name == "MemoizedTPESampler":
        from nasforge.controllers.optuna_tpe import FastTPESampler

        return FastTPESampler
    raise AttributeError(name)


def sampler_class_name(name: str, multi_objective: bool) -> str:
    if name == "auto":
        return "NSGAIISampler" if multi_objective else "TPESampler"
    return SAMPLER_ALIASES.get(name.lower(), name)


def _b64(obj) -> str:
    return base64.b64encode(pickle.dumps(obj)).decode("ascii")


def _unb64(text: str):
    return pickle.loads(base64.b64decode(text))


class OptunaSearcher(SearcherBase):
    """Optuna sampler + study behind ask/tell. ``study`` is the live ``optuna.Study``."""

    name = "optuna"
    Config = OptunaConfig

    def __init__(self, space, config: OptunaConfig | None = None, seed: int = 0, **kw):
        import optuna

        super().__init__(space, config, seed, **kw)
        cfg = self.config
        self.objectives = cfg.objectives or ((self.objective, self.direction),)
        # the first objective is the searcher's (best(), score())
        self.objective, self.direction = self.objectives[0]
        self._sampler_name = sampler_class_name(cfg.sampler, len(self.objectives) > 1)
        cls = getattr(optuna.samplers, self._sampler_name, None)
        if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
            raise ValueError(f"unknown Optuna sampler {cfg.sampler!r} (aliases: "
                             f"{', '.join(SAMPLER_ALIASES)}, or a class of optuna.samplers)")
        kwargs = {**SAMPLER_DEFAULTS.get(self._sampler_name, {}), "seed": self.seed,
                  **cfg.sampler_kwargs}
        if self._sampler_name == "TPESampler" and cfg.fast_tpe:
            from nasforge.controllers.optuna_tpe import FastTPESampler, fast_tpe_available

            if fast_tpe_available():
                cls = FastTPESampler
            else:
                log.info("optuna %s lacks the hooks FastTPESampler uses: stock TPESampler",
                         optuna.__version__)
        self.sampler = cls(**kwargs)
        self.study_name = cfg.study_name or \
            f"nasforge-{getattr(space, 'name', 'space')}-{self._sampler_name}"
        self.study = optuna.create_study(
            storage=cfg.storage, sampler=self.sampler, study_name=self.study_name,
            directions=[d for _, d in self.objectives], load_if_exists=True)
        sizes = [int(n) for n in space.decisions()]
        width = max(2, len(str(len(sizes) - 1)))
        self._params = [(f"d{i:0{width}d}", list(range(n))) for i, n in enumerate(sizes)]

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
        if result.status == "ok":
            missing = [k for k, _ in self.objectives if k not in result.metrics]
            if missing:
                raise ValueError(f"an ok result needs the objectives {missing} in its metrics")
            if not all(math.isfinite(float(result.metrics[k])) for k, _ in self.objectives):
                return Result("failed", dict(result.metrics), "non-finite objective")
        return result

    def _observe(self, proposal: Proposal, result: Result) -> None:
        from optuna.trial import TrialState

        number = proposal.meta["trial_number"]
        if result.status == "ok":
            values = [float(result.metrics[k]) for k, _ in self.objectives]
            self.study.tell(number, values if len(values) > 1 else values[0])
        elif result.status == "pruned":
            self.study.tell(number, state=TrialState.PRUNED)
        else:
            self.study.tell(number, state=TrialState.FAIL)

    # ---------------------------------------------------------------- state
    def _in_memory(self) -> bool:
        from optuna.storages import InMemoryStorage

        return isinstance(self.study._storage, InMemoryStorage)

    def _get_state(self) -> dict:
        state: dict[str, Any] = {"study_name": self.study_name,
                                 "sampler_class": self._sampler_name}
        if self._in_memory():
            state["study"] = _b64(self.study)  # trials and sampler together
        else:
            state["sampler"] = _b64(self.sampler)
        return state

    def _set_state(self, state: Mapping) -> None:
        import optuna

        if state["sampler_class"] != self._sampler_name:
            raise ValueError(f"state was saved with sampler {state['sampler_class']}, this "
                             f"searcher uses {self._sampler_name}")
        if "study" in state:
            if not self._in_memory():
                raise ValueError("state holds an in-memory study; this searcher has a storage")
            self.study = _unb64(state["study"])
            self.sampler = self.study.sampler
        else:
            if self._in_memory():
                raise ValueError("state names a study in a database storage; construct the "
                                 "searcher with that storage URL")
            self.sampler = _unb64(state["sampler"])
            self.study_name = state["study_name"]
            self.study = optuna.load_study(study_name=self.study_name,
                                           storage=self.config.storage, sampler=self.sampler)
