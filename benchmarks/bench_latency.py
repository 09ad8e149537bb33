"""Per-op latency table vs measured latency of random cells (issue 13, part 3).

    python benchmarks/bench_latency.py [--space nasnet] [--setting mobile] [--cells 50]
        [--calibration 5] [--seed 0] [--threads 1] [--clock wall|cpu] [--repeats 7]
        [--table table.json] [--json-out results.json]

1. Builds the space's latency table on this CPU (or reads ``--table``) and reports how long
   building took.
2. Draws ``--calibration`` + ``--cells`` distinct random architectures of the space with a
   seeded ``numpy`` RNG (calibration cells first, so the two sets are disjoint), compiles each
   at the setting (mobile: 224 px) and measures it at batch 1 with ``measure_latency``.
3. Predicts each test cell four ways: (a) ops + fixed parts (stem, input adjustments, output
   reductions, head); (b) (a) + combines and output concatenations; (c) (b) + a per-part
   overhead, or (d) (b) x a factor, each fitted on the calibration cells
   (``nasforge.latency.calibrate``).
4. Prints the median absolute percentage error of each (target <= 15%), the 10th/90th
   percentiles of the signed error, and the Spearman rank correlation of predicted and measured
   latency (what a search needs to rank children).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time

import numpy as np

from nasforge.api import compile_architecture, resolve
from nasforge.latency import build_table, calibrate, load_table, measure_latency
from nasforge.latency.table import CALIBRATIONS, predict_parts
from nasforge.search_spaces import get_space

WITHOUT_COMBINES = ("op", "stem", "pre0", "pre1", "adapt", "head")


def draw_cells(space, count: int, rng: np.random.Generator) -> list:
    """``count`` random cell pairs with distinct canonical hashes, in draw order."""
    pairs, seen = [], set()
    while len(pairs) < count:
        pair = space.to_graph(space.sample(rng), name=f"cell_{len(pairs)}")
        if pair.canonical_hash() not in seen:
            seen.add(pair.canonical_hash())
            pairs.append(pair)
    return pairs


def measure(pair, setting, args) -> float:
    arch, config = resolve(pair, setting)
    model = compile_architecture(arch, config)
    result = measure_latency(model, (config.in_channels, config.input_size, config.input_size),
                             threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                             clock=args.clock)
    return result.median_ms


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def errors(predicted, measured) -> dict:
    signed = [(p - m) / m * 100 for p, m in zip(predicted, measured)]
    return {"median_abs_pct": round(statistics.median(abs(e) for e in signed), 2),
            "signed_pct_p10": round(float(np.percentile(signed, 10)), 2),
            "signed_pct_median": round(statistics.median(signed), 2),
            "signed_pct_p90": round(float(np.percentile(signed, 90)), 2),
            "spearman": round(spearman(predicted, measured), 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="nasnet")
    p.add_argument("--setting", default="mobile")
    p.add_argument("--cells", type=int, default=50)
    p.add_argument("--calibration", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--table", help="read this table instead of building one")
    p.add_argument("--save-table", help="write the built table here")
    p.add_argument("--json-out", help="write per-cell results here")
    args = p.parse_args(argv)
    command = "python benchmarks/bench_latency.py " + " ".join(map(shlex.quote, argv or
                                                                   sys.argv[1:]))
    space = get_space(args.space)
    if args.table:
        table = load_table(args.table, device="cpu", threads=args.threads)
    else:
        table = build_table(args.space, args.setting, threads=args.threads, clock=args.clock,
                            seed=args.seed)
        if args.save_table:
            table.save(args.save_table)
    print(f"table: {len(table.entries)} entries, built in {table.build_seconds:.0f} s "
          f"({table.device_name}, torch {table.torch_version}, {table.threads} thread(s), "
          f"{table.clock} clock)", flush=True)

    pairs = draw_cells(space, args.calibration + args.cells, np.random.default_rng(args.seed))
    calibration, test = pairs[:args.calibration], pairs[args.calibration:]
    start = time.perf_counter()
    calibration_ms = [measure(pair, args.setting, args) for pair in calibration]
    fitted = {model: calibrate(table, calibration, calibration_ms, model)
              for model in CALIBRATIONS}
    print(f"calibration: {len(calibration)} cells, {fitted['per_part'].per_part_ms * 1e3:.1f} "
          f"us per part, or a factor {fitted['scale'].scale:.3f}", flush=True)

    rows = []
    for i, pair in enumerate(test):
        priced = predict_parts(pair, table)
        ops_fixed = sum(ms for part, ms in priced if part.kind in WITHOUT_COMBINES)
        all_parts = sum(ms for _, ms in priced)
        per_part = all_parts + fitted["per_part"].per_part_ms * len(priced)
        scaled = all_parts * fitted["scale"].scale
        measured = measure(pair, args.setting, args)
        rows.append({"cell": i, "hash": pair.canonical_hash()[:12], "measured_ms": measured,
                     "ops_fixed_ms": ops_fixed, "all_parts_ms": all_parts,
                     "per_part_ms": per_part, "scale_ms": scaled, "parts": len(priced)})
        print(f"{i:3d} measured {measured:8.1f}  ops+fixed {ops_fixed:8.1f}  +combines "
              f"{all_parts:8.1f}  +per-part {per_part:8.1f}  x scale {scaled:8.1f} ms",
              flush=True)
    measured = [r["measured_ms"] for r in rows]
    summary = {"command": command, "space": args.space, "setting": args.setting,
               "cells": len(rows), "calibration_cells": len(calibration),
               "table_entries": len(table.entries),
               "table_build_seconds": round(table.build_seconds, 1),
               "measure_seconds": round(time.perf_counter() - start, 1),
               "device_name": table.device_name, "threads": args.threads, "clock": args.clock,
               "repeats": args.repeats,
               "per_part_us": round(fitted["per_part"].per_part_ms * 1e3, 2),
               "scale_factor": round(fitted["scale"].scale, 4),
               "calibration_measured_ms": [round(m, 2) for m in calibration_ms],
               "measured_ms_median": round(statistics.median(measured), 1)}
    for name in ("ops_fixed", "all_parts", "per_part", "scale"):
        summary[name] = errors([r[f"{name}_ms"] for r in rows], measured)
    print(json.dumps(summary, indent=1))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump({"summary": summary, "cells": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
