"""The one recorder of a search run folder, for black-box and one-shot searches alike.

``RunRecorder`` keeps a run's trial records: it appends each record to ``trials.jsonl`` (before
the searcher hears of it: ``run_folder``'s crash order), keeps the best record by the one
best-trial rule (``run_folder.best_trial``, the goal's primary objective) in
``best_cell.json`` and, with several objectives, the Pareto front in ``pareto.json``; it holds
the search's goal, its constraint screen and its TensorBoard board. ``SearchRecorder`` adds
what a searcher-driven search reports: the searcher's state after every ask and tell, the
progress callback, the failure rule and the board's per-trial events; it is the Ray adapter's
``Recorder`` (``adapter.py``) and records spos's search phase. The one-shot driver
(``oneshot/run.py``) records its per-epoch cells with a ``RunRecorder``.

Importing this module imports neither torch nor Ray.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from nasforge.dsl import load_architecture
from nasforge.search.failures import FailureWatch, describe_broken
from nasforge.search.objectives import Goal
from nasforge.search.run_folder import TRIALS, RunFolder, best_trial, device_seconds, trial_score
from nasforge.search_spaces.nas_bench_201 import is_cell_record, read_cell_record
from nasforge.trials import UNTRAINED, Status, StopReason, TrialRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchProgress:
    """Handed to the progress callback after every finished trial."""

    budget: int  # trials the search runs to
    finished: int  # trials finished (ok + failed + pruned), earlier parts included
    failed: int
    pruned: int
    running: int  # trials handed to Ray and not finished
    best: float | None  # best value of the primary objective so far
    best_trial: int | None
    elapsed_s: float  # wall time of this invocation
    eta_s: float | None  # estimated wall time to the budget
    device_s: float  # accumulated device seconds (trial wall x GPUs, x 1 on CPU)
    last: Mapping | None = None  # the record (TrialRecord) of the trial that just finished
    objective: str = "val_acc"  # the primary objective's metric (what ``best`` is)
    infeasible: int = 0  # proposals refused before training (not in ``finished``)
    front: int | None = None  # Pareto front size (several objectives only)


class RunRecorder:
    """The trial records of one run folder: trials.jsonl, best_cell.json, pareto.json.

    ``records``: those the run already holds (a resume); ``board``: the search's TensorBoard
    writer (``board.SearchBoard``) or None; ``screen``: the search's ``screen.Screen`` (a
    driver that measures static metrics through the recorder), or None. ``best`` is the best
    record so far and ``front`` the Pareto front (several objectives; else empty);
    ``best_changed`` and ``front_changed`` say whether the last ``append`` changed them."""

    def __init__(self, run: RunFolder, goal: Goal | None = None,
                 records: Iterable[Mapping] = (), board=None, screen=None):
        self.run, self.board, self.screen = run, board, screen
        self.goal = goal or Goal()
        records = [TrialRecord.of(r) for r in records]
        self.best: TrialRecord | None = best_trial(records, self.goal.primary)
        self.front: list[TrialRecord] = self.goal.front(records) if self.goal.multi else []
        self.best_changed = self.front_changed = False

    def append(self, record: TrialRecord | Mapping,
               traceback: str | None = None) -> TrialRecord:
        """Called once per record, before the searcher is told of it: appends its line
        (``traceback``: a failed child's, written to its trial folder first) and, for a trial
        that was trained or evaluated, updates best_cell.json and pareto.json."""
        record = TrialRecord.of(record)
        if traceback:
            self.run.write_traceback(record.trial, traceback)
        self.run.append_trial(record)
        self.best_changed = self.front_changed = False
        if record.status not in UNTRAINED:  # refused before training: never the best
            self._rank(record)
        return record

    def rewrite(self, records: Iterable[TrialRecord | Mapping]) -> None:
        """Called when a driver rebuilds the run's records (a one-shot resume syncs them with
        its checkpoint): trials.jsonl holds exactly ``records``, best_cell.json and
        pareto.json are written from them."""
        records = [TrialRecord.of(r) for r in records]
        self.run.write_lines(TRIALS, [r.to_json() for r in records])
        self.best = best_trial(records, self.goal.primary)
        if self.best is not None:
            self.run.write_best(_pair_json(self.best.arch))
        if self.goal.multi:
            self.front = self.goal.front(records)
            self.run.write_pareto(self.goal, self.front)

    def _rank(self, record: TrialRecord) -> None:
        best = best_trial([record] if self.best is None else [self.best, record],
                          self.goal.primary)
        self.best_changed = best is record
        if self.best_changed:
            self.best = record
            self.run.write_best(_pair_json(record.arch))
        if self.goal.multi and self.goal.values(record) is not None:
            # dominance is transitive: the old front plus the new trial is the new front
            front = self.goal.front(self.front + [record])
            self.front_changed = [r.trial for r in front] != [r.trial for r in self.front]
            if self.front_changed:
                self.front = front
                self.run.write_pareto(self.goal, front)


class SearchRecorder(RunRecorder):
    """The recorder of a searcher-driven search (the adapter's ``Recorder``, see adapter.py):
    a ``RunRecorder`` that also saves the searcher, counts trials, applies the failure rule
    (``watch``; ``stop``: the ``adapter.StopRequest`` it sets), writes the board's per-trial
    events and hands a ``SearchProgress`` to ``on_progress`` after every tell."""

    def __init__(self, run: RunFolder, board, records: list[Mapping], budget: int,
                 concurrency: int, on_progress: Callable[[SearchProgress], None] | None,
                 watch: FailureWatch | None = None, stop=None, goal: Goal | None = None):
        super().__init__(run, goal, records, board)
        self.budget = budget
        self.concurrency = max(1, concurrency)
        self.on_progress = on_progress
        self.watch, self.stop = watch, stop
        self.counts = {Status.OK: 0, Status.FAILED: 0, Status.PRUNED: 0}
        self.infeasible = self.screened = 0
        self.device_s = 0.0
        for r in records:
            if r["status"] in UNTRAINED:
                self.infeasible += r["status"] == Status.INFEASIBLE
                self.screened += r["status"] == Status.SCREENED
                continue
            status = Status(r["status"])
            self.counts[status] = self.counts.get(status, 0) + 1
            self.device_s += device_seconds(r)
        self.running = 0
        self.t0 = time.time()
        self.walls: list[float] = []

    @property
    def n_finished(self) -> int:
        return sum(self.counts.values())

    def asked(self, searcher, proposal, ray_trial_id) -> None:
        self.running += 1
        self.run.save_searcher(searcher.state_dict())

    def epoch(self, proposal, metrics) -> None:
        if self.board is not None:
            self.board.epoch(proposal.id, metrics)

    def finished(self, record: TrialRecord | Mapping, traceback: str | None = None) -> None:
        record = self.append(record, traceback)
        if record.status in UNTRAINED:  # not a trial of the budget
            self.infeasible += record.status == Status.INFEASIBLE
            self.screened += record.status == Status.SCREENED
            return
        self.running -= 1
        self.counts[record.status] += 1
        self.device_s += device_seconds(record)
        self.walls.append(record.wall_s)
        broken = self.watch.observe(record) if self.watch is not None else None
        if broken is not None and self.stop is not None:
            log.info("the search is broken: %s", describe_broken(broken))  # the CLI says it
            self.stop.set(StopReason.BROKEN, broken)

    def told(self, searcher, record: TrialRecord | Mapping) -> None:
        self.run.save_searcher(searcher.state_dict())
        progress = self.progress(record)
        if self.board is not None and record["status"] not in UNTRAINED:
            self.board.finished(record, progress, searcher.stats(),
                                self.best_changed, self.best,
                                self.front if self.front_changed else None)
        if self.on_progress is not None:
            self.on_progress(progress)

    def progress(self, last: Mapping | None = None) -> SearchProgress:
        left = self.budget - self.n_finished
        eta = None
        if self.walls:
            mean = sum(self.walls) / len(self.walls)
            eta = math.ceil(left / self.concurrency) * mean if left > 0 else 0.0
        return SearchProgress(
            budget=self.budget, finished=self.n_finished, failed=self.counts[Status.FAILED],
            pruned=self.counts[Status.PRUNED], running=max(0, self.running),
            best=trial_score(self.best, self.goal.primary) if self.best else None,
            best_trial=self.best.trial if self.best else None,
            elapsed_s=time.time() - self.t0, eta_s=eta, device_s=self.device_s, last=last,
            objective=self.goal.primary.name, infeasible=self.infeasible,
            front=len(self.front) if self.goal.multi else None)


def _pair_json(arch: Mapping) -> str:
    """best_cell.json's text: the cell pair of a record's ``arch``, or for a space of whole
    networks what its records store (nas-bench-201: the cell record, string and data set,
    which ``nasforge train``/``info``/``export`` read; older runs: the cell chain)."""
    if is_cell_record(arch):
        read_cell_record(arch)  # a malformed record is refused here as anywhere
        return json.dumps(dict(arch), indent=1) + "\n"
    return load_architecture(json.dumps(arch)).to_json() + "\n"


__all__ = ["RunRecorder", "SearchRecorder", "SearchProgress"]
