"""The constraint screen of a search: the one place where a proposal is judged feasible.

Both search drivers use it: the Ray adapter before a child is trained (``adapter.py``) and the
``spos`` search phase before a path is evaluated on the supernet (``oneshot/run.py``):

* ``Screen.measure`` computes the static metrics the goal needs (params, mult-adds, latency_ms:
  known from the graph, ``objectives.measure_static``) and ``Screen.refusal`` turns a proposal
  that violates a constraint on them into its ``trials.jsonl`` record (status ``infeasible``,
  the measured values, why); ``Screen.count_refusal`` counts it toward the cap on infeasible
  proposals (``objectives.infeasible_cap``) after which the search stops.
* ``judge_finished`` marks a finished ``ok`` record against the constraints on measured metrics
  (an accuracy floor): it stays a finished trial but ranks as infeasible.
* ``result_from_record`` is the searcher's ``Result`` of any record, so what a searcher is told
  and what the run folder says are the same thing (also used by ``--resume``).

Importing this module imports neither torch nor Ray.
"""
from __future__ import annotations

import time
from typing import Mapping

from nasforge.controllers.base import Proposal, Result
from nasforge.search.objectives import HELD_OUT_METRICS, Goal, ModelSetting, measure_static
from nasforge.trials import Status, TrialRecord


class Screen:
    """The pre-training (pre-evaluation) check of one search.

    Built once per search driver with the search's ``goal``, the ``space`` the proposals come
    from, the ``setting`` their children are built with (needed when the goal uses a static
    metric), the ``cap`` on infeasible proposals (None: no cap) and ``seen``, the infeasible
    proposals earlier parts of the run already recorded; ``arch_record(arch)``: a record's
    ``arch`` (default the space's ``record``; a table backend adds the ``arch_index``)."""

    def __init__(self, goal: Goal, space, setting: ModelSetting | None = None,
                 cap: int | None = None, seen: int = 0, arch_record=None):
        self.goal, self.space, self.setting = goal, space, setting
        # what a record stores of a proposal's architecture (SearchSpace.record)
        self.arch_record = arch_record or space.record
        self.static_metrics = goal.static_metrics()
        if self.static_metrics and setting is None:
            raise ValueError(f"static metrics {self.static_metrics} need a model_setting")
        self.cap = cap
        self.seen = int(seen)

    @property
    def capped(self) -> bool:
        """Whether the infeasible proposals seen reached the cap (the search must stop)."""
        return self.cap is not None and self.seen >= self.cap

    def measure(self, proposal: Proposal, names=()) -> dict:
        """Called once per proposal, before it is trained or evaluated: ``{metric: value}`` of
        the static metrics the goal needs, plus ``names`` (empty when none is needed)."""
        names = tuple(dict.fromkeys((*self.static_metrics, *names)))
        if not names:
            return {}
        return measure_static(names, self.space.to_graph(proposal.arch), self.setting)

    def refusal(self, proposal: Proposal, static: dict, **fields) -> TrialRecord | None:
        """None when ``static`` (``measure``'s values) meets every constraint on them; else
        the ``trials.jsonl`` record of a proposal refused before training: status
        ``infeasible``, the measured values as its metrics, the constraint values and why.
        ``fields`` fill or override the record's own (``trial``, ``resources``, ``origin``,
        ``ray_trial_id``)."""
        violated = self.goal.violated(static, only_known=True)
        if not violated:
            return None
        now = time.time()
        return TrialRecord(
            trial=proposal.id, status=Status.INFEASIBLE, hash=proposal.hash,
            tokens=tuple(proposal.tokens), origin=dict(proposal.meta),
            arch=self.arch_record(proposal.arch), metrics=dict(static),
            constraints=self.goal.constraint_values(static, only_known=True),
            feasible=False, epochs=0, params=static.get("params"),
            mult_adds=static.get("mult_adds"), wall_s=0.0, train_s=0.0, restored_epoch=0,
            resources={}, error="; ".join(violated), failure=None, started_at=now,
            finished_at=now).replace(**fields)

    def count_refusal(self) -> bool:
        """Called once per refused proposal, after it is recorded and told: counts it; True
        when the search must stop (the cap is reached)."""
        self.seen += 1
        return self.capped


def judge_finished(goal: Goal, record: TrialRecord) -> TrialRecord:
    """Mark a finished record against every constraint, now that its measured metrics are
    known (static ones were checked before): ``constraints`` (values, <= 0 feasible),
    ``feasible`` and, when violated, ``error``. Only ``ok`` records of a constrained goal are
    marked; returns the marked record (``record`` itself when there is nothing to mark)."""
    if not goal.constraints or record.status != Status.OK:
        return record
    values = {**{k: record[k] for k in ("params", "mult_adds") if record.get(k) is not None},
              **record.metrics}
    violated = goal.violated(values)
    return record.replace(constraints=goal.constraint_values(values), feasible=not violated,
                          **({"error": "; ".join(violated)} if violated else {}))


def result_from_record(record: TrialRecord | Mapping) -> Result:
    """The searcher's ``Result`` of a record or its ``trials.jsonl`` line (also used by
    ``--resume``)."""
    record = TrialRecord.of(record)
    metrics = {k: v for k, v in record.metrics.items()
               if k != "epoch" and k not in HELD_OUT_METRICS}
    constraints = dict(record.constraints or {})
    if record.status == Status.INFEASIBLE or not record.rankable and \
            record.status == Status.OK:
        return Result.infeasible(constraints, record.error,
                                 **{k: v for k, v in metrics.items() if isinstance(v, float)
                                    or isinstance(v, int)})
    if record.status == Status.OK:
        return Result(Status.OK, {"mult_adds": float(record.mult_adds or 0),
                                  "params": float(record.params or 0), **metrics},
                      constraints=constraints)
    if record.status == Status.PRUNED:
        return Result.pruned(**metrics)
    return Result.failed(record.error)


__all__ = ["Screen", "judge_finished", "result_from_record"]
