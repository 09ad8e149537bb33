"""Cells written as blocks: the NASNet block-choice form used by literal data and search spaces.

Block k applies ``ops[2k]`` and ``ops[2k+1]`` to states ``idx[2k]`` and ``idx[2k+1]`` and merges
the two results with ``combines[k]``. State 0 is h_i, 1 is h_{i-1}, 2 + k is block k. Node ids
are ``h0``, ``h1``, ``b{k}_a``/``b{k}_b`` (the block's two ops) and ``b{k}`` (its combine).
"""
from __future__ import annotations

from typing import Sequence

from nasforge.dsl.cell import NUM_INPUTS, Cell, CellError


def state_id(index: int) -> str:
    return f"h{index}" if index < NUM_INPUTS else f"b{index - NUM_INPUTS}"


def cell_from_blocks(name: str, ops: Sequence[str], idx: Sequence[int],
                     combines: Sequence[str] | None = None,
                     output: Sequence[int] | None = None, reduction: bool = False,
                     op_args: dict[str, dict] | None = None) -> Cell:
    """Build a cell from block decisions; ``output`` lists state indices (None: unused states).

    ``op_args`` maps an op name to extra arguments for every node of that op.
    """
    if len(ops) != len(idx) or len(ops) % 2:
        raise CellError(f"need two ops and two input indices per block, got {len(ops)} ops and "
                        f"{len(idx)} indices", None, name)
    num_blocks = len(ops) // 2
    combines = list(combines) if combines is not None else ["add"] * num_blocks
    if len(combines) != num_blocks:
        raise CellError(f"{num_blocks} blocks but {len(combines)} combines", None, name)
    op_args = op_args or {}
    cell = Cell(name, reduction=reduction)
    cell.inputs()
    for k in range(num_blocks):
        operands = []
        for j, side in enumerate("ab"):
            source = idx[2 * k + j]
            if not 0 <= source < NUM_INPUTS + k:
                raise CellError(f"input index {source} out of range (block {k} can use states "
                                f"0..{NUM_INPUTS + k - 1})", f"b{k}_{side}", name)
            op = ops[2 * k + j]
            operands.append(cell.op(op, state_id(source), node_id=f"b{k}_{side}",
                                    **op_args.get(op, {})))
        cell.combine(combines[k], *operands, node_id=f"b{k}")
    if output is None:
        cell.set_output()
    else:
        for s in output:
            if not 0 <= s < NUM_INPUTS + num_blocks:
                raise CellError(f"output state {s} out of range", "out", name)
        cell.set_output([state_id(s) for s in output])
    return cell


def unused_from_used(used: Sequence[int]) -> list[int]:
    """The TPU code's ``used_hiddenstates`` vector -> the output state indices."""
    return [i for i, u in enumerate(used) if not u]
