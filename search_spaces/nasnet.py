"""The NASNet search space: the block-choice procedure of Zoph et al. 2018
(docs/reference.md section 2).

Each of the B blocks of a cell makes five decisions: two hidden states from
{h_i, h_{i-1}, earlier blocks}, an op for each, and a combine. The controller emits 5B decisions
for the normal cell, then 5B for the reduction cell. Unused states form the cell output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nasforge.dsl import CellPair, cell_from_blocks
from nasforge.ops import NASNET_EXT_OPS, NASNET_OPS
from nasforge.registry import COMBINES, OPS
from nasforge.search_spaces.base import SearchSpace

NUM_INPUTS = 2
DECISIONS_PER_BLOCK = 5  # input a, input b, op a, op b, combine
# ENAS' micro search space (Pham et al. 2018, docs/reference.md section 9): 5 ops, add combine
ENAS_MICRO_OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")


@dataclass(frozen=True)
class Block:
    inputs: tuple[int, int]  # state indices: 0 = h_i, 1 = h_{i-1}, 2 + k = block k
    ops: tuple[str, str]
    combine: str = "add"


@dataclass(frozen=True)
class NasNetArch:
    normal: tuple[Block, ...]
    reduction: tuple[Block, ...]

    def cells(self) -> tuple[tuple[Block, ...], tuple[Block, ...]]:
        return self.normal, self.reduction


class NasNetSpace(SearchSpace):
    """B blocks per cell (default 5) over ``ops`` (default NASNet's 13) and ``combines``."""

    name = "nasnet"
    default_ops: tuple[str, ...] = NASNET_OPS

    def __init__(self, num_blocks: int = 5, ops: Sequence[str] | None = None,
                 combines: Sequence[str] = ("add", "concat")):
        ops = self.default_ops if ops is None else ops
        unknown = [o for o in ops if o not in OPS] + [c for c in combines if c not in COMBINES]
        if unknown:
            raise ValueError(f"unknown op/combine in search space: {', '.join(unknown)}")
        if num_blocks < 1 or not ops or not combines:
            raise ValueError("a search space needs at least one block, op and combine")
        not_binary = [c for c in combines
                      if not COMBINES[c].min_inputs <= 2 <= (COMBINES[c].max_inputs or 2)]
        if not_binary:
            raise ValueError(f"combine(s) {', '.join(not_binary)} cannot merge a block's two "
                             f"inputs")
        self.num_blocks, self.ops, self.combines = num_blocks, tuple(ops), tuple(combines)

    # ------------------------------------------------------------ decisions
    def decisions(self) -> list[int]:
        per_cell = []
        for k in range(self.num_blocks):
            per_cell += [NUM_INPUTS + k, NUM_INPUTS + k, len(self.ops), len(self.ops),
                         len(self.combines)]
        return per_cell * 2

    def encode(self, arch: NasNetArch) -> list[int]:
        tokens = []
        for cell in arch.cells():
            for b in cell:
                tokens += [b.inputs[0], b.inputs[1], self.ops.index(b.ops[0]),
                           self.ops.index(b.ops[1]), self.combines.index(b.combine)]
        return tokens

    def decode(self, tokens: Sequence[int]) -> NasNetArch:
        tokens = self.check_tokens(tokens)
        cells = []
        per_cell = DECISIONS_PER_BLOCK * self.num_blocks
        for c in range(2):
            blocks = []
            for k in range(self.num_blocks):
                a, b, oa, ob, comb = (int(t) for t in tokens[c * per_cell + 5 * k:
                                                              c * per_cell + 5 * k + 5])
                blocks.append(Block((a, b), (self.ops[oa], self.ops[ob]), self.combines[comb]))
            cells.append(tuple(blocks))
        return NasNetArch(*cells)

    # ------------------------------------------------------- sampling/mutation
    def sample(self, rng: np.random.Generator) -> NasNetArch:
        return self.decode([int(rng.integers(n)) for n in self.decisions()])

    def mutate(self, arch: NasNetArch, rng: np.random.Generator) -> NasNetArch:
        """One AmoebaNet mutation: in a random cell and block, a hidden-state mutation (one
        input re-drawn among the other valid states) or an op mutation (one op re-drawn among
        the other ops); a combine mutation joins them when the space has several combines."""
        tokens = self.encode(arch)
        sizes = self.decisions()
        cell, block = int(rng.integers(2)), int(rng.integers(self.num_blocks))
        kinds = ["hidden_state", "op"] + (["combine"] if len(self.combines) > 1 else [])
        kinds = [k for k in kinds if k != "op" or len(self.ops) > 1]
        kind = kinds[int(rng.integers(len(kinds)))]
        base = cell * DECISIONS_PER_BLOCK * self.num_blocks + DECISIONS_PER_BLOCK * block
        position = base + {"hidden_state": int(rng.integers(2)), "op": 2 + int(rng.integers(2)),
                           "combine": 4}[kind]
        # Draw among the other values so the child always differs from the parent.
        new = int(rng.integers(sizes[position] - 1))
        tokens[position] = new if new < tokens[position] else new + 1
        return self.decode(tokens)

    # ------------------------------------------------------------------ graph
    def to_graph(self, arch: NasNetArch, name: str = "nasnet_sample") -> CellPair:
        cells = []
        for kind, blocks in (("normal", arch.normal), ("reduction", arch.reduction)):
            ops = [o for b in blocks for o in b.ops]
            idx = [i for b in blocks for i in b.inputs]
            cells.append(cell_from_blocks(f"{name}/{kind}", ops, idx,
                                          [b.combine for b in blocks], output=None,
                                          reduction=kind == "reduction"))
        return CellPair(*cells, name=name)


class NasNetExtSpace(NasNetSpace):
    """NASNet's block choice over NASNet's 13 ops plus the building blocks of the CNN-design
    literature (``nasforge.ops.NASNET_EXT_OPS``: DARTS' dilated separable convs, SE,
    CBAM and BAM gates, deformable 3x3 v1/v2, selective kernel, grouped conv + channel shuffle).
    Same decisions, encoding and mutations as ``nasnet``; only the op vocabulary is larger."""

    name = "nasnet-ext"
    default_ops = NASNET_EXT_OPS


class EnasMicroSpace(NasNetSpace):
    """ENAS' micro search space (Pham et al. 2018, docs/reference.md section 9): NASNet's
    block choice with B = 5 over 5 ops (sep 3x3, sep 5x5, avg 3x3, max 3x3, identity) and the
    ``add`` combine only. The weight-sharing searches' own space: 5 ops instead of 13 make
    each shared weight trained about 2.6x as often per step."""

    name = "enas-micro"
    default_ops = ENAS_MICRO_OPS

    def __init__(self, num_blocks: int = 5, ops: Sequence[str] | None = None,
                 combines: Sequence[str] = ("add",)):
        super().__init__(num_blocks, ops, combines)
