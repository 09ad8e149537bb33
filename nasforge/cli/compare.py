"""``nasforge compare RUN [RUN ...]``: one table of search runs, plus the TensorBoard command."""
from __future__ import annotations

import json
import os
from pathlib import Path


def register(sub):
    p = sub.add_parser("compare", help="compare search runs (table + TensorBoard command)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="search run folders")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run=run)


def summarize(run_dir) -> dict:
    """One row: searcher, finished/failed trials, best accuracy, trials and device-hours
    needed to reach the best (in finishing order), wall time (first start to last finish)."""
    from nasforge.search.run_folder import RunFolder, best_trial, device_seconds, trial_score

    run = RunFolder.open(run_dir)
    config = run.config()
    records = sorted(run.trials(), key=lambda r: r.get("finished_at", 0))
    best_record = best_trial(records)
    best = None if best_record is None else trial_score(best_record)
    best_at, device_at_best, device_s = None, None, 0.0
    for i, r in enumerate(records, 1):
        device_s += device_seconds(r)
        if best_at is None and best is not None and trial_score(r) == best:
            best_at, device_at_best = i, device_s  # the first trial to reach the best score
    wall = (max(r["finished_at"] for r in records) - min(r["started_at"] for r in records)) \
        if records else 0.0
    return {"run": str(run_dir), "searcher": config.get("search", {}).get("searcher"),
            "budget": config.get("search", {}).get("trials"), "finished": len(records),
            "failed": sum(r["status"] == "failed" for r in records),
            "pruned": sum(r["status"] == "pruned" for r in records),
            "best_val_acc": best, "trials_to_best": best_at,
            "device_hours_to_best": None if device_at_best is None else device_at_best / 3600,
            "device_hours": device_s / 3600, "wall_s": wall}


def tensorboard_command(runs: list[str]) -> str:
    parents = {str(Path(r).resolve().parent) for r in runs}
    if len(parents) == 1:
        parent = parents.pop()
        rel = os.path.relpath(parent)
        return f"tensorboard --logdir {parent if rel.startswith('..') else rel}"
    spec = ",".join(f"{Path(r).name}:{r}" for r in runs)
    return f"tensorboard --logdir_spec {spec}"


def run(args) -> int:
    from nasforge.search.run_folder import is_run

    from nasforge.cli import UsageError

    for r in args.runs:
        if not is_run(r):
            raise UsageError(f"{r} is not a search run folder (no config.json/trials.jsonl)")
    rows = [summarize(r) for r in args.runs]
    if args.json:
        print(json.dumps(rows))
        return 0
    head = ["run", "searcher", "finished", "failed", "best val_acc", "trials to best",
            "device-h to best", "wall"]
    table = [head]
    for row in rows:
        best = "-" if row["best_val_acc"] is None else f"{row['best_val_acc']:.4f}"
        dh = "-" if row["device_hours_to_best"] is None else f"{row['device_hours_to_best']:.3f}"
        table.append([Path(row["run"]).name, str(row["searcher"]),
                      f"{row['finished']}/{row['budget']}", str(row["failed"]), best,
                      str(row["trials_to_best"] or "-"), dh, f"{row['wall_s'] / 60:.1f} min"])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for i, r in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print(tensorboard_command(args.runs))
    return 0
