"""``nasforge compare RUN [RUN ...]``: one table of search runs, plus the TensorBoard command."""
from __future__ import annotations

import json
import os
from pathlib import Path

from nasforge.cli import UsageError
from nasforge.search.objectives import METRICS
from nasforge.search.run_folder import (RunFolder, best_trial, device_seconds, is_run, run_goal,
                                        trial_score)
from nasforge.search_spaces.nas_bench_201 import stored_cell
from nasforge.trials import Status, TrialRecord


def add_arguments(p):
    p.add_argument("runs", nargs="+", metavar="RUN", help="search run folders")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--reference", metavar="NAME=V,...",
                   help="hypervolume reference point of Pareto runs, e.g. "
                        "val_acc=0,mult_adds=1e9 (default: each objective's worst possible "
                        "value, else its worst value over the compared runs)")
    p.set_defaults(run=run)


def _load(run_dir):
    """(config, goal, records in finishing order) of a run."""
    run = RunFolder.open(run_dir)
    config = run.config()
    records = [TrialRecord.from_json(r) for r in run.trials()]
    return config, run_goal(config), sorted(records, key=lambda r: r.finished_at or 0)


def shared_reference(runs: list, given: dict | None = None) -> dict[str, float]:
    """``{metric: reference}`` for the objectives of the Pareto runs among ``runs`` (each a
    (goal, records) pair): ``given``, else the metric's worst possible value, else its worst
    value over every compared run (so the runs' hypervolumes are comparable)."""
    reference = dict(given or {})
    for goal, records in runs:
        if not goal.multi:
            continue
        point = goal.reference_point(records, given=given)
        if point is None:
            continue
        for o, v in zip(goal.objectives, point):
            if given and o.name in given:
                continue
            old = reference.get(o.name)
            reference[o.name] = v if old is None else o.direction.worse(old, v)
    return reference


def summarize(run_dir, reference: dict | None = None) -> dict:
    """One row: searcher, primary objective, finished/failed/infeasible trials, best value of
    the primary objective, trials and device-hours needed to reach it (in finishing order),
    wall time (first start to last finish); for a Pareto run also the front's size and
    hypervolume with ``reference`` (``shared_reference``; default: this run's own)."""
    config, goal, records = _load(run_dir)
    infeasible = sum(r.status == Status.INFEASIBLE for r in records)
    primary = goal.primary
    best_record = best_trial(records, primary)
    best = None if best_record is None else trial_score(best_record, primary)
    best_acc = best_trial(records, "val_acc")
    best_at, device_at_best, device_s, trained = None, None, 0.0, 0
    for r in records:
        if r.status == Status.INFEASIBLE:
            continue
        trained += 1
        device_s += device_seconds(r)
        if best_at is None and best is not None and trial_score(r, primary) == best:
            best_at, device_at_best = trained, device_s  # the first trial to reach the best
    timed = [r for r in records if r.status != Status.INFEASIBLE]
    wall = (max(r.finished_at for r in timed) - min(r.started_at for r in timed)) \
        if timed else 0.0
    row = {"run": str(run_dir), "searcher": config.get("search", {}).get("searcher"),
           "objectives": [str(o) for o in goal.objectives],
           "constraints": [str(c) for c in goal.constraints], "objective": str(primary),
           "budget": config.get("search", {}).get("trials"), "finished": trained,
           **{s.value: sum(r.status == s for r in records)  # trials by status
              for s in (Status.FAILED, Status.PRUNED)},
           Status.INFEASIBLE.value: infeasible, "best": best,
           "best_val_acc": None if best_acc is None else trial_score(best_acc),
           "trials_to_best": best_at,
           "device_hours_to_best": None if device_at_best is None else device_at_best / 3600,
           "device_hours": device_s / 3600, "wall_s": wall,
           "front_size": None, "hypervolume": None, "reference": None,
           **_best_cell(best_record),
           # what a published table says of the best record's cell (nasforge.tables.judge;
           # one-shot runs on a space with a table record it)
           **{k: None if best_record is None else best_record.metrics.get(k)
              for k in TABLE_COLUMNS}}
    if goal.multi:
        point = goal.reference_point(records, given=reference)
        row["front_size"] = len(goal.front(records))
        if point is not None:
            row["reference"] = {o.name: v for o, v in zip(goal.objectives, point)}
            row["hypervolume"] = goal.hypervolume(records, point)
    return row


def _best_cell(record) -> dict:
    """``best_cell`` (a NAS-Bench-201 cell's string, in runs old and new) and
    ``best_arch_index`` (the table's, where the search loaded one) of the best record; None
    each for other architectures."""
    cell = None if record is None else stored_cell(record.arch)
    return {"best_cell": cell and cell[0], "best_arch_index": cell and cell[1]}


TABLE_COLUMNS = ("table_test_acc", "table_percentile")  # shown when a run has them


def _reference_origin(name: str) -> str:
    return "its worst possible value" if METRICS[name].bound is not None else \
        "its worst value over these runs"


def tensorboard_command(runs: list[str]) -> str:
    parents = {str(Path(r).resolve().parent) for r in runs}
    if len(parents) == 1:
        parent = parents.pop()
        rel = os.path.relpath(parent)
        return f"tensorboard --logdir {parent if rel.startswith('..') else rel}"
    spec = ",".join(f"{Path(r).name}:{r}" for r in runs)
    return f"tensorboard --logdir_spec {spec}"


def _parse_reference(text: str | None) -> dict[str, float]:
    out = {}
    for item in (text or "").split(",") if text else []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in METRICS:
            raise UsageError(f"--reference {text!r}: give NAME=VALUE pairs with NAME one of "
                             f"{', '.join(METRICS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise UsageError(f"--reference {text!r}: {value!r} is not a number") from None
    return out


def _cell_text(row: dict) -> str:
    if not row["best_cell"]:
        return "-"
    index = row["best_arch_index"]
    return row["best_cell"] + ("" if index is None else f" (arch_index {index})")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if abs(v) < 1e3 else f"{v:.4g}"


def run(args) -> int:
    for r in args.runs:
        if not is_run(r):
            raise UsageError(f"{r} is not a search run folder (no config.json/trials.jsonl)")
    given = _parse_reference(args.reference)
    reference = shared_reference([_load(r)[1:] for r in args.runs], given)
    rows = [summarize(r, reference) for r in args.runs]
    if args.json:
        print(json.dumps(rows))
        return 0
    pareto = any(row["front_size"] is not None for row in rows)
    infeasible = any(row[Status.INFEASIBLE] for row in rows)
    cells = any(row["best_cell"] for row in rows)
    objectives = sorted({row["objective"] for row in rows})
    one_objective = len(objectives) == 1
    head = ["run", "searcher", "finished", str(Status.FAILED)] \
        + ([str(Status.INFEASIBLE)] if infeasible else []) \
        + ([f"best {objectives[0].split(':')[0]}"] if one_objective else ["objective", "best"]) \
        + ["trials to best", "device-h to best", "wall"] \
        + (["front", "hypervolume"] if pareto else []) \
        + (["best cell"] if cells else [])
    judged = any(row["table_test_acc"] is not None for row in rows)
    head += ["table test %", "percentile"] if judged else []
    table = [head]
    for row in rows:
        dh = "-" if row["device_hours_to_best"] is None else f"{row['device_hours_to_best']:.3f}"
        table.append([Path(row["run"]).name, str(row["searcher"]),
                      f"{row['finished']}/{row['budget']}", str(row[Status.FAILED])]
                     + ([str(row[Status.INFEASIBLE])] if infeasible else [])
                     + ([] if one_objective else [row["objective"]])
                     + [_fmt(row["best"]), str(row["trials_to_best"] or "-"), dh,
                        f"{row['wall_s'] / 60:.1f} min"]
                     + ([str(row["front_size"] or "-"), _fmt(row["hypervolume"])]
                        if pareto else [])
                     + ([_cell_text(row)] if cells else [])
                     + ([_fmt(row["table_test_acc"]), _fmt(row["table_percentile"])]
                        if judged else []))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if pareto:
        refs = {k: v for row in rows for k, v in (row["reference"] or {}).items()}
        print()
        print("hypervolume reference point: " + ", ".join(
            f"{k}={_fmt(v)} ({'given' if k in given else _reference_origin(k)})"
            for k, v in refs.items()))
    print()
    print(tensorboard_command(args.runs))
    return 0
