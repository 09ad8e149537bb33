"""Command-line options that several commands share, each defined once."""
from __future__ import annotations

from nasforge.cli import UsageError
from nasforge.search_spaces.nas_bench_201 import (DATASETS, DEFAULT_DATASET, UnknownDatasetError,
                                                  check_dataset)


def _dataset(text: str) -> str:
    """argparse's type of ``--dataset``: the library's check (``check_dataset``), its error a
    UsageError so that argparse does not replace the message with its own."""
    try:
        return check_dataset(text)
    except UnknownDatasetError as e:
        raise UsageError(str(e), options=e.options) from None


def add_dataset_option(p, what: str, default: str | None = None) -> None:
    """``--dataset NAME``: one of NAS-Bench-201's data sets (``DATASETS``); ``what`` says what
    it chooses in this command; ``default``: the value when it is not given (None: the
    command passes None on, and the library uses ``DEFAULT_DATASET``). An unknown name is
    one line naming it and the known ones, exit 2, in every command."""
    p.add_argument("--dataset", metavar="NAME", type=_dataset, default=default,
                   help=f"NAS-Bench-201's data set: {what} ({', '.join(DATASETS)}; default "
                        f"{DEFAULT_DATASET if default is None else default})")


__all__ = ["add_dataset_option"]
