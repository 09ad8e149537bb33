"""Search-runner overhead on Ray Tune: per-trial overhead and whole-search efficiency.

    python benchmarks/bench_search.py [--trials 20] [--epochs 2] [--train-subset 2000]

Runs a random search of ``--trials`` tiny NASNet children (N=1, F=8, synthetic data; about 20 s
each on one core of this 2-core machine with the defaults) with one CPU per trial on a local
Ray started here, then reads ``trials.jsonl``:

* per-trial overhead = trial wall time as the driver sees it (Ray asks the searcher -> the
  result is back) minus the time inside ``nasforge.train.train``; target median <= 1.5 s;
* search efficiency = search wall time / (sum of trial wall times / concurrency); target <=
  1.15 (Ray's own start-up is measured separately and excluded).

Prints one JSON object. Needs an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=2000, help="training images per child")
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--cpus", type=int, default=2, help="CPUs given to Ray (one per trial)")
    p.add_argument("--runs-dir", help="keep the run here (default: a temporary folder)")
    args = p.parse_args(argv)

    import ray

    from nasforge.search import SearchConfig, read_trials
    from nasforge.search.runner import run_search
    from nasforge.train import get_recipe
    from nasforge.train.recipes import register_recipe

    register_recipe(get_recipe("smoke").replace(name="bench-search", epochs=args.epochs,
                            train_subset=args.train_subset, val_size=args.val_size))
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="nasforge-bench-search-"))
    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    ray_start_s = time.perf_counter() - t
    try:
        config = SearchConfig(searcher="random", trials=args.trials, recipe="bench-search",
                              data="synthetic", gpus=0, cpus_per_trial=1, seed=0)
        t = time.perf_counter()
        run_search(config, runs / "bench", on_progress=lambda pr: print(
            f"{pr.finished}/{pr.budget} trials", file=sys.stderr, flush=True))
        search_s = time.perf_counter() - t
    finally:
        ray.shutdown()
    records = read_trials(runs / "bench")
    walls = [r["wall_s"] for r in records]
    overheads = [r["wall_s"] - r["train_s"] for r in records]
    concurrency = args.cpus
    ideal = sum(walls) / concurrency
    out = {"trials": len(records), "ok": sum(r["status"] == "ok" for r in records),
           "concurrency": concurrency, "ray_start_s": round(ray_start_s, 2),
           "median_trial_wall_s": round(statistics.median(walls), 2),
           "median_train_s": round(statistics.median(r["train_s"] for r in records), 2),
           "median_overhead_s": round(statistics.median(overheads), 3),
           "max_overhead_s": round(max(overheads), 3),
           "search_wall_s": round(search_s, 1), "ideal_wall_s": round(ideal, 1),
           "efficiency_ratio": round(search_s / ideal, 3), "run_dir": str(runs / "bench")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
