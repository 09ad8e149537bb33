"""Architecture encodings for the predictors: one fixed-length float vector per architecture.

Registered per search-space class (``register_encoding(space_cls, name, fn)``); ``encode``
looks an encoding up along the space's class hierarchy (a ``NasNetExtSpace`` gets
``NasNetSpace``'s encodings, the benchmarks' ``MemoHashSpace`` gets NAS-Bench-201's), so any
space reaches the generic ones registered on ``SearchSpace``.

* ``onehot`` (every space, ``SearchSpace``): the one-hot of each decision of
  ``space.encode(arch)``, concatenated in decision order (``sum(space.decisions())`` columns).
  On NAS-Bench-201 that is exactly the one-hot of the op on each of the 6 edges (30 columns,
  edges in ``EDGES`` order, ops in ``NB201_OPS`` order). A space that arrives later (DARTS)
  gets it without registering anything.
* ``path`` on NAS-Bench-201 (White et al., AAAI 2021, as NASLib and naszilla/bananas define it
  for this space): the cell's 4 input-to-output paths, 0->3, 0->1->3, 0->2->3, 0->1->2->3,
  each written as its sequence of ops and one-hot over all op sequences of length 1, 2 and 3
  (5 + 25 + 125 = 155 columns, exactly 4 ones). As in BANANAS, paths through ``none`` edges
  are kept. The op order differs from NASLib's (ours is ``NB201_OPS``): a permutation of the
  columns, nothing else.
* ``path`` on NASNet-style spaces (``NasNetSpace`` and its subclasses): BANANAS' DARTS path
  encoding adapted to NASNet's blocks and truncated to stay small: for each cell (normal,
  reduction) and each cell input (h_i, h_{i-1}), every path from that input through the
  blocks is its sequence of ops; paths of up to ``NASNET_PATH_MAX_OPS`` ops are one-hot by
  sequence, longer ones set one "long path" column per (cell, input) (BANANAS'
  ``long_paths=False``). Combines are not encoded (DARTS' cells only sum). Columns:
  ``4 * (sum(n_ops ** k for k in 1..L) + 1)``: 732 for NASNet's 13 ops.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from nasforge.predictors.base import PredictorError
from nasforge.rules import add_unique
from nasforge.search_spaces.base import SearchSpace
from nasforge.search_spaces.nas_bench_201 import EDGES, NB201_OPS, NasBench201Space
from nasforge.search_spaces.nasnet import NUM_INPUTS, NasNetSpace

Encoder = Callable[[Any, Any], np.ndarray]  # (space, arch) -> 1-D float vector
ENCODINGS: dict[type, dict[str, Encoder]] = {}

NB201_PATH_LENGTH = 3  # the longest input-to-output path of the cell (edges)
# the cell's input-to-output paths as edge indices into EDGES: 0->3, 0->1->3, 0->2->3, 0->1->2->3
NB201_PATHS: tuple[tuple[int, ...], ...] = tuple(
    tuple(EDGES.index(e) for e in path) for path in (
        ((3, 0),), ((1, 0), (3, 1)), ((2, 0), (3, 2)), ((1, 0), (2, 1), (3, 2))))
NASNET_PATH_MAX_OPS = 2  # NASNet path encoding: paths of more ops share one column


def register_encoding(space_cls: type, name: str, fn: Encoder) -> Encoder:
    """Make ``encode(space, archs, name)`` use ``fn`` for spaces of ``space_cls`` (and its
    subclasses, unless they register their own); ValueError if taken for that class."""
    return add_unique(ENCODINGS.setdefault(space_cls, {}), name, fn,
                      f"encoding for {space_cls.__name__}")


def available(space) -> list[str]:
    """Names of the encodings ``space`` can use."""
    names: list[str] = []
    for cls in type(space).__mro__:
        names += [n for n in ENCODINGS.get(cls, {}) if n not in names]
    return names


def encoder(space, name: str) -> Encoder:
    """The encoding ``name`` for ``space`` (the most specific class that registers it);
    PredictorError naming the known ones when none does."""
    for cls in type(space).__mro__:
        fn = ENCODINGS.get(cls, {}).get(name)
        if fn is not None:
            return fn
    raise PredictorError(f"no encoding {name!r} for search space "
                         f"{getattr(space, 'name', type(space).__name__)!r} (known: "
                         f"{', '.join(available(space))})", options=("encoding",))


def encode(space, archs: Sequence, name: str = "onehot") -> np.ndarray:
    """The encodings of ``archs`` as one float matrix, one row per architecture."""
    fn = encoder(space, name)
    rows = [fn(space, arch) for arch in archs]
    if not rows:
        return np.zeros((0, len(fn(space, space.sample(np.random.default_rng(0))))))
    return np.stack(rows).astype(np.float64)


# ----------------------------------------------------------------------------- generic
def onehot(space, arch) -> np.ndarray:
    """One-hot of every decision of ``space.encode(arch)``, concatenated."""
    sizes = [int(v) for v in space.decisions()]
    out = np.zeros(sum(sizes))
    offset = 0
    for token, size in zip(space.encode(arch), sizes):
        out[offset + int(token)] = 1.0
        offset += size
    return out


def onehot_tokens(tokens: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """``onehot`` of many token rows at once (shape (n, len(sizes))): what the searchers use
    on decision sequences they already hold."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(len(tokens), len(sizes))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    out = np.zeros((len(tokens), int(sum(sizes))))
    rows = np.repeat(np.arange(len(tokens)), len(sizes))
    out[rows, (tokens + offsets).reshape(-1)] = 1.0
    return out


# ----------------------------------------------------------------------- NAS-Bench-201
def nb201_path_index(ops: Sequence[int]) -> int:
    """Column of the path whose ops (indices into ``NB201_OPS``) are ``ops``: paths of one op
    first, then of two, then of three, each block in base-5 order (first op least
    significant, as BANANAS)."""
    n = len(NB201_OPS)
    index = sum(n ** k for k in range(1, len(ops)))
    return index + sum(int(op) * n ** k for k, op in enumerate(ops))


def nb201_path(space, arch) -> np.ndarray:
    tokens = space.encode(arch)
    out = np.zeros(sum(len(NB201_OPS) ** k for k in range(1, NB201_PATH_LENGTH + 1)))
    for path in NB201_PATHS:
        out[nb201_path_index([tokens[e] for e in path])] = 1.0
    return out


# ----------------------------------------------------------------------------- NASNet
def _nasnet_paths(blocks, n_ops_index) -> list[tuple[int, tuple[int, ...]]]:
    """(cell input 0/1, op indices) of every path from a cell input through the blocks."""
    ending: list[list[tuple[int, tuple[int, ...]]]] = []  # paths ending at block k's output
    paths = []
    for block in blocks:
        here = []
        for source, op in zip(block.inputs, block.ops):
            op_index = n_ops_index[op]
            if source < NUM_INPUTS:
                here.append((source, (op_index,)))
            else:
                here += [(start, seq + (op_index,)) for start, seq in ending[source - NUM_INPUTS]]
        ending.append(here)
        paths += here
    return paths


def nasnet_path(space, arch) -> np.ndarray:
    n = len(space.ops)
    per_input = sum(n ** k for k in range(1, NASNET_PATH_MAX_OPS + 1)) + 1
    out = np.zeros(2 * NUM_INPUTS * per_input)
    index = {op: k for k, op in enumerate(space.ops)}
    for c, blocks in enumerate(arch.cells()):
        for start, seq in _nasnet_paths(blocks, index):
            base = (c * NUM_INPUTS + start) * per_input
            if len(seq) > NASNET_PATH_MAX_OPS:
                out[base + per_input - 1] = 1.0
            else:
                column = sum(n ** k for k in range(1, len(seq))) + \
                    sum(op * n ** k for k, op in enumerate(seq))
                out[base + column] = 1.0
    return out


register_encoding(SearchSpace, "onehot", onehot)
register_encoding(NasBench201Space, "path", nb201_path)
register_encoding(NasNetSpace, "path", nasnet_path)
