"""Duplicate detection shared by every searcher: one wrapper, not one copy per searcher.

``DedupCache(searcher)`` keys every proposal by its canonical hash (isomorphism-invariant). When
the wrapped searcher proposes an architecture isomorphic to one already evaluated (``ok``), the
wrapper tells the searcher the cached result right away, so its learning stays consistent (the
RL controller's batch, evolution's population, Optuna's trials all see it), counts the hit, and
asks again: the caller only receives architectures that need training. ``get_searcher`` wraps
by default (``dedup=False`` turns it off).

Only ``ok`` results are cached: a failure may be transient and a pruned run is incomplete.
Duplicates of proposals still in flight are not held back (they are rare outside tiny spaces).
A converged searcher could propose nothing but duplicates; after ``max_hits_per_ask``
consecutive hits within one ``ask`` the wrapper hands the duplicate out anyway (counted as
``overflow``) instead of looping forever.
"""
from __future__ import annotations

import logging
from typing import Mapping

from nasforge.controllers.base import Proposal, Result, Searcher, SearcherWrapper
from nasforge.trials import Status

log = logging.getLogger(__name__)

DEDUP_FORMAT = "nasforge.dedup/1"


class DedupCache(SearcherWrapper):
    """Wraps a searcher; same protocol. ``hits`` counts answers from the cache."""

    def __init__(self, searcher: Searcher, enabled: bool = True, max_hits_per_ask: int = 100):
        self.inner = searcher
        self.enabled = enabled
        self.max_hits_per_ask = int(max_hits_per_ask)
        self.cache: dict[str, Result] = {}
        self.hits = 0
        self.overflow = 0

    def ask(self, n: int = 1) -> list[Proposal]:
        n = self.check_ask(n)
        out: list[Proposal] = []
        hits_here = 0
        while len(out) < n:
            for p in self.inner.ask(n - len(out)):
                cached = self.cache.get(p.hash) if self.enabled else None
                if cached is None:
                    out.append(p)
                elif hits_here < self.max_hits_per_ask:
                    hits_here += 1
                    self.hits += 1
                    self.inner.tell(p, cached)
                else:
                    if self.overflow == 0:
                        log.warning("%s proposed %d duplicates in a row; handing one out for "
                                    "re-evaluation", self.inner.name, hits_here)
                    self.overflow += 1
                    out.append(p)
        return out

    def tell(self, proposal: Proposal | int, result: Result) -> None:
        pid = proposal.id if isinstance(proposal, Proposal) else int(proposal)
        own = {p.id: p for p in self.inner.in_flight()}.get(pid)
        self.inner.tell(proposal, result)
        if self.enabled and own is not None and result.status == Status.OK:
            self.cache.setdefault(own.hash, result)

    def in_flight(self) -> list[Proposal]:
        return self.inner.in_flight()

    def stats(self) -> dict[str, float]:
        return {**self.inner.stats(), "duplicate_hits": float(self.hits)}

    def lookup(self, proposal: Proposal) -> Result | None:
        """The cached result of an architecture isomorphic to ``proposal``, if any."""
        return self.cache.get(proposal.hash)

    def state_dict(self) -> dict:
        return {"format": DEDUP_FORMAT, "enabled": self.enabled, "hits": self.hits,
                "overflow": self.overflow,
                "cache": {h: r.to_dict() for h, r in self.cache.items()},
                "inner": self.inner.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("format") != DEDUP_FORMAT:
            raise ValueError(f"not a dedup-cache state (format {state.get('format')!r}); was it "
                             "saved from a searcher made with dedup=False?")
        self.inner.load_state_dict(state["inner"])
        self.enabled = bool(state["enabled"])
        self.hits, self.overflow = int(state["hits"]), int(state["overflow"])
        self.cache = {h: Result.from_dict(r) for h, r in state["cache"].items()}
