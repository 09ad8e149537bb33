"""Reading the files of a run folder or checkpoint directory without trusting them.

Run folders are meant to travel (``--storage s3://...``, a colleague's run, ``--resume`` on
another machine), so nothing read from one may run code. Every ``.pt`` file nasforge writes
(trainer checkpoints, searcher states) holds only tensors, plain containers, numbers, strings
and None, and is read back with ``torch.load(weights_only=True)``: torch's restricted
unpickler, which refuses any other global (a ``__reduce__`` that calls ``os.system`` fails
before it is called). JSON files cannot run code; an unreadable one is refused the same way
instead of surfacing as a ``UnicodeDecodeError`` deep in a reader.

A refused file raises :class:`RefusedFileError` with one line naming the file and why; the
CLI prints it and exits with code 2.
"""
from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

from nasforge.errors import NasforgeError


class RefusedFileError(NasforgeError, ValueError):
    """A run or checkpoint file that nasforge will not load (one line: the file and why)."""


# lines of torch's weights-only error message that explain torch's options, not the file
_TORCH_ADVICE = ("Weights only load failed", "Re-running", "Check the documentation",
                 "Please file an issue", "In PyTorch")


def _why_refused(error: BaseException) -> str:
    """The line of torch's multi-line weights-only error that says what the file holds."""
    for line in str(error).splitlines():
        line = line.split("WeightsUnpickler error:", 1)[-1].strip()
        if line and not line.startswith(_TORCH_ADVICE):
            return line.rstrip(".")
    return type(error).__name__


def load_plain(path, what: str = "file") -> Any:
    """The tensors and plain data saved in ``path`` (a ``torch.save`` file), on the CPU.

    Called wherever nasforge reads a ``.pt`` file back (checkpoints, searcher states).
    Raises :class:`RefusedFileError` for a file that holds anything else (a pickled object
    whose unpickling could run code is refused before anything of it runs) or that is not
    readable as a torch file; FileNotFoundError for a missing one."""
    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # torch warns about a non-default pickle protocol before it refuses the file:
            # the refusal below is the one line the user needs
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        raise RefusedFileError(f"refusing to load {what} {path}: it holds more than tensors and "
                               f"plain data ({_why_refused(e)}); nasforge never unpickles "
                               f"objects from a run folder") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RefusedFileError(f"cannot read {what} {path}: not a readable torch file "
                               f"({reason[:200]})") from None


def read_json(path, what: str = "file") -> Any:
    """The JSON value in ``path`` (UTF-8). Raises :class:`RefusedFileError` for a file that
    is not UTF-8 JSON (a binary or crafted file), FileNotFoundError for a missing one."""
    path = Path(path)
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise RefusedFileError(f"cannot read {what} {path}: not JSON ({e.msg} at line "
                               f"{e.lineno})") from None


def read_text(path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; :class:`RefusedFileError` for a binary file."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RefusedFileError(f"cannot read {what} {path}: not UTF-8 text (byte "
                               f"{data[e.start]:#04x} at offset {e.start})") from None
