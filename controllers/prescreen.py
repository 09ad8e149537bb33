"""Prescreening for any searcher: each proposal is the best of K candidates by a cheap score.

``Prescreen(searcher, scorer, k, label)`` wraps a searcher (usually the ``DedupCache`` that
``get_searcher`` returns) and keeps its protocol. For every proposal asked of it, it asks the
wrapped searcher for ``k`` candidates, scores them with ``scorer`` (a callable from a list of
proposals to one float each, larger is better; ``nasforge.proxies.prescreen`` builds one from a
zero-cost proxy, with a cache), hands out the best one (ties: the lowest proposal id) and
tells the wrapped searcher each of the others at once as ``screened`` with its score in the
metrics under ``label``, so it is never trained, costs no budget, never joins evolution's
population and is an ignored (failed) trial for Optuna. A non-finite score ranks last and is
recorded without a value.

The screened candidates of each ``ask`` wait in ``take_screened()`` (proposal, result) until
the driver records them (the Ray adapter writes them to ``trials.jsonl``; the table benchmark
counts them). Imports no torch: the scorer is the caller's.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from nasforge.controllers.base import Proposal, Result, Searcher, SearcherWrapper
from nasforge.trials import Status

PRESCREEN_FORMAT = "nasforge.prescreen/1"


class PrescreenError(ValueError):
    """A prescreen asked with fewer than one candidate per proposal."""


class Prescreen(SearcherWrapper):
    """Wraps a searcher; same protocol. ``screened``: candidates screened out so far."""

    def __init__(self, searcher: Searcher, scorer: Callable[[Sequence[Proposal]], list[float]],
                 k: int, label: str):
        if int(k) < 1:
            raise PrescreenError(f"a prescreen takes the best of k >= 1 candidates, got k={k}")
        self.inner, self.scorer, self.k, self.label = searcher, scorer, int(k), str(label)
        self.screened = 0
        self._waiting: list[tuple[Proposal, Result]] = []

    def ask(self, n: int = 1) -> list[Proposal]:
        n = self.check_ask(n)
        out = []
        for _ in range(int(n)):
            candidates = self.inner.ask(self.k)
            scores = [float(s) for s in self.scorer(candidates)]
            if len(scores) != len(candidates):
                raise ValueError(f"the prescreen's scorer gave {len(scores)} scores for "
                                 f"{len(candidates)} candidates")
            ranked = sorted(zip(candidates, scores),
                            key=lambda cs: (-_rankable(cs[1]), cs[0].id))
            chosen, _ = ranked[0]
            for p, s in ranked[1:]:
                metrics = {self.label: s} if math.isfinite(s) else {}
                result = Result(Status.SCREENED, metrics,
                                f"screened: {self.label} ranked candidate {chosen.id} higher")
                self.inner.tell(p, result)
                self.screened += 1
                self._waiting.append((p, result))
            out.append(chosen)
        return out

    def take_screened(self) -> list[tuple[Proposal, Result]]:
        """The candidates screened out since the last call, in the order they were told."""
        waiting, self._waiting = self._waiting, []
        return waiting

    def tell(self, proposal: Proposal | int, result: Result) -> None:
        self.inner.tell(proposal, result)

    def in_flight(self) -> list[Proposal]:
        return self.inner.in_flight()

    def stats(self) -> dict[str, float]:
        return {**self.inner.stats(), "screened": float(self.screened)}

    def state_dict(self) -> dict:
        return {"format": PRESCREEN_FORMAT, "k": self.k, "label": self.label,
                "screened": self.screened, "inner": self.inner.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("format") != PRESCREEN_FORMAT:
            raise ValueError(f"not a prescreen state (format {state.get('format')!r}); was it "
                             f"saved from a search without a prescreen?")
        if int(state["k"]) != self.k or state["label"] != self.label:
            raise ValueError(f"state was saved with prescreen {state['label']}:{state['k']}, "
                             f"not {self.label}:{self.k}")
        self.inner.load_state_dict(state["inner"])
        self.screened = int(state["screened"])


def _rankable(score: float) -> float:
    return score if math.isfinite(score) else -math.inf


__all__ = ["Prescreen", "PrescreenError", "PRESCREEN_FORMAT"]
