"""Trial backends: how a trial of ``nasforge search`` gets its figures.

A search config names its backend (``SearchConfig.backend``, saved in ``config.json`` so
``--resume`` uses the same one); ``make_backend`` resolves it through ``BACKENDS``:

* ``train`` (the default): each trial trains its child with nasforge's trainer
  (``trial.run_trial``);
* ``nas-bench-201``: each trial looks its cell up in NAS-Bench-201's 12-epoch table
  (``nasforge.tables``; the shipped one or a user's file with the same columns) and reports
  the table's figures once (``trial.run_table_trial``): ``val_acc`` is the cell's 12-epoch
  validation accuracy as a fraction, ``test_acc`` its 12-epoch test accuracy, which the searcher
  never sees (``objectives.HELD_OUT_METRICS``). Nothing is trained and no data is loaded.
  Static metrics (``params``, ``mult_adds``) are measured on the cell's network for the
  table's data set (``objectives.ModelSetting``), as in the train backend.

A table trial reports once, at epoch ``HP12_EPOCHS``, which is also the ASHA scheduler's
``max_t``: ASHA sees each result at its last rung and stops nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nasforge.search.config import SearchConfig, SearchError
from nasforge.search.trial import run_table_trial, run_trial
from nasforge.search_spaces import NasBench201Space
from nasforge.search_spaces.nas_bench_201 import EDGES, NB201_OPS, format_cell
from nasforge.tables import TableError, load_table

HP12_EPOCHS = 12  # epochs of NAS-Bench-201's schedule behind the table's figures


@dataclass(frozen=True)
class Backend:
    """A resolved trial backend: the Ray Tune trainable of each trial and what it needs."""

    name: str
    trainable: Callable  # a Ray Tune function trainable: (config, data, settings)
    needs_data: bool  # the search loads its data set (training backends)
    epochs: int | None = None  # epochs behind every trial's figures; None: the recipe's
    table: object = None  # nasforge.tables.Table of a table backend
    dataset: str | None = None  # the table's data set (a key of nas_bench_201.DATASETS)

    table_path: str | None = None  # the table's file (None: the shipped one)

    def arch_recorder(self, space) -> "ArchRecorder":
        """What a trial record of this backend stores of an architecture (``ArchRecorder``)."""
        return ArchRecorder(space, self.table, self.table_path)

    def describe(self) -> dict:
        """What ``config.json`` records of the backend in place of a data set."""
        return {"backend": self.name, "table": getattr(self.table, "source", None),
                "dataset": self.dataset, "epochs": self.epochs}


class ArchRecorder:
    """``recorder(arch)``: what a trial record stores of ``arch``, the space's form
    (``SearchSpace.record``) and, where a table is loaded and holds the cell, the table's
    ``arch_index``. Pickles without the table (Ray pickles the search algorithm, which holds
    this, with its experiment): a copy reads the table again from its path when first used."""

    def __init__(self, space, table=None, table_path: str | None = None):
        self.space, self.table, self.table_path = space, table, table_path
        self.has_table = table is not None

    def __call__(self, arch) -> dict:
        out = self.space.record(arch)
        if self.has_table and self.table is None:
            self.table = load_table(self.table_path)
        if self.has_table and "arch_index" in self.table.columns and arch in self.table:
            out["arch_index"] = int(self.table.lookup(arch)["arch_index"])
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, "table": None}


def _train(config: SearchConfig, space) -> Backend:
    return Backend("train", run_trial, needs_data=True)


def _nas_bench_201(config: SearchConfig, space) -> Backend:
    if not isinstance(space, NasBench201Space):
        raise SearchError(f"the nas-bench-201 backend looks cells up in NAS-Bench-201's table: "
                          f"it needs the space nas-bench-201, not {config.space!r}",
                          options=("space",))
    try:
        table = load_table(config.table)
    except TableError as e:
        raise SearchError(str(e), options=("table",)) from None
    cells = len(NB201_OPS) ** len(EDGES)
    if len(table) < cells:
        missing = next(format_cell(space.decode(_tokens(k))) for k in range(cells)
                       if space.decode(_tokens(k)) not in table)
        raise SearchError(f"{table.source} holds {len(table)} of the space's {cells} cells "
                          f"(not e.g. {missing}): a search can propose any cell",
                          options=("table",))
    return Backend("nas-bench-201", run_table_trial, needs_data=False, epochs=HP12_EPOCHS,
                   table=table, dataset=space.dataset, table_path=config.table)


def _tokens(k: int) -> list[int]:
    out = []
    for _ in EDGES:
        k, t = divmod(k, len(NB201_OPS))
        out.append(t)
    return out


BACKENDS: dict[str, Callable[[SearchConfig, object], Backend]] = {
    "train": _train,
    "nas-bench-201": _nas_bench_201,
}


# the search space a backend implies when none is given (a table serves one space only)
BACKEND_SPACES: dict[str, str] = {"nas-bench-201": "nas-bench-201"}


def default_space(backend: str) -> str:
    """The search space of a search with ``backend`` and no space given: the backend's own
    (``BACKEND_SPACES``), else ``SearchConfig``'s default."""
    return BACKEND_SPACES.get(backend, SearchConfig.space)


def space_options(config: SearchConfig) -> dict:
    """Keywords of the search space's factory: the NAS-Bench-201 data set where one is given
    (the nas-bench-201 space's own default is cifar10)."""
    return {} if config.dataset is None else {"dataset": config.dataset}


def make_backend(config: SearchConfig, space) -> Backend:
    """The backend ``config.backend`` for ``space``; SearchError for an unknown name, a space
    the backend cannot serve or a table that cannot serve the search."""
    if config.backend not in BACKENDS:
        raise SearchError(f"unknown trial backend {config.backend!r} (known: "
                          f"{', '.join(BACKENDS)})", options=("backend",))
    return BACKENDS[config.backend](config, space)


__all__ = ["ArchRecorder", "Backend", "BACKENDS", "BACKEND_SPACES", "HP12_EPOCHS", "default_space",
           "make_backend", "space_options"]
