"""Search spaces (installed as ``nasforge.search_spaces``), by name."""
from __future__ import annotations

from typing import Callable

from nasforge.search_spaces.base import SearchSpace
from nasforge.search_spaces.nasnet import Block, NasNetArch, NasNetExtSpace, NasNetSpace

SPACES: dict[str, Callable[..., SearchSpace]] = {
    space.name: space for space in (NasNetSpace, NasNetExtSpace)}


def get_space(name: str, **kwargs) -> SearchSpace:
    try:
        return SPACES[name](**kwargs)
    except KeyError:
        raise KeyError(f"unknown search space {name!r} (known: {', '.join(SPACES)})") from None


__all__ = ["SearchSpace", "NasNetSpace", "NasNetExtSpace", "NasNetArch", "Block", "SPACES",
           "get_space"]
