"""The cell DSL (see ``nasforge.dsl.cell``)."""
from nasforge.dsl.blocks import cell_from_blocks, state_id, unused_from_used
from nasforge.dsl.chain import CHAIN_FORMAT, CellChain
from nasforge.dsl.cell import (CELL_FORMAT, PAIR_FORMAT, Cell, CellError, CellPair,
                               module_key, render)
from nasforge.dsl.load import load_architecture

__all__ = ["Cell", "CellPair", "CellChain", "CellError", "CELL_FORMAT", "PAIR_FORMAT",
           "CHAIN_FORMAT", "cell_from_blocks", "state_id", "unused_from_used",
           "load_architecture", "module_key", "render"]
