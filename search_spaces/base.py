"""The search-space interface shared by every searcher (installed as nasforge.search_spaces)."""
from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np

from nasforge.dsl import CellPair


class SearchSpace(abc.ABC):
    """A space of architectures with the operations searchers need.

    Searchers call ``sample`` (random proposals, initial populations), ``mutate`` (evolution),
    ``decisions``/``decode`` (sequence models such as the RL controller and Optuna's
    define-by-run), and ``to_graph`` when a proposal is evaluated or stored.
    """

    name: str = ""

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator) -> Any:
        """A uniformly random architecture, drawn from ``rng`` only."""

    @abc.abstractmethod
    def mutate(self, arch: Any, rng: np.random.Generator) -> Any:
        """A copy of ``arch`` with exactly one decision changed."""

    @abc.abstractmethod
    def decisions(self) -> list[int]:
        """Vocabulary size of each categorical decision, in emission order."""

    @abc.abstractmethod
    def encode(self, arch: Any) -> list[int]:
        """The architecture as decision indices (one per entry of ``decisions()``)."""

    @abc.abstractmethod
    def decode(self, tokens: Sequence[int]) -> Any:
        """Inverse of ``encode``; raises ValueError for an invalid sequence."""

    @abc.abstractmethod
    def to_graph(self, arch: Any) -> CellPair:
        """The architecture as DSL cells: a cell pair, or a whole network (``CellChain``) for
        spaces of fixed macro-architecture such as ``nas-bench-201``."""

    def record(self, arch: Any) -> dict:
        """What a search stores of ``arch`` (a trial record's ``arch``, ``best_cell.json``):
        JSON that ``search_spaces.record_graph`` turns back into its DSL graph. By default
        the graph itself (``to_graph(arch).to_dict()``); a space of whole networks stores a
        compact form (``nas-bench-201``: the cell's string)."""
        return self.to_graph(arch).to_dict()

    def check_tokens(self, tokens: Sequence[int]) -> list[int]:
        """``tokens`` as ints, checked against ``decisions()`` (their number and each one's
        range); ValueError naming the first problem. Called first by ``decode``."""
        sizes = self.decisions()
        if len(tokens) != len(sizes):
            raise ValueError(f"expected {len(sizes)} decisions, got {len(tokens)}")
        for i, (t, n) in enumerate(zip(tokens, sizes)):
            if not 0 <= int(t) < n:
                raise ValueError(f"decision {i} is {t}, out of range 0..{n - 1}")
        return [int(t) for t in tokens]

    def size(self) -> int:
        """Number of distinct decision sequences."""
        return int(np.prod([int(v) for v in self.decisions()], dtype=object))
