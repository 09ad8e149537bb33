"""Searchers (installed as ``nasforge.controllers``): one ask/tell protocol, by name.

>>> from nasforge.controllers import get_searcher, Result
>>> s = get_searcher("evolution", "nasnet", seed=0, population_size=50)
>>> p, = s.ask(1)
>>> s.tell(p, Result.ok(val_acc=0.9))

``get_searcher`` wraps the searcher in the shared duplicate cache (``DedupCache``) unless
``dedup=False``; keyword arguments other than ``seed``/``objective``/``direction`` are fields of
the searcher's frozen config dataclass (``RLConfig``, ``EvolutionConfig``, ``OptunaConfig``,
``BananasConfig``).
"""
from __future__ import annotations

from nasforge.controllers.base import (STATUSES, Proposal, Result, Searcher, SearcherBase,
                                       load_state, save_state)
from nasforge.controllers.bananas import Bananas, BananasConfig
from nasforge.controllers.dedup import DedupCache
from nasforge.controllers.evolution import EvolutionConfig, RegularizedEvolution
from nasforge.controllers.optuna_search import OptunaConfig, OptunaSearcher
from nasforge.controllers.prescreen import Prescreen
from nasforge.controllers.random_search import RandomSearch
from nasforge.controllers.rl import ControllerRNN, RLConfig, RLController
from nasforge.rules import add_unique, reject_unknown_keys
from nasforge.search_spaces import get_space

SEARCHERS: dict[str, type[SearcherBase]] = {}


def register_searcher(name: str, cls: type[SearcherBase]) -> type[SearcherBase]:
    """Make ``cls`` available to ``get_searcher(name, ...)``; ValueError if the name is taken."""
    return add_unique(SEARCHERS, name, cls, "searcher")


register_searcher("rl", RLController)
register_searcher("evolution", RegularizedEvolution)
register_searcher("optuna", OptunaSearcher)
register_searcher("random", RandomSearch)
register_searcher("bananas", Bananas)


def get_searcher(name: str, space, seed: int = 0, *, dedup: bool = True,
                 objective: str = "val_acc", direction: str = "maximize",
                 **config) -> Searcher:
    """A searcher by registry name over ``space`` (a SearchSpace or a space name).

    Raises KeyError for an unknown name and TypeError for an unknown config field."""
    try:
        cls = SEARCHERS[name]
    except KeyError:
        raise KeyError(f"unknown searcher {name!r} (known: {', '.join(SEARCHERS)})") from None
    if isinstance(space, str):
        space = get_space(space)
    if cls.Config is None:
        if config:
            raise TypeError(f"searcher {name!r} takes no config, got {sorted(config)}")
        cfg = None
    else:
        reject_unknown_keys(cls.Config, config, f"searcher {name!r} config", TypeError)
        cfg = cls.Config(**config)
    searcher = cls(space, cfg, seed=seed, objective=objective, direction=direction)
    return DedupCache(searcher) if dedup else searcher


__all__ = ["Searcher", "SearcherBase", "Proposal", "Result", "STATUSES", "DedupCache",
           "RandomSearch", "RegularizedEvolution", "EvolutionConfig", "RLController",
           "RLConfig", "ControllerRNN", "OptunaSearcher", "OptunaConfig", "Bananas",
           "BananasConfig", "SEARCHERS",
           "get_searcher", "register_searcher", "save_state", "load_state", "Prescreen"]
