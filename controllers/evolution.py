"""Regularized (aging) evolution, Real et al. 2019 (AmoebaNet), asynchronous.

The population holds the ``population_size`` most recently *finished* children (ok results
only); a tournament draws ``sample_size`` members with replacement, the best is the parent, the
child is one ``space.mutate`` of it (or, with ``identity_prob``, a copy: AmoebaNet's identity
mutation), and when a child joins, the oldest member leaves. The first ``population_size``
proposals are random; a random proposal that fails is replaced by another, so the initial
population fills with working architectures. Asynchronous: ``ask`` never waits, a tournament uses
the population as it is at that moment (random proposals while it is still empty).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Mapping

from nasforge.controllers.base import Proposal, Result, SearcherBase
from nasforge.trials import Status


@dataclass(frozen=True)
class EvolutionConfig:
    population_size: int = 100  # P: members kept (architectures); the oldest leaves
    sample_size: int = 25       # S: tournament size, drawn with replacement
    identity_prob: float = 0.05  # probability that a child is an unchanged copy of its parent

    def __post_init__(self):
        if self.population_size < 1 or self.sample_size < 1:
            raise ValueError("population_size and sample_size must be >= 1")
        if not 0.0 <= self.identity_prob <= 1.0:
            raise ValueError("identity_prob must be in [0, 1]")


class RegularizedEvolution(SearcherBase):
    """Aging evolution. State: RNG, population (oldest first), random proposals in flight
    (JSON-serializable)."""

    name = "evolution"
    Config = EvolutionConfig

    def __init__(self, space, config: EvolutionConfig | None = None, seed: int = 0, **kw):
        super().__init__(space, config, seed, **kw)
        # members: {"id", "tokens", "score"}, oldest first
        self.population: deque[dict] = deque()
        self._initial_in_flight = 0
        self.removed = 0

    def _propose(self, n: int):
        cfg = self.config
        out = []
        for _ in range(n):
            if len(self.population) + self._initial_in_flight < cfg.population_size \
                    or not self.population:
                self._initial_in_flight += 1
                out.append((self.space.sample(self.rng), {"origin": "random"}))
                continue
            picks = self.rng.integers(len(self.population), size=cfg.sample_size)
            parent = max((self.population[int(i)] for i in picks), key=lambda m: m["score"])
            parent_arch = self.space.decode(parent["tokens"])
            if cfg.identity_prob > 0 and self.rng.random() < cfg.identity_prob:
                out.append((parent_arch, {"origin": "identity", "parent": parent["id"]}))
            else:
                out.append((self.space.mutate(parent_arch, self.rng),
                            {"origin": "mutation", "parent": parent["id"]}))
        return out

    def _observe(self, proposal: Proposal, result: Result) -> None:
        if proposal.meta.get("origin") == "random":
            self._initial_in_flight -= 1
        if result.status != Status.OK:
            return  # failed and pruned children never join the population
        self.population.append({"id": proposal.id, "tokens": list(proposal.tokens),
                                "score": self.score(result)})
        if len(self.population) > self.config.population_size:
            self.population.popleft()
            self.removed += 1

    def stats(self) -> dict[str, float]:
        """Population size and score spread, and the mean age (in proposals) of its members."""
        out = super().stats()
        if self.population:
            scores = [m["score"] for m in self.population]
            out.update(population=float(len(scores)), population_best=max(scores),
                       population_mean=sum(scores) / len(scores), population_worst=min(scores),
                       population_mean_age=self._next_id - sum(
                           m["id"] for m in self.population) / len(scores),
                       removed=float(self.removed))
        return out

    def _get_state(self) -> dict:
        return {"population": [dict(m) for m in self.population],
                "initial_in_flight": self._initial_in_flight, "removed": self.removed}

    def _set_state(self, state: Mapping) -> None:
        self.population = deque({"id": int(m["id"]), "tokens": [int(t) for t in m["tokens"]],
                                 "score": float(m["score"])} for m in state["population"])
        self._initial_in_flight = int(state["initial_in_flight"])
        self.removed = int(state["removed"])
