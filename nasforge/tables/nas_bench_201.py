"""NAS-Bench-201's published tables: figures of cells each trained by others on a GPU cluster.

Shipped (``data/``, sources and licences in ``data/README.md``, which travels with the data):

* ``load_table()``: all 15,625 cells with their accuracy (%) after NAS-Bench-201's 12-epoch
  schedule on CIFAR-10, CIFAR-100 and ImageNet16-120 (``HP12_COLUMNS``);
* ``load_sample(dataset)``: about 725 cells of one data set with the 200-epoch validation
  accuracy, parameters (millions) and FLOPs (millions) of NAS-Bench-201's network
  (``SAMPLE_FIELDS``), from NASLib's zero-cost benchmark file.

Either loader also reads a user's file with the same columns (e.g. a full NATS-Bench export
converted once), plain or gzip-compressed. Cells are keyed by NAS-Bench-201's string form,
normalised by ``parse_cell``/``format_cell``, and by NAS-Bench-201's ``arch_index``.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from nasforge.errors import NasforgeError
from nasforge.search_spaces.nas_bench_201 import Nb201Cell, format_cell, parse_cell

DATA_DIR = Path(__file__).resolve().parent / "data"
HP12_FILE = DATA_DIR / "nas-bench-201-hp12.csv.gz"
SAMPLE_FILE = DATA_DIR / "nas-bench-201-naslib-sample.json.gz"
KEY_COLUMNS = ("arch_index", "cell")
# accuracy (%) after the 12-epoch schedule; *_valid: trained on the training half, scored on
# the validation half; *_test: trained on the full training set, scored on the test set
HP12_COLUMNS = KEY_COLUMNS + ("cifar10_valid", "cifar10_test", "cifar100_valid",
                              "cifar100_test", "imagenet16_valid", "imagenet16_test")


def hp12_columns(dataset: str) -> tuple[str, str]:
    """The 12-epoch table's (validation, test) accuracy columns (%) of ``dataset``."""
    return f"{dataset}_valid", f"{dataset}_test"


# val_acc_200ep: %, after the 200-epoch schedule; params_M, flops_M: millions
SAMPLE_FIELDS = KEY_COLUMNS + ("dataset", "val_acc_200ep", "params_M", "flops_M")
# the sample's data set names -> nasforge's (search_spaces.nas_bench_201.DATASETS)
SAMPLE_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet16"}


class TableError(NasforgeError, ValueError):
    """A table file that cannot be read as a NAS-Bench-201 table, or a cell it does not hold."""


class Table:
    """Rows of figures, one per cell, looked up by cell (string or ``Nb201Cell``) or by
    ``arch_index``. Each row is a dict of ``columns`` (``cell``: the normalised string,
    ``arch_index``: int, figures: float). ``source`` names where the rows came from."""

    def __init__(self, rows: Sequence[Mapping], columns: Sequence[str], source: str):
        self.columns, self.source = tuple(columns), source
        self._rows = [dict(r) for r in rows]
        self._by_cell: dict[str, dict] = {}
        self._by_index: dict[int, dict] = {}
        for row in self._rows:
            for key, index in (("cell", self._by_cell), ("arch_index", self._by_index)):
                if row[key] in index:
                    raise TableError(f"{source}: {key} {row[key]!r} appears twice")
                index[row[key]] = row

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[dict]:
        return iter(self._rows)

    def __contains__(self, cell) -> bool:
        return _key(cell) in self._by_cell

    def lookup(self, cell: str | Nb201Cell) -> dict:
        """The row of ``cell``; TableError when the table does not hold it (a malformed string
        raises NasBench201StringError)."""
        key = _key(cell)
        try:
            return self._by_cell[key]
        except KeyError:
            raise TableError(f"cell {key} is not in {self.source} ({len(self)} cells)") from None

    def by_index(self, arch_index: int) -> dict:
        """The row of NAS-Bench-201's ``arch_index``; TableError when absent."""
        try:
            return self._by_index[int(arch_index)]
        except (KeyError, ValueError, TypeError):
            raise TableError(f"arch_index {arch_index!r} is not in {self.source} "
                             f"({len(self)} cells)") from None

    def column(self, name: str) -> list:
        """One column over every row, in file order."""
        if name not in self.columns:
            raise TableError(f"{self.source} has no column {name!r} (it has: "
                             f"{', '.join(self.columns)})")
        return [row[name] for row in self._rows]


def _key(cell) -> str:
    return format_cell(cell if isinstance(cell, Nb201Cell) else parse_cell(cell))


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TableError(f"cannot read {path}: {e.strerror}") from None
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise TableError(f"cannot read {path}: not UTF-8 text or gzip of it ({e})") from None


def _number(value, where: str, integer: bool = False):
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise TableError(f"{where}: {value!r} is not a{'n integer' if integer else ' number'}") \
            from None
    if not integer and not math.isfinite(number):
        raise TableError(f"{where}: {value!r} is not a finite number")
    return number


def _row(record: Mapping, columns: Sequence[str], where: str, text_columns=()) -> dict:
    row = {}
    for name in columns:
        value = record[name]
        if name == "cell":
            try:
                row[name] = _key(value)
            except ValueError as e:
                raise TableError(f"{where}: {e}") from None
        elif name in text_columns:
            row[name] = str(value)
        else:
            row[name] = _number(value, f"{where}, {name}", integer=name == "arch_index")
    return row


def _check_columns(present, required: Sequence[str], where: str):
    missing = [c for c in required if c not in present]
    if missing:
        raise TableError(f"{where}: missing column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(missing)} (a NAS-Bench-201 table needs "
                         f"{', '.join(required)})")


def load_table(path: str | Path | None = None) -> Table:
    """The 12-epoch table of all cells (the shipped one when ``path`` is None), or a user's
    CSV with the columns ``HP12_COLUMNS`` (more columns are ignored)."""
    path = Path(path) if path is not None else HP12_FILE
    reader = csv.DictReader(io.StringIO(_read_text(path)))
    _check_columns(reader.fieldnames or (), HP12_COLUMNS, str(path))
    rows = []
    for line, record in enumerate(reader, start=2):
        if None in record or None in record.values():
            raise TableError(f"{path}, line {line}: expected {len(reader.fieldnames)} fields")
        rows.append(_row(record, HP12_COLUMNS, f"{path}, line {line}"))
    return Table(rows, HP12_COLUMNS, str(path))


def load_sample(dataset: str, path: str | Path | None = None) -> Table:
    """The 200-epoch sample of one data set (``cifar10``, ``cifar100``, ``imagenet16``; the
    shipped file when ``path`` is None), or a user's JSON list of objects with the fields
    ``SAMPLE_FIELDS`` (``dataset`` as in ``SAMPLE_DATASETS``); other fields are ignored."""
    if dataset not in SAMPLE_DATASETS.values():
        raise TableError(f"unknown NAS-Bench-201 data set {dataset!r} (known: "
                         f"{', '.join(SAMPLE_DATASETS.values())})")
    path = Path(path) if path is not None else SAMPLE_FILE
    try:
        records = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise TableError(f"{path}: malformed JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TableError(f"{path}: expected a JSON list of objects, one per cell")
    rows = []
    for k, record in enumerate(records):
        _check_columns(record, SAMPLE_FIELDS, f"{path}, entry {k}")
        if SAMPLE_DATASETS.get(record["dataset"]) == dataset:
            row = _row(record, SAMPLE_FIELDS, f"{path}, entry {k}", text_columns=("dataset",))
            rows.append({**row, "dataset": dataset})
    return Table(rows, SAMPLE_FIELDS, f"{path} [{dataset}]")
