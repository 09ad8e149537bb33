"""Random search: every decision drawn uniformly (``space.sample``), the baseline of every paper."""
from __future__ import annotations

from nasforge.controllers.base import SearcherBase


class RandomSearch(SearcherBase):
    """Uniform samples from the space; learns nothing. State: the RNG (JSON-serializable)."""

    name = "random"
    multi_objective = True  # learns nothing: any objectives

    def _propose(self, n: int):
        return [(self.space.sample(self.rng), {"origin": "random"}) for _ in range(n)]
