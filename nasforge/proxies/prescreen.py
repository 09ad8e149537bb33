"""Proxy scores for a prescreened search: ``--prescreen PROXY:K``, a score cache, a scorer.

* ``parse_prescreen("synflow:10")`` -> ``("synflow", 10)``;
* ``ScoreCache(path)``: proxy scores of cells, kept in memory and appended to a JSON-lines file
  (one ``{"proxy", "context", "key", "score"}`` object a line; read back with ``json`` only,
  nothing in it can run; a truncated last line is skipped). ``context`` says what else the
  score depends on (data set, batch, seed), so one file can serve several settings; ``key``
  is the cell's NAS-Bench-201 string or the architecture's canonical hash;
* ``ProxyScorer``: the ``scorer`` of ``nasforge.controllers.prescreen.Prescreen``: for each
  proposal, the cached score or, once per cell, the proxy computed on the network built for it
  (weights drawn from ``seed``) and the batch; ``computed``/``hits`` count the two.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from nasforge.api import compile_architecture, resolve
from nasforge.proxies import ProxyError, check_names, score
from nasforge.search_spaces.nas_bench_201 import Nb201Cell, format_cell

log = logging.getLogger(__name__)

PROXY_SCORES = "proxy_scores.jsonl"  # a prescreened search's score cache, in its run folder


def parse_prescreen(text: str) -> tuple[str, int]:
    """``PROXY:K`` -> (proxy, k); ProxyError (one line) for anything else."""
    proxy, sep, k = str(text).partition(":")
    if not sep or not k.strip().isdigit() or int(k) < 1:
        raise ProxyError(f"prescreen {text!r} is not PROXY:K (e.g. synflow:10, K >= 1 "
                         f"candidates per proposal)", options=("prescreen",))
    try:
        check_names([proxy.strip()])
    except ProxyError as e:
        raise ProxyError(str(e), options=("prescreen",)) from None
    return proxy.strip(), int(k)


class ScoreCache:
    """Proxy scores by (proxy, context, key); ``path`` None keeps them in memory only."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.scores: dict[tuple[str, str, str], float] = {}
        if self.path is not None and self.path.is_file():
            for n, line in enumerate(self.path.read_text().splitlines(), start=1):
                try:
                    rec = json.loads(line)
                    value = rec["score"]
                    value = -math.inf if value is None else float(value)
                    self.scores[(str(rec["proxy"]), str(rec["context"]), str(rec["key"]))] = \
                        value
                except (ValueError, KeyError, TypeError):
                    log.warning("%s, line %d: not a score record, skipped", self.path, n)

    def __len__(self) -> int:
        return len(self.scores)

    def get(self, proxy: str, context: str, key: str) -> float | None:
        return self.scores.get((proxy, context, key))

    def put(self, proxy: str, context: str, key: str, value: float) -> None:
        self.scores[(proxy, context, key)] = float(value)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"proxy": proxy, "context": context, "key": key,
                                    "score": value if math.isfinite(value) else None}) + "\n")


class ProxyScorer:
    """Scores proposals by ``proxy`` on ``batch``: ``build(arch)`` gives the network,
    ``key(proposal)`` the cache key; ``context`` names the rest (data set, batch, seed)."""

    def __init__(self, proxy: str, batch, build: Callable, key: Callable, context: str,
                 cache: ScoreCache | None = None, seed: int = 0):
        self.proxy = check_names([proxy])[0]
        self.batch, self.build, self.key, self.seed = batch, build, key, int(seed)
        self.context = f"{context}|seed={self.seed}|batch={len(batch[0])}"
        self.cache = cache if cache is not None else ScoreCache()
        self.computed = self.hits = 0

    def __call__(self, proposals: Sequence) -> list[float]:
        out = []
        for p in proposals:
            key = self.key(p)
            value = self.cache.get(self.proxy, self.context, key)
            if value is None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed)
                    model = self.build(p.arch)
                value = score(self.proxy, model, self.batch, self.seed)
                self.cache.put(self.proxy, self.context, key, value)
                self.computed += 1
            else:
                self.hits += 1
            out.append(value)
        return out


def nb201_scorer(proxy: str, batch, dataset: str = "cifar10", cache: ScoreCache | None = None,
                 seed: int = 0) -> ProxyScorer:
    """A scorer of NAS-Bench-201 proposals (``Nb201Cell`` archs), keyed by the cell string."""
    def build(cell: Nb201Cell):
        return compile_architecture(*resolve(cell, dataset=dataset))

    return ProxyScorer(proxy, batch, build, lambda p: format_cell(p.arch),
                       f"nas-bench-201/{dataset}", cache, seed)


def space_scorer(proxy: str, batch, space, setting, cache: ScoreCache | None = None,
                 seed: int = 0) -> ProxyScorer:
    """A scorer of any space's proposals, the network built as the search builds its
    children (``setting``: ``nasforge.search.objectives.ModelSetting``), keyed by the
    proposal's canonical hash."""
    if isinstance(getattr(space, "name", None), str) and space.name == "nas-bench-201":
        return nb201_scorer(proxy, batch, space.dataset, cache, seed)
    return ProxyScorer(proxy, batch, lambda arch: setting.build(space.to_graph(arch)),
                       lambda p: p.hash, f"{space.name}/{setting.setting}", cache, seed)


__all__ = ["PROXY_SCORES", "ProxyScorer", "ScoreCache", "nb201_scorer", "parse_prescreen", "space_scorer"]
