"""BANANAS: Bayesian optimisation with a neural-network ensemble (White et al., AAAI 2021).

As naszilla/bananas runs it (``nas_algorithms.bananas`` with its defaults): the first
``initial`` (10) proposals are random; then, whenever the queue of chosen proposals is empty,
the searcher

1. fits BANANAS' predictor (``nasforge.predictors.MLPEnsemble``: 5 MLPs of 10 x 20 units,
   mean absolute error, 150 epochs) on the path encoding of every ``ok`` result so far
   (``encoding="auto"``: ``path`` where the space defines it, NAS-Bench-201 and NASNet,
   else the generic one-hot, e.g. a space added later such as DARTS);
2. makes ``candidates`` (100) mutations of the best cells: the best cell first, then the
   next best while fewer than ``candidates`` new ones were found (at most ``parents`` x
   ``patience`` = 5 cells, BANANAS' ``num_arches_to_mutate`` and ``patience_factor``), each
   mutation repeated ``candidates // parents`` times and kept when its decision sequence was
   never told, asked or queued. A mutation changes each of the D decisions with probability
   ``mutation_rate / (D - 2)`` (BANANAS' rule, 0.25 per edge on NAS-Bench-201), drawn as a
   number of ``space.mutate`` steps (Binomial(D, p)); zero steps give the parent itself,
   which is dropped as a duplicate, as in BANANAS;
3. scores each candidate by independent Thompson sampling (ITS): one draw from
   N(mean, std) of the ensemble's predictions per candidate, independently; the ``batch``
   (10, BANANAS' ``k``) highest draws are queued and handed out by the next asks.

Asynchronous: ``ask`` never waits. A fit uses the results told so far; random proposals are
handed out while fewer than ``initial`` results are ok (counting random proposals in flight).
Failed, pruned and infeasible results are not learned from (BANANAS has none). The
objective is learned signed (higher is better), so ``direction="minimize"`` works too.

State: the RNG (the ensemble's initialisation and minibatch order are drawn from it at each
fit), the ok results (tokens, score), the queue and the count of random proposals in
flight; the fitted networks are not stored: a restored searcher refits from the same
results with the same RNG state and proposes exactly the same. JSON-serializable.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from nasforge.controllers.base import Proposal, Result, SearcherBase
from nasforge.predictors import MLPEnsemble, MLPEnsembleConfig, available, encode
from nasforge.trials import Status

log = logging.getLogger(__name__)

AUTO_ENCODINGS = ("path", "onehot")  # encoding="auto": the first the space defines


@dataclass(frozen=True)
class BananasConfig:
    initial: int = 10            # random proposals before the first fit (num_init)
    batch: int = 10              # proposals chosen per fit (k)
    candidates: int = 100        # mutated candidates scored per fit
    parents: int = 1             # best cells mutated (num_arches_to_mutate)
    patience: int = 5            # at most parents * patience best cells tried
    mutation_rate: float = 1.0   # expected changed decisions ~ rate * D / (D - 2)
    encoding: str = "auto"       # predictor input: auto, path or onehot
    members: int = 5             # networks in the ensemble
    epochs: int = 150            # training epochs of each network per fit

    def __post_init__(self):
        if min(self.initial, self.batch, self.candidates, self.parents, self.patience,
               self.members, self.epochs) < 1:
            raise ValueError("initial, batch, candidates, parents, patience, members and "
                             "epochs must be >= 1")
        if self.mutation_rate <= 0:
            raise ValueError("mutation_rate must be > 0")
        if self.encoding not in ("auto",) + AUTO_ENCODINGS:
            raise ValueError(f"encoding must be auto, {' or '.join(AUTO_ENCODINGS)}, got "
                             f"{self.encoding!r}")


class Bananas(SearcherBase):
    """BANANAS with independent Thompson sampling over mutations of the best cells (see the
    module docstring)."""

    name = "bananas"
    Config = BananasConfig

    def __init__(self, space, config: BananasConfig | None = None, seed: int = 0, **kw):
        super().__init__(space, config, seed, **kw)
        cfg = self.config
        known = available(space)
        if cfg.encoding == "auto":
            self.encoding = next(e for e in AUTO_ENCODINGS if e in known)
        elif cfg.encoding in known:
            self.encoding = cfg.encoding
        else:
            raise ValueError(f"search space {space.name!r} has no {cfg.encoding!r} encoding "
                             f"(it has: {', '.join(known)})")
        self.history: list[dict] = []     # ok results: {"id", "tokens", "score"}
        self.queue: list[list[int]] = []  # chosen by the last fit, not asked yet
        self._random_in_flight = 0
        self.fits = 0
        self._encoded: dict[tuple[int, ...], np.ndarray] = {}  # derived: not in the state

    # ----------------------------------------------------------------- proposals
    def _propose(self, n: int):
        out = []
        for _ in range(n):
            if len(self.history) + self._random_in_flight < self.config.initial or \
                    len(self.history) < 2:
                self._random_in_flight += 1
                out.append((self.space.sample(self.rng), {"origin": "random"}))
                continue
            if not self.queue:
                self._refill(extra=[p.tokens for p in self._pending.values()] +
                             [self.space.encode(a) for a, _ in out])
            if not self.queue:  # every candidate was a duplicate: explore at random
                out.append((self.space.sample(self.rng), {"origin": "random_fallback"}))
                continue
            tokens = self.queue.pop(0)
            out.append((self.space.decode(tokens), {"origin": "predicted", "fit": self.fits}))
        return out

    def _refill(self, extra) -> None:
        cfg = self.config
        seen = {tuple(m["tokens"]) for m in self.history}
        seen |= {tuple(int(t) for t in e) for e in extra}
        candidates = self._candidates(seen)
        if not candidates:
            return
        model = MLPEnsemble(MLPEnsembleConfig(members=cfg.members, epochs=cfg.epochs),
                            rng=self.rng)
        model.fit(self._encode([m["tokens"] for m in self.history]),
                  np.array([m["score"] for m in self.history]))
        self.fits += 1
        prediction = model.predict(self._encode(candidates))
        draws = self.rng.normal(prediction.mean, prediction.std)  # independent Thompson
        order = np.argsort(-draws, kind="stable")[:cfg.batch]
        self.queue = [list(candidates[int(i)]) for i in order]
        log.debug("bananas fit %d on %d results: %d candidates, best draw %.4f", self.fits,
                  len(self.history), len(candidates), float(draws[order[0]]))

    def _candidates(self, seen: set) -> list[tuple[int, ...]]:
        cfg = self.config
        decisions = len(self.space.decisions())
        p = min(1.0, cfg.mutation_rate / max(1, decisions - 2))
        best = sorted(self.history, key=lambda m: (-m["score"], m["id"]))
        out: list[tuple[int, ...]] = []
        for parent in best[:cfg.parents * cfg.patience]:
            if len(out) >= cfg.candidates:
                break
            for _ in range(cfg.candidates // cfg.parents):
                arch = self.space.decode(parent["tokens"])
                for _ in range(int(self.rng.binomial(decisions, p))):
                    arch = self.space.mutate(arch, self.rng)
                tokens = tuple(int(t) for t in self.space.encode(arch))
                if tokens not in seen:
                    seen.add(tokens)
                    out.append(tokens)
        return out

    def _encode(self, token_rows) -> np.ndarray:
        rows = []
        for tokens in token_rows:
            key = tuple(int(t) for t in tokens)
            row = self._encoded.get(key)
            if row is None:
                row = self._encoded[key] = encode(self.space, [self.space.decode(key)],
                                                  self.encoding)[0]
            rows.append(row)
        return np.stack(rows)

    # ------------------------------------------------------------------ learning
    def _observe(self, proposal: Proposal, result: Result) -> None:
        if proposal.meta.get("origin") == "random":
            self._random_in_flight -= 1
        if result.status == Status.OK:
            self.history.append({"id": proposal.id, "tokens": list(proposal.tokens),
                                 "score": self.score(result)})

    def stats(self) -> dict[str, float]:
        out = super().stats()
        out.update(fits=float(self.fits), observed=float(len(self.history)),
                   queued=float(len(self.queue)))
        return out

    # --------------------------------------------------------------------- state
    def _get_state(self) -> dict:
        return {"history": [dict(m) for m in self.history],
                "queue": [list(q) for q in self.queue],
                "random_in_flight": self._random_in_flight, "fits": self.fits}

    def _set_state(self, state: Mapping) -> None:
        self.history = [{"id": int(m["id"]), "tokens": [int(t) for t in m["tokens"]],
                         "score": float(m["score"])} for m in state["history"]]
        self.queue = [[int(t) for t in q] for q in state["queue"]]
        self._random_in_flight = int(state["random_in_flight"])
        self.fits = int(state["fits"])
