"""Search spaces (installed as ``nasforge.search_spaces``), by name."""
from __future__ import annotations

from typing import Callable

from nasforge.rules import add_unique
from nasforge.search_spaces.base import SearchSpace
from nasforge.search_spaces.darts import DartsGenotype, DartsSpace
from nasforge.search_spaces.nas_bench_201 import NasBench201Space
from nasforge.search_spaces.nasnet import (ENAS_MICRO_OPS, Block, EnasMicroSpace, NasNetArch,
                                           NasNetExtSpace, NasNetSpace)

SPACES: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str, factory: Callable[..., SearchSpace]) -> Callable[..., SearchSpace]:
    """Make ``factory(**kwargs)`` available to ``get_space(name, ...)``; ValueError if the name
    is taken."""
    return add_unique(SPACES, name, factory, "search space")


for _space in (NasNetSpace, NasNetExtSpace, EnasMicroSpace, NasBench201Space, DartsSpace):
    register_space(_space.name, _space)


def get_space(name: str, **kwargs) -> SearchSpace:
    try:
        return SPACES[name](**kwargs)
    except KeyError:
        raise KeyError(f"unknown search space {name!r} (known: {', '.join(SPACES)})") from None


__all__ = ["SearchSpace", "NasNetSpace", "NasNetExtSpace", "EnasMicroSpace", "ENAS_MICRO_OPS",
           "NasNetArch", "Block", "NasBench201Space", "DartsSpace", "DartsGenotype", "SPACES",
           "get_space", "register_space"]
