"""Durations as people read them on a console or in a table."""
from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``M:SS`` below an hour, ``H:MM:SS`` from one hour on (rounded to whole seconds)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"
