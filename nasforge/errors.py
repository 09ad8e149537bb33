"""The one base of the errors nasforge reports to its user.

Every library error that means "this input cannot be used" (or, for ``ExportError`` and
``TransferFailed``, "this job failed, and here is why in one line") derives from
``NasforgeError``, so a front end catches one type. Messages say what is wrong in the
library's own words (parameter and field names); ``options`` names the parameters an error is
about, so a front end can point at its own spelling of them (the CLI adds ``--flag``).
"""
from __future__ import annotations

from typing import Iterable


class NasforgeError(Exception):
    """An error nasforge reports as one line; ``options``: the parameters it is about."""

    def __init__(self, *args, options: Iterable[str] = ()):
        super().__init__(*args)
        self.options: tuple[str, ...] = tuple(options)
