"""Two rules every registry and every config of nasforge follows, each defined once here.

* A registry refuses a second entry under a name it already holds (:func:`add_unique`): a
  published name keeps its meaning, and a plug-in that reuses one fails at import with a
  message naming it, instead of silently replacing (or being replaced by) the original.
* A config read back from a dict -- a run folder's JSON, ``--searcher-option K=V`` -- refuses
  keys its dataclass does not have (:func:`reject_unknown_keys`): a typo or a field of another
  nasforge version is reported in one line, never dropped.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, TypeVar

T = TypeVar("T")


def add_unique(table: dict, name: str, entry: T, kind: str) -> T:
    """Called by every ``register_*`` function: put ``entry`` into ``table`` under ``name``;
    ValueError naming ``kind`` and ``name`` when the name is taken."""
    if name in table:
        raise ValueError(f"{kind} {name!r} is already registered")
    table[name] = entry
    return entry


def reject_unknown_keys(cls: type, data: Mapping, what: str,
                        error: type[Exception] = ValueError) -> None:
    """Called by every config's ``from_dict`` before building ``cls`` (a dataclass) from
    ``data``: raises ``error`` with one line naming the unknown key(s) of ``what``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        keys = ", ".join(repr(k) for k in unknown)
        raise error(f"{what}: unknown key{'s' if len(unknown) > 1 else ''} {keys} "
                    f"(known: {', '.join(sorted(known))})")
