"""Ranking quality of a trained supernet on NAS-Bench-201, judged by the table (no training).

    python benchmarks/bench_oneshot_table_ranking.py --runs RUN [RUN ...] [--data PATH]
        [--cells 200] [--validation-images N] [--recal-batches 10] [--recal-batch-size 128]
        [--top 10] [--seed 0] [--threads 1] [--device cpu] [--out ranking.json]

1. Loads each one-shot run folder's trained supernet by the library's own code
   (``nasforge.oneshot.ranking.load_trained_supernet``: the run's space, macro, seed and
   validation split, the weights of its checkpoint.pt); ``--data`` replaces the data path the
   run saved with another copy of the same data set.
2. Draws ``--cells`` distinct cells uniformly from the space's 15,625 (seeded numpy generator,
   the same cells for every run; ``distinct_random_archs``).
3. Scores each on the supernet with ``SupernetEvaluator`` (its path's validation accuracy
   after BN recalibration on ``--recal-batches`` x ``--recal-batch-size`` fixed training
   images, spos' search-phase evaluator; ``--validation-images``: a fixed subset of the run's
   validation split, all of it by default).
4. Looks each cell up in the packaged 12-epoch table (``nasforge.tables``) and reports Kendall
   tau and Spearman rho (scipy.stats) between the supernet's accuracies and the table's
   12-epoch validation accuracy (and test accuracy), and the top-``--top`` overlap: how many of
   the supernet's ``--top`` best cells are among the table's ``--top`` best of the sampled
   cells (``ranking_agreement``).

Progress goes to stderr; one JSON object (settings, per-run correlations, per-cell rows) to
stdout and to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nasforge.oneshot import SupernetEvaluator
from nasforge.oneshot.ranking import (distinct_random_archs, load_trained_supernet,
                                      ranking_agreement)
from nasforge.search_spaces.nas_bench_201 import format_cell
from nasforge.tables import hp12_columns, load_table
from nasforge.tables.judge import table_judge


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True,
                        help="trained one-shot run folders on nas-bench-201 (read only)")
    parser.add_argument("--data", default=None,
                        help="another copy of the runs' data set (default: the path they saved)")
    parser.add_argument("--cells", type=int, default=200, help="random cells ranked")
    parser.add_argument("--validation-images", type=int, default=None,
                        help="fixed subset of the run's validation split (default: all of it)")
    parser.add_argument("--recal-batches", type=int, default=10)
    parser.add_argument("--recal-batch-size", type=int, default=128)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    table = load_table()

    results, rows_by_cell, archs = [], {}, None
    for run_dir in args.runs:
        t = time.perf_counter()
        trained = load_trained_supernet(run_dir, data=args.data)
        space = trained.space
        if table_judge(space) is None:
            sys.exit(f"bench_oneshot_table_ranking: {run_dir} searched {space.name}, which has "
                     f"no table")
        if archs is None:
            archs = distinct_random_archs(space, args.cells, np.random.default_rng(args.seed))
            val_column, test_column = hp12_columns(space.dataset)
            judge = table_judge(space)
            truths_val = [table.lookup(a)[val_column] for a in archs]
            truths_test = [table.lookup(a)[test_column] for a in archs]
            for a, v, s in zip(archs, truths_val, truths_test):
                rows_by_cell[format_cell(a)] = {"cell": format_cell(a), "table_val_acc": v,
                                                "table_test_acc": s}
        evaluator = SupernetEvaluator(
            trained.supernet, trained.data, recalibration_batches=args.recal_batches,
            batch_size=args.recal_batch_size, device=args.device,
            generator=torch.Generator().manual_seed(args.seed),
            validation_images=args.validation_images)
        load_s = time.perf_counter() - t
        name = f"{trained.config.searcher} ({Path(run_dir).name})"
        progress(f"{name}: loaded in {load_s:.0f} s, scoring {len(archs)} cells on "
                 f"{evaluator.validation_size} validation images")
        t = time.perf_counter()
        scores = []
        for i, arch in enumerate(archs):
            scores.append(evaluator.evaluate(arch)["val_acc"])
            rows_by_cell[format_cell(arch)][name] = scores[-1]
            if (i + 1) % 20 == 0:
                progress(f"  {i + 1}/{len(archs)} cells, {time.perf_counter() - t:.0f} s")
        score_s = time.perf_counter() - t
        best = max(range(len(archs)), key=lambda i: (scores[i], -i))
        result = {
            "run": str(run_dir), "method": trained.config.searcher,
            "epochs_trained": trained.epoch,
            "macro": json.loads((Path(run_dir) / "config.json").read_text())["macro"],
            "validation_images": evaluator.validation_size,
            "vs_table_val": ranking_agreement(scores, truths_val, args.top),
            "vs_table_test": ranking_agreement(scores, truths_test, args.top),
            "supernet_acc_mean": float(np.mean(scores)),
            "supernet_acc_min": float(np.min(scores)), "supernet_acc_max": float(np.max(scores)),
            "supernet_best_cell": format_cell(archs[best]),
            "supernet_best_cell_table": judge(archs[best]),
            "load_s": load_s, "score_s": score_s, "score_s_per_cell": score_s / len(archs)}
        results.append(result)
        r = result["vs_table_val"]
        progress(f"{name}: Kendall tau {r['kendall_tau']:.3f} (p {r['kendall_p']:.2g}), "
                 f"Spearman {r['spearman_rho']:.3f}, top-{r['top']} overlap "
                 f"{r['top_overlap']}/{r['top']} vs the table's 12-epoch validation accuracy; "
                 f"{score_s / 60:.1f} min")

    # the table's own agreement between its validation and test columns: the noise floor
    table_self = ranking_agreement(truths_val, truths_test, args.top)
    summary = {
        "command": " ".join(sys.argv),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "threads": torch.get_num_threads(), "table": table.source,
        "table_val_vs_test": table_self,
        "sampled_table_val_acc": {"mean": float(np.mean(truths_val)),
                                  "min": float(np.min(truths_val)),
                                  "max": float(np.max(truths_val))},
        "runs": results, "total_s": time.perf_counter() - t_start,
        "cells": list(rows_by_cell.values()),
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
