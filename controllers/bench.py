"""The planted-cell benchmark: searchers compared without training anything.

A hidden target architecture is drawn from the space (per seed). The "validation accuracy" of a
proposal is ``floor + gain * f**2 + noise`` where ``f`` is the fraction of its decisions equal
to the target's: smooth, maximal (``floor + gain``) only at the target. Decisions are compared
after putting each NASNet block in a canonical order (its two (input, op) pairs sorted), so
the common isomorphism (swapping a block's two inputs) scores the same. The noise is Gaussian with
standard deviation ``noise``, seeded by the benchmark seed and the proposal's canonical hash: an
architecture always gets the same score, like a tabular NAS benchmark, so answers from the
duplicate cache are exactly what a re-evaluation would give.

``run_search`` simulates ``workers`` asynchronous workers on a simulated clock: each evaluation
takes a random time (uniform 0.5-1.5 units), results are told in order of completion (not of
asking), and a free worker asks for one new proposal, until ``budget`` evaluations have been
handed out. Only the searcher's ``ask``/``tell`` calls are timed (wall clock), so the overhead
figure is the searcher's own cost, duplicate cache and RL updates included.
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np

from nasforge.controllers.base import Proposal, Result, Searcher
from nasforge.trials import Status
from nasforge.search_spaces.nasnet import DECISIONS_PER_BLOCK, NasNetSpace


class PlantedTask:
    """Score function with a hidden target; ``evaluate(proposal) -> Result``."""

    def __init__(self, space, seed: int, noise: float = 0.002, floor: float = 0.5,
                 gain: float = 0.45, fail_rate: float = 0.0):
        self.space, self.seed = space, int(seed)
        self.noise, self.floor, self.gain, self.fail_rate = noise, floor, gain, fail_rate
        target = space.sample(np.random.default_rng([self.seed, 0x7A96E7]))
        self.target = np.array(self.canonical(space.encode(target)))

    def canonical(self, tokens) -> list[int]:
        """Tokens with each NASNet block's (input, op) pairs sorted; other spaces unchanged."""
        tokens = [int(t) for t in tokens]
        if not isinstance(self.space, NasNetSpace):
            return tokens
        for s in range(0, len(tokens), DECISIONS_PER_BLOCK):
            a, b, oa, ob, comb = tokens[s:s + DECISIONS_PER_BLOCK]
            (a, oa), (b, ob) = sorted([(a, oa), (b, ob)])
            tokens[s:s + DECISIONS_PER_BLOCK] = [a, b, oa, ob, comb]
        return tokens

    def fraction(self, tokens) -> float:
        return float(np.mean(np.array(self.canonical(tokens)) == self.target))

    def value(self, proposal: Proposal) -> float:
        rng = np.random.default_rng([self.seed, int(proposal.hash[:15], 16)])
        return self.floor + self.gain * self.fraction(proposal.tokens) ** 2 + \
            float(rng.normal(0.0, self.noise))

    def evaluate(self, proposal: Proposal, rng: np.random.Generator | None = None) -> Result:
        if self.fail_rate and rng is not None and rng.random() < self.fail_rate:
            return Result.failed("simulated failure")
        return Result.ok(val_acc=self.value(proposal))


@dataclass
class RunRecord:
    best: float                      # best val_acc told (ok results)
    trace: list[float]               # best so far after each finished evaluation
    ask_tell_s: list[float]          # cumulative searcher time after each finished evaluation
    cache_hits: int = 0
    wall_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ms_per_proposal(self) -> float:
        return 1000 * self.ask_tell_s[-1] / len(self.ask_tell_s)

    def ms_last(self, k: int = 100) -> float:
        """Mean ask+tell time of the last ``k`` evaluations (the cost at the end of the run)."""
        k = min(k, len(self.ask_tell_s))
        start = self.ask_tell_s[-k - 1] if len(self.ask_tell_s) > k else 0.0
        return 1000 * (self.ask_tell_s[-1] - start) / k


def run_search(searcher: Searcher, task: PlantedTask, budget: int, workers: int = 8,
               seed: int = 0) -> RunRecord:
    """Run ``searcher`` for ``budget`` evaluations with ``workers`` simulated async workers."""
    sim = np.random.default_rng([int(seed), 0x5EED])
    heap: list[tuple[float, int, Proposal]] = []
    searcher_s, launched, order = 0.0, 0, 0
    best, trace, times = -math.inf, [], []
    t_wall = time.perf_counter()

    def launch(now: float, k: int):
        nonlocal searcher_s, launched, order
        t0 = time.perf_counter()
        proposals = searcher.ask(k)
        searcher_s += time.perf_counter() - t0
        for p in proposals:
            heapq.heappush(heap, (now + float(sim.uniform(0.5, 1.5)), order, p))
            order += 1
        launched += len(proposals)

    launch(0.0, min(workers, budget))
    while heap:
        now, _, p = heapq.heappop(heap)
        result = task.evaluate(p, sim)
        t0 = time.perf_counter()
        searcher.tell(p, result)
        searcher_s += time.perf_counter() - t0
        if result.status == Status.OK:
            best = max(best, result.metrics["val_acc"])
        trace.append(best)
        times.append(searcher_s)
        if launched < budget:
            launch(now, 1)
    return RunRecord(best, trace, times, int(getattr(searcher, "hits", 0)),
                     time.perf_counter() - t_wall)


def evals_to_reach(trace: list[float], threshold: float) -> int | None:
    """1-based number of evaluations after which the best reaches ``threshold``, else None."""
    for i, b in enumerate(trace):
        if b >= threshold:
            return i + 1
    return None


def median_or_none(values: list[int | None]) -> float | None:
    """Median where None counts as "never" (infinite); None when the median is never."""
    m = float(np.median([math.inf if v is None else v for v in values]))
    return None if math.isinf(m) else m


def summarize(records: dict[str, list[RunRecord]], reference: str = "random") -> dict:
    """The per-searcher JSON figures; ``reference`` sets ``evals_to_random_best``."""
    ref_best = float(np.median([r.best for r in records[reference]]))
    out = {}
    for name, runs in records.items():
        reach = [evals_to_reach(r.trace, ref_best) for r in runs]
        last100 = [r.ms_last(100) for r in runs]
        hits = [r.cache_hits for r in runs]
        out[name] = {
            "median_best": float(np.median([r.best for r in runs])),
            "best_per_seed": [round(r.best, 6) for r in runs],
            "evals_to_random_best": median_or_none(reach),
            "evals_to_random_best_per_seed": reach,
            "random_median_best": ref_best,
            "ms_per_proposal": float(np.median([r.ms_per_proposal for r in runs])),
            "ms_per_proposal_max": float(max(r.ms_per_proposal for r in runs)),
            "ms_per_proposal_last100": float(np.median(last100)),
            "ms_per_proposal_last100_max": float(max(last100)),
            "ms_per_proposal_last100_per_seed": [round(v, 2) for v in last100],
            "cache_hits_median": float(np.median(hits)),
            "cache_hits_per_seed": hits,
            "wall_s": round(sum(r.wall_s for r in runs), 2),
        }
    return out
