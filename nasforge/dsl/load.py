"""Reading an architecture file whose kind the caller does not know: a cell, a cell pair or a
cell chain, told apart by the format marker. It sits above cell.py and chain.py, which both
stay unaware of each other's formats."""
from __future__ import annotations

from nasforge.dsl.cell import CELL_FORMAT, Cell, CellPair, parse_json
from nasforge.dsl.chain import CHAIN_FORMAT, CellChain


def load_architecture(text: str):
    """Parse JSON text holding a cell, a cell pair or a cell chain (by its format marker)."""
    data = parse_json(text)
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt == CELL_FORMAT:
        return Cell.from_dict(data)
    if fmt == CHAIN_FORMAT:
        return CellChain.from_dict(data)
    return CellPair.from_dict(data)
