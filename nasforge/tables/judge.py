"""Judging a search's architectures by a published table: what the table says of a cell.

``table_judge(space)`` is the judge of a space that has a table (None otherwise), a callable
``judge(arch) -> dict`` of numbers that a search records next to its own figures:

* ``table_val_acc``, ``table_test_acc``: NAS-Bench-201's 12-epoch validation and test accuracy
  (%) of the cell on the space's data set (``load_table``);
* ``table_val_acc_200ep``: its 200-epoch validation accuracy (%), when the shipped sample holds
  the cell (``load_sample``);
* ``table_percentile``: the share (%) of the table's cells whose 12-epoch test accuracy is lower
  than this cell's (99: in the top 1 %).
"""
from __future__ import annotations

import bisect
import functools
from typing import Callable

from nasforge.search_spaces.nas_bench_201 import NasBench201Space, Nb201Cell
from nasforge.tables.nas_bench_201 import hp12_columns, load_sample, load_table

JUDGE_METRICS = ("table_val_acc", "table_test_acc", "table_val_acc_200ep", "table_percentile")


class Nb201Judge:
    """NAS-Bench-201's figures of a cell of ``dataset`` (see the module docstring)."""

    def __init__(self, dataset: str):
        self.table, self.sample = load_table(), load_sample(dataset)
        self.val_column, self.test_column = hp12_columns(dataset)
        self.tests = sorted(self.table.column(self.test_column))

    def percentile(self, test_acc: float) -> float:
        """% of the table's cells with a lower 12-epoch test accuracy."""
        return 100.0 * bisect.bisect_left(self.tests, test_acc) / len(self.tests)

    def __call__(self, arch: Nb201Cell) -> dict[str, float]:
        row = self.table.lookup(arch)
        out = {"table_val_acc": row[self.val_column], "table_test_acc": row[self.test_column],
               "table_percentile": self.percentile(row[self.test_column])}
        if arch in self.sample:
            out["table_val_acc_200ep"] = self.sample.lookup(arch)["val_acc_200ep"]
        return out


@functools.lru_cache(maxsize=8)
def _nb201_judge(dataset: str) -> Nb201Judge:
    return Nb201Judge(dataset)


# space type -> judge of a space of that type
JUDGES: dict[type, Callable] = {NasBench201Space: lambda space: _nb201_judge(space.dataset)}


def table_judge(space) -> Callable[[object], dict[str, float]] | None:
    """The table judge of ``space`` (``JUDGES``), None when no table covers it."""
    for cls in type(space).__mro__:
        if cls in JUDGES:
            return JUDGES[cls](space)
    return None
