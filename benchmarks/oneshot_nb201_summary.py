"""Summarize one-shot searches of NAS-Bench-201's space (run folders of ``nasforge search
--space nas-bench-201 --searcher M``) as the table judges them: per run the method, seed, the
result cell (the last epoch's derived cell; spos: its search phase's best), its 12-epoch
table accuracy and percentile, its 200-epoch figure where the shipped sample holds it, the
wall time and the skip share of each epoch's derived cell.

    python benchmarks/oneshot_nb201_summary.py RUN [RUN ...] --json benchmarks/results/X.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nasforge.search.run_folder import RunFolder, best_trial
from nasforge.search_spaces import NasBench201Space
from nasforge.search_spaces.nas_bench_201 import parse_cell
from nasforge.tables.judge import table_judge


def summarize(run_dir: str) -> dict:
    run = RunFolder.open(run_dir)
    config = run.config()
    lines = [json.loads(t) for t in (Path(run_dir) / "trajectory.jsonl").read_text().splitlines()]
    records = run.trials()
    phase = [r for r in records if r.get("origin", {}).get("phase") == "search"]
    # the result: spos' search-phase best; the others' last epoch's derived cell
    cell = best_trial(phase)["arch"]["name"] if phase else lines[-1]["cell_string"]
    judge = table_judge(NasBench201Space(config["space"].get("dataset", "cifar10")))
    wall = max(r["finished_at"] for r in records) - min(r["started_at"] for r in records)
    return {"run": run_dir, "method": config["search"]["searcher"],
            "seed": config["search"]["seed"], "epochs": config["epochs"],
            "options": config["search"]["searcher_options"], "cell": cell,
            **judge(parse_cell(cell)), "wall_s": wall,
            "skip_share_per_epoch": [ln["skip_share"] for ln in lines],
            "parameter_free_share_per_epoch": [ln["parameter_free_share"] for ln in lines],
            "table_test_acc_per_epoch": [ln["table_test_acc"] for ln in lines],
            "entropy_per_epoch": [ln["entropy"] for ln in lines]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    rows = [summarize(r) for r in args.runs]
    print("| method | seed | cell | 12-ep test % | percentile | 200-ep val % | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | `{r['cell']}` | {r['table_test_acc']:.2f} | "
              f"{r['table_percentile']:.1f} | {r.get('table_val_acc_200ep', '-')} | "
              f"{r['wall_s'] / 60:.1f} min |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
