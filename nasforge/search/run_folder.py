"""The run folder ``runs/<name>/`` of a search: the files a user reads and ``--resume`` trusts.

    config.json       SearchConfig + nasforge version, git commit, start time
    trials.jsonl      append-only, one JSON line per finished trial (the source of truth),
                      and per proposal refused before training (status ``infeasible``)
    best_cell.json    the best trial's cell pair (``nasforge train``/``info``-able), replaced
                      atomically when the best changes (best: the primary objective)
    pareto.json       with several objectives: the current Pareto front (objective values,
                      cell pairs), replaced atomically when it changes
    searcher.pt       the searcher's state_dict, replaced atomically after every ask and tell
    events.out.tfevents.*   search-level TensorBoard scalars and images
    trials/<id>/      per-trial TensorBoard events (learning curve, HParams) and, for a child
                      that raised, its traceback.txt
    ray/              Ray Tune's experiment state and trial checkpoints (unless --storage)

Crash consistency: a finished trial is first appended to ``trials.jsonl`` (one ``write`` of a
whole line, then fsync), then told to the searcher, then the searcher state is saved. A driver
killed anywhere in between leaves a line whose proposal is still "in flight" in the saved state;
``--resume`` tells it from the line instead of training it again.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Callable, Mapping

from nasforge.safe_load import RefusedFileError, load_plain, read_json, read_text
from nasforge.search.config import SearchError
from nasforge.search.objectives import Goal, Objective, parse_objective
from nasforge.trials import metric_value, rank_key, rankable

log = logging.getLogger(__name__)

CONFIG = "config.json"
TRIALS = "trials.jsonl"
BEST = "best_cell.json"
PARETO = "pareto.json"
SEARCHER_STATE = "searcher.pt"
TRACEBACK = "traceback.txt"  # in a trial's folder


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_trials(run_dir) -> list[dict]:
    """The finished-trial records of a run, in file order, each trial id once.

    A line cut short by a killed writer (only ever the last one) is skipped with a warning;
    a file that is not UTF-8 text raises :class:`~nasforge.safe_load.RefusedFileError`."""
    path = Path(run_dir) / TRIALS
    records, seen = [], set()
    if not path.exists():
        return records
    for n, line in enumerate(read_text(path, "trial records").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not complete JSON (a killed writer?): skipped", path, n)
            continue
        if not isinstance(rec, dict) or type(rec.get("trial")) is not int:
            log.warning("%s line %d has no integer 'trial': skipped", path, n)
            continue
        if rec["trial"] in seen:
            log.warning("%s line %d repeats trial %s: skipped", path, n, rec.get("trial"))
            continue
        seen.add(rec.get("trial"))
        records.append(rec)
    return records


def trial_score(record: dict, objective: str | Objective = "val_acc") -> float | None:
    """The value a trial competes with for "best": its finite value of the objective's metric
    (``trials.metric_value``) when its status is ``ok`` and it meets the search's
    constraints, else None (failed, pruned and infeasible trials never count as best).
    ``objective``: an ``Objective`` or its text (``"val_acc"``, ``"mult_adds:min"``)."""
    if not rankable(record):
        return None
    return metric_value(record, parse_objective(objective).name)


def ranked_trials(records: list[dict], objective: str | Objective = "val_acc") -> list[dict]:
    """The records with a ``trial_score``, best first in the objective's direction (ties:
    lowest trial id: ``trials.rank_key``).

    The one best-trial rule of nasforge: the search's progress and ``best_cell.json``,
    ``nasforge compare`` and ``nasforge export best_cell`` all rank trials with it, and
    ``Searcher.best()`` with the same ``rank_key``."""
    objective = parse_objective(objective)
    scored = [r for r in records if trial_score(r, objective) is not None]
    return sorted(scored, key=lambda r: rank_key(trial_score(r, objective), objective.direction,
                                                 r["trial"]))


def run_goal(config: dict) -> Goal:
    """The objectives and constraints of a run from its ``config.json`` (runs made before
    objectives existed: ``val_acc``, maximized)."""
    search = config.get("search", {}) if isinstance(config, dict) else {}
    return Goal.parse(search.get("objectives") or ("val_acc",), search.get("constraints") or ())


def best_trial(records: list[dict], objective: str | Objective = "val_acc") -> dict | None:
    """The best record (see ``ranked_trials``), or None."""
    ranked = ranked_trials(records, objective)
    return ranked[0] if ranked else None


def device_seconds(record: dict) -> float:
    """A trial's device time: wall seconds x its GPUs (x 1 for a CPU-only trial)."""
    gpu = float(record.get("resources", {}).get("gpu") or 0)
    return float(record.get("wall_s") or 0) * (gpu if gpu > 0 else 1.0)


def is_run(path) -> bool:
    path = Path(path)
    return (path / CONFIG).is_file() and (path / TRIALS).is_file()


class RunFolder:
    """Reads and writes one run folder; every write is atomic or a single appended line."""

    def __init__(self, path):
        self.path = Path(path)

    # ------------------------------------------------------------ lifecycle
    def create(self, config: dict) -> "RunFolder":
        """Called once when a new search starts; refuses a folder that already holds a run."""
        if is_run(self.path):
            raise SearchError(f"{self.path} already holds a search run: resume it or choose "
                              f"another name", options=("resume", "name"))
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path / CONFIG, (json.dumps(config, indent=2) + "\n").encode())
        (self.path / TRIALS).touch()
        return self

    @classmethod
    def open(cls, path) -> "RunFolder":
        """Called by ``--resume``: the existing run, its torn last line (if any) removed."""
        run = cls(path)
        if not Path(path).is_dir():
            raise SearchError(f"cannot resume {path}: no such folder", options=("resume",))
        if not is_run(path):
            raise SearchError(f"cannot resume {path}: not a search run folder (needs {CONFIG} "
                              f"and {TRIALS})", options=("resume",))
        run._drop_torn_tail()
        return run

    def _drop_torn_tail(self) -> None:
        path = self.path / TRIALS
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s ends in a partial line (%d bytes): removed", path, len(data) - keep)
            with open(path, "r+b") as f:
                f.truncate(keep)

    # -------------------------------------------------------------- reading
    def config(self) -> dict:
        config = read_json(self.path / CONFIG, "search config")
        if not isinstance(config, dict):
            raise RefusedFileError(f"cannot read search config {self.path / CONFIG}: not a JSON "
                                   f"object")
        return config

    def trials(self) -> list[dict]:
        return read_trials(self.path)

    def trial_dir(self, trial_id: int) -> Path:
        return self.path / "trials" / f"{int(trial_id):05d}"

    def traceback_path(self, trial_id: int) -> Path:
        return self.trial_dir(trial_id) / TRACEBACK

    @property
    def best_path(self) -> Path:
        return self.path / BEST

    # -------------------------------------------------------------- writing
    def append_trial(self, record: Mapping) -> None:
        """Called once per finished trial, before the searcher hears of it (``record``: a
        ``trials.TrialRecord`` or its line)."""
        self.append_line(TRIALS, dict(record))

    def append_line(self, name: str, record: dict) -> None:
        """Append ``record`` as one JSON line to the run's file ``name`` (fsynced)."""
        line = (json.dumps(record, allow_nan=True) + "\n").encode()
        fd = os.open(self.path / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of a whole line: a kill cannot split it
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def following(self, name: str, on_record: Callable[[dict], None],
                  interval_s: float = 1.0):
        """Called around work another process does in this run (the rank-0 worker of a
        data-parallel one-shot search appends its epochs' lines): ``on_record`` gets each
        complete line appended to the file ``name`` meanwhile, in order, from a background
        thread that polls every ``interval_s`` seconds, and once more on exit. Lines there
        before entry are skipped; a file rewritten shorter (a resume's sync) restarts the
        count at its length."""
        seen = len(self._complete_lines(name))
        stop = threading.Event()

        def poll():
            nonlocal seen
            lines = self._complete_lines(name)
            for line in lines[min(seen, len(lines)):]:
                on_record(json.loads(line))
            seen = len(lines)

        def loop():
            while not stop.wait(interval_s):
                poll()

        thread = threading.Thread(target=loop, name=f"follow-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            poll()

    def _complete_lines(self, name: str) -> list[bytes]:
        """The file's newline-terminated lines (a line being written is left out)."""
        try:
            data = (self.path / name).read_bytes()
        except FileNotFoundError:
            return []
        return data.split(b"\n")[:-1]

    def write_traceback(self, trial_id: int, text: str) -> None:
        """Called when a failed child's record comes with the traceback of its exception."""
        path = self.traceback_path(trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, text.encode("utf-8", "replace"))

    def write_lines(self, name: str, records: list[dict]) -> None:
        """Replace the run's file ``name`` atomically with one JSON line per record."""
        _atomic_write(self.path / name, "".join(json.dumps(r, allow_nan=True) + "\n"
                                                for r in records).encode())

    def write_json(self, name: str, doc: dict) -> None:
        """Replace the run's file ``name`` atomically with ``doc`` as JSON."""
        _atomic_write(self.path / name, (json.dumps(doc, indent=1) + "\n").encode())

    def read_json(self, name: str, what: str) -> dict | None:
        """The run's JSON file ``name`` (``what`` names it in errors), or None if absent."""
        path = self.path / name
        return read_json(path, what) if path.is_file() else None

    def write_best(self, cell_pair_json: str) -> None:
        _atomic_write(self.path / BEST, cell_pair_json.encode())

    @property
    def pareto_path(self) -> Path:
        return self.path / PARETO

    def write_pareto(self, goal: Goal, front: list[dict]) -> None:
        """Called when the Pareto front changes: its members (trial, hash, objective values,
        cell pair), by trial id."""
        members = [{"trial": r["trial"], "hash": r.get("hash"),
                    "values": {o.name: metric_value(r, o.name) for o in goal.objectives},
                    "arch": r.get("arch")} for r in front]
        doc = {**goal.spec(), "members": members}
        _atomic_write(self.path / PARETO, (json.dumps(doc, indent=1) + "\n").encode())

    def read_pareto(self) -> dict | None:
        """The saved front (``write_pareto``), or None."""
        if not self.pareto_path.is_file():
            return None
        return read_json(self.pareto_path, "Pareto front")

    def save_searcher(self, state: dict) -> None:
        import io

        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        _atomic_write(self.path / SEARCHER_STATE, buf.getvalue())

    def load_searcher(self) -> dict | None:
        """The saved searcher state (plain data: refused with
        :class:`~nasforge.safe_load.RefusedFileError` otherwise), or None before the first
        save."""
        path = self.path / SEARCHER_STATE
        if not path.exists():
            return None
        state = load_plain(path, "searcher state")
        if not isinstance(state, dict):
            raise RefusedFileError(f"cannot read searcher state {path}: not a searcher state")
        return state
