"""Search spaces (installed as ``nasforge.search_spaces``), by name."""
from __future__ import annotations

import json
from typing import Callable, Mapping

from nasforge.dsl import load_architecture
from nasforge.rules import add_unique
from nasforge.search_spaces.base import SearchSpace
from nasforge.search_spaces.darts import DartsGenotype, DartsSpace
from nasforge.search_spaces.nas_bench_201 import (NasBench201Space, format_cell, is_cell_record,
                                                  network, read_cell_record)
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


def record_graph(data: Mapping):
    """The DSL graph of an architecture as a search stores it (``SearchSpace.record``: a trial
    record's ``arch``, ``pareto.json``, ``best_cell.json``): a NAS-Bench-201 cell record is
    rebuilt as NAS-Bench-201's network for its data set, named by its string; anything else
    is a cell, a cell pair or a cell chain (``dsl.load_architecture``; older runs of
    nas-bench-201 stored the whole chain). Malformed data raises the DSL's CellError."""
    if is_cell_record(data):
        cell, dataset, _ = read_cell_record(data)
        return network(cell, dataset, name=format_cell(cell))
    return load_architecture(json.dumps(data))


__all__ = ["record_graph", "SearchSpace", "NasNetSpace", "NasNetExtSpace", "EnasMicroSpace",
           "ENAS_MICRO_OPS",
           "NasNetArch", "Block", "NasBench201Space", "DartsSpace", "DartsGenotype",
           "SPACES", "get_space", "register_space"]
