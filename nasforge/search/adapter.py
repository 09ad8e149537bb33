"""The one adapter between nasforge's ask/tell ``Searcher`` protocol and Ray Tune.

Ray Tune drives search algorithms through ``ray.tune.search.Searcher`` (``suggest`` when a trial
slot is free, ``on_trial_result`` per report, ``on_trial_complete`` at the end); Ray's own
``OptunaSearch`` is the model. This class maps Ray trial ids to proposals, turns a trial's last
report into a ``Result`` (ok / failed / pruned) and a ``trials.jsonl`` record, and calls the
recorder at the points where the run folder must change (see ``run_folder``'s crash order).

Constraints are checked here, before Ray ever sees a proposal: ``suggest`` measures the static
metrics the search needs (``objectives.py``: params, mult-adds, anything registered) with the
search's ``screen.Screen`` (the spos search phase uses the same one) and a proposal that
violates a constraint is recorded as ``infeasible`` with the measured values, told to the
searcher and replaced by the next proposal, so it is never trained and does not use the trial
budget; after ``infeasible_cap`` of them the search stops (``StopRequest`` reason
``StopReason.INFEASIBLE``). Constraints on trained metrics (an accuracy floor) are checked when
the trial ends: the child trained and counts, but it is marked infeasible for ranking.

A search can end before its budget (``StopRequest``: the failure rule, Ctrl-C): from then on no
trial is started, and a trial that Ray ends without its final report (stopped or killed with
the experiment) is not recorded: its proposal stays in flight in the searcher's saved state,
so ``--resume`` trains it again.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Protocol

from ray.tune.search import Searcher as TuneSearcher

from nasforge.controllers import Proposal, Result
from nasforge.safe_load import load_plain
from nasforge.search.failures import WORKER_DIED
from nasforge.search.objectives import METRICS, Goal
from nasforge.search.screen import Screen, judge_finished, result_from_record
from nasforge.trials import Status, StopReason, TrialRecord

log = logging.getLogger(__name__)

# the trained metrics of objectives.METRICS, and the epoch
METRIC_KEYS = tuple(n for n, m in METRICS.items() if not m.static) + ("epoch",)


class Recorder(Protocol):
    """What the adapter reports to (``recorder.SearchRecorder``)."""

    def asked(self, searcher, proposal: Proposal, ray_trial_id: str) -> None:
        """After ``searcher.ask``, before the trial is handed to Ray."""

    def epoch(self, proposal: Proposal, metrics: dict) -> None:
        """Per intermediate report of a running trial."""

    def finished(self, record: TrialRecord, traceback: str | None = None) -> None:
        """A trial ended: append its record (before the searcher is told); ``traceback``: the
        child's, when it raised."""

    def told(self, searcher, record: TrialRecord) -> None:
        """After ``searcher.tell``: save the searcher, update best/TensorBoard/progress."""


class StopRequest:
    """Set once, by whoever ends a search before its budget (the failure rule, Ctrl-C); read by
    the adapter and by Ray Tune's stopper (``runner``)."""

    def __init__(self):
        self.reason: StopReason | None = None
        self.broken = None  # failures.BrokenSearch when the reason is BROKEN

    def set(self, reason: StopReason, broken=None) -> None:
        if self.reason is None:  # the first reason is the one to report
            self.reason, self.broken = reason, broken

    def __bool__(self) -> bool:
        return self.reason is not None


class TuneSearcherAdapter(TuneSearcher):
    """Ray Tune search algorithm backed by a nasforge searcher.

    ``budget``: trials this Ray experiment may start; ``requeue``: proposals asked before a
    driver crash and never finished, handed out first on resume; ``resources``: per-trial
    ``{"cpu": c, "gpu": g}`` recorded with each trial; ``stop``: ends the search early;
    ``goal``: objectives and constraints; ``model_setting``: how children are built (for the
    static metrics); ``infeasible_cap``: infeasible proposals after which the search stops;
    ``infeasible_seen``: those already recorded by earlier parts of the run;
    ``arch_record(arch)``: what a record stores of an architecture (``screen.Screen``)."""

    def __init__(self, searcher, space, recorder: Recorder, budget: int,
                 resources: dict, requeue: list[Proposal] = (), goal: Goal | None = None,
                 stop: StopRequest | None = None, model_setting=None,
                 infeasible_cap: int | None = None, infeasible_seen: int = 0,
                 arch_record=None):
        self.goal = goal or Goal()
        super().__init__(metric=self.goal.primary.name, mode=self.goal.primary.direction.value)
        self.model_setting = model_setting
        self.screen = Screen(self.goal, space, model_setting, infeasible_cap, infeasible_seen,
                             arch_record)
        self.static: dict[int, dict] = {}  # proposal id -> static metrics measured
        self.stop_request = stop if stop is not None else StopRequest()
        self.nasforge_searcher = searcher
        self.space = space
        self.recorder = recorder
        self.budget = int(budget)
        self.resources = dict(resources)
        self.requeue = list(requeue)
        self.issued = 0
        self.live: dict[str, tuple[Proposal, float]] = {}  # ray trial id -> (proposal, t0)
        self.last: dict[str, dict] = {}  # ray trial id -> last intermediate report

    @staticmethod
    def trial_config(proposal: Proposal, static: dict | None = None) -> dict:
        """The Tune config of a trial (``trial.run_trial`` decodes the tokens and reports the
        static metrics with every result, where ASHA may need them)."""
        return {"nasforge": {"trial": proposal.id, "tokens": list(proposal.tokens),
                             "static": dict(static or {})}}

    # ------------------------------------------------------------ Ray's API
    def suggest(self, trial_id: str):
        while True:
            if self.issued >= self.budget or self.stop_request:
                return TuneSearcher.FINISHED
            proposal = self.requeue.pop(0) if self.requeue else \
                self.nasforge_searcher.ask(1)[0]
            self.record_screened()
            static = self.screen.measure(proposal)
            record = self.screen.refusal(proposal, static, ray_trial_id=None,
                                         resources=self.resources)
            if record is None:
                break
            self.refuse(proposal, record)
        self.static[proposal.id] = static
        self.issued += 1
        self.live[trial_id] = (proposal, time.time())
        self.recorder.asked(self.nasforge_searcher, proposal, trial_id)
        return self.trial_config(proposal, static)

    def refuse(self, proposal: Proposal, record: TrialRecord) -> None:
        """Called by ``suggest`` for a proposal that violates a constraint before training
        (``record``: its ``Screen.refusal``): recorded, told to the searcher as infeasible,
        never trained; stops the search at the cap."""
        self.recorder.finished(record)
        self.nasforge_searcher.tell(proposal, result_from_record(record))
        self.recorder.told(self.nasforge_searcher, record)
        if self.screen.count_refusal():
            self.stop_request.set(StopReason.INFEASIBLE)

    def record_screened(self) -> None:
        """Records the candidates a prescreen (``controllers.prescreen``) passed over in the
        last ask: status ``screened``, the proxy's score as their metric; already told to
        the searcher, never trained, not trials of the budget."""
        take = getattr(self.nasforge_searcher, "take_screened", None)
        for proposal, result in (take() if take is not None else ()):
            now = time.time()
            self.recorder.finished(TrialRecord(
                trial=proposal.id, status=Status.SCREENED, hash=proposal.hash,
                tokens=tuple(proposal.tokens), origin=dict(proposal.meta),
                arch=self.space.to_graph(proposal.arch).to_dict(), metrics=dict(result.metrics),
                wall_s=0.0, train_s=0.0, resources={}, error=result.error, started_at=now,
                finished_at=now, ray_trial_id=None))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.live:
            self.last[trial_id] = result
            self.recorder.epoch(self.live[trial_id][0], _metrics(result))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.live:
            log.warning("Ray reported an unknown trial %s complete: ignored", trial_id)
            return
        proposal, t0 = self.live.pop(trial_id)
        result = result or self.last.get(trial_id) or {}
        self.last.pop(trial_id, None)
        static = self.static.pop(proposal.id, {})
        if self.stop_request and (error or result.get("final_status") is None):
            log.info("trial %d ended with the search: left for --resume", proposal.id)
            return
        record, outcome = self.make_record(proposal, trial_id, result, error, t0, static)
        self.recorder.finished(record, result.get("traceback"))
        self.nasforge_searcher.tell(proposal, outcome)
        self.recorder.told(self.nasforge_searcher, record)

    def __getstate__(self):
        # Ray pickles the Tuner (for Tuner.restore, which nasforge does not use: see
        # runner.py); the recorder's TensorBoard writers and a database-backed Optuna study
        # cannot be pickled; the searcher's state reaches Ray through get_state() instead.
        return {k: v for k, v in self.__dict__.items()
                if k not in ("recorder", "nasforge_searcher", "space")}

    # Ray checkpoints its search algorithm with its experiment state; nasforge's own resume
    # uses the run folder (run_folder.py), so these only keep Ray's copy complete.
    def get_state(self) -> dict:
        return {"searcher": self.nasforge_searcher.state_dict(), "issued": self.issued}

    def set_state(self, state: dict) -> None:
        self.nasforge_searcher.load_state_dict(state["searcher"])
        self.issued = int(state["issued"])

    def save(self, checkpoint_path: str) -> None:
        import torch

        torch.save(self.get_state(), checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(load_plain(checkpoint_path, "searcher checkpoint"))

    # --------------------------------------------------------------- records
    def make_record(self, proposal: Proposal, ray_trial_id: str, result: dict, error: bool,
                    t0: float, static: dict | None = None) -> tuple[TrialRecord, Result]:
        """The ``trials.jsonl`` record and the searcher's ``Result`` of a finished trial
        (``static``: the metrics measured before it trained)."""
        metrics = {**_metrics(result), **(static or {})}
        final = result.get("final_status")
        failure = None
        if error:
            status = Status.FAILED
            reason = "the trial's worker failed on every attempt (see Ray's error file in " \
                     "the trial folder)"
            failure = WORKER_DIED
        elif final is None:
            status, reason = Status.PRUNED, None  # the scheduler stopped it before its end
        else:
            status, reason = Status(final), result.get("error")
            failure = result.get("failure") if status == Status.FAILED else None
        now = time.time()
        record = TrialRecord(
            trial=proposal.id, ray_trial_id=ray_trial_id, status=status, hash=proposal.hash,
            tokens=tuple(proposal.tokens), origin=dict(proposal.meta),
            arch=self.screen.arch_record(proposal.arch), metrics=metrics,
            epochs=int(metrics.get("epoch") or 0), params=result.get("params"),
            mult_adds=result.get("mult_adds"), wall_s=now - t0, train_s=result.get("train_s"),
            restored_epoch=result.get("restored_epoch", 0), resources=self.resources,
            error=reason, failure=failure, started_at=t0, finished_at=now)
        # trained metrics (an accuracy floor) are known now; static ones were checked
        record = judge_finished(self.goal, record)
        return record, result_from_record(record)


def _metrics(result: dict) -> dict:
    """The child's metrics in a Ray report (finite numbers only; Ray's own keys dropped)."""
    out = {}
    for key in METRIC_KEYS:
        v = result.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[key] = v
    return out


__all__ = ["TuneSearcherAdapter", "Recorder", "StopRequest", "result_from_record"]
