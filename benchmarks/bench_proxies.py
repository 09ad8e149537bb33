"""Zero-cost proxies on NAS-Bench-201's 200-epoch CIFAR-10 sample: nasforge's scores against the
accuracy and against NASLib's scores of the same cells.

For each cell of the sample (``nasforge.tables.load_sample("cifar10")``; a seeded random
subset with ``--cells N``), build NAS-Bench-201's network with nasforge's compiler (weights
from ``--seed``), score it with every proxy on one batch of real CIFAR-10 training images
(``nasforge.proxies.data_batch``: ``--batch-size`` images drawn by ``--seed``), and time each
proxy (CPU seconds of this process). Report per proxy: Spearman with ``val_acc_200ep``, the
same for NASLib's score of the same cells (the sample holds them), Spearman between the two,
and seconds per cell. Per-cell scores go to a JSONL file as they come (a rerun resumes).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_proxies.py --data DIR --cells 200 \\
        --out benchmarks/results/proxies_nb201_cifar10.json
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from nasforge.api import resolve
from nasforge.data import load_data
from nasforge.proxies import BATCH_SIZE, PROXIES, build_network, data_batch, score
from nasforge.search_spaces.nas_bench_201 import format_cell, parse_cell
from nasforge.tables import load_sample
from nasforge.tables.nas_bench_201 import SAMPLE_FILE

# nasforge's proxy -> the sample's field of NASLib's score of it (params, flops: the table's)
NASLIB_NAMES = {"synflow": "synflow", "snip": "snip", "grasp": "grasp", "fisher": "fisher",
                "grad_norm": "grad_norm", "jacob_cov": "jacov", "nwot": "nwot",
                "params": "params_M", "flops": "flops_M"}
# Spearman with final accuracy on NAS-Bench-201 CIFAR-10 published by the papers (all 15,625
# cells, Abdelfattah et al. 2021; NASWOT and params: NASLib's sample, NAS-Bench-Suite-Zero)
ANCHORS = {"synflow": 0.737, "jacob_cov": 0.731, "snip": 0.596, "grad_norm": 0.594,
           "grasp": 0.514, "fisher": 0.36, "nwot": 0.79, "params": 0.74}


def naslib_scores(dataset: str = "cifar10") -> dict[str, dict]:
    """cell string -> NASLib's scores (and the sample's params_M, flops_M)."""
    records = json.loads(gzip.decompress(SAMPLE_FILE.read_bytes()))
    out = {}
    for r in records:
        if r["dataset"] == dataset:
            out[format_cell(parse_cell(r["cell"]))] = {**r["proxies"], "params_M": r["params_M"],
                                                       "flops_M": r["flops_M"]}
    return out


def spearman(a, b) -> float | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a = np.where(np.isfinite(a), a, np.nanmin(np.where(np.isfinite(a), a, np.nan)) - 1)
    rho = spearmanr(a, b).statistic
    return None if not math.isfinite(rho) else round(float(rho), 4)


def agreement(done: dict, other_file: Path, reference: dict, names) -> dict:
    """Per proxy: Spearman between two runs' scores (``done`` and ``other_file``'s) on the
    cells both scored, and each run's with NASLib's score of the same cells."""
    other = {}
    for line in other_file.read_text().splitlines():
        rec = json.loads(line)
        other[rec["cell"]] = rec
    common = [c for c in other if c in done]
    out = {"other": str(other_file), "cells": len(common)}
    for name in names:
        if not all(name in other[c]["scores"] for c in common) or not common:
            continue
        mine = [done[c]["scores"][name] for c in common]
        theirs = [other[c]["scores"][name] for c in common]
        naslib = [reference[c][NASLIB_NAMES[name]] for c in common]
        clean = [[-math.inf if v is None else v for v in vs] for vs in (mine, theirs)]
        out[name] = {"spearman_between_runs": spearman(*clean),
                     "this_with_naslib": spearman(clean[0], naslib),
                     "other_with_naslib": spearman(clean[1], naslib)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="CIFAR-10 (an ImageFolder tree or python copy)")
    p.add_argument("--cells", type=int, default=None, help="a seeded random subset (all: none)")
    p.add_argument("--seed", type=int, default=0, help="draws the weights and the batch")
    p.add_argument("--subset-seed", type=int, default=0, help="draws the subset of --cells")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--proxies", default=",".join(PROXIES))
    p.add_argument("--out", default="benchmarks/results/proxies_nb201_cifar10.json")
    p.add_argument("--agreement", metavar="CELLS_JSONL", default=None,
                   help="with --summary-only: also Spearman, per proxy, between this run's "
                        "scores and another run's (another --seed: weights and batch) on the "
                        "cells both scored, next to each one's with NASLib's")
    p.add_argument("--summary-only", action="store_true",
                   help="score nothing: summarize the cells of the subset already scored")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = args.proxies.split(",")
    table = load_sample("cifar10")
    rows = list(table)
    if args.cells is not None and args.cells < len(rows):
        pick = np.random.default_rng(args.subset_seed).choice(len(rows), args.cells,
                                                              replace=False)
        rows = [rows[i] for i in sorted(pick)]
    reference = naslib_scores("cifar10")
    t0 = time.time()
    splits = load_data(args.data, split="search", seed=args.seed)
    batch = data_batch(splits, args.batch_size, args.seed)
    print(f"data: {splits.source} ({time.time() - t0:.0f} s)", file=sys.stderr)
    chosen = len(rows)
    cells_file = Path(args.out).with_suffix(".cells.jsonl")
    done = {}
    if cells_file.exists():
        for line in cells_file.read_text().splitlines():
            rec = json.loads(line)
            done[rec["cell"]] = rec
    with cells_file.open("a") as f:
        for k, row in enumerate(rows):
            if row["cell"] in done or args.summary_only:
                continue
            arch, config = resolve(row["cell"], dataset="cifar10")
            model = build_network(arch, config, args.seed)
            rec = {"cell": row["cell"], "arch_index": row["arch_index"], "scores": {},
                   "cpu_s": {}}
            for name in names:
                c0 = time.process_time()
                value = score(name, model, batch, args.seed)
                rec["cpu_s"][name] = round(time.process_time() - c0, 4)
                rec["scores"][name] = value if math.isfinite(value) else None
            f.write(json.dumps(rec) + "\n")
            f.flush()
            done[row["cell"]] = rec
            print(f"[{k + 1}/{len(rows)}] {row['cell']} "
                  f"{sum(rec['cpu_s'].values()):.1f} s", file=sys.stderr)
    rows = [row for row in rows if row["cell"] in done]
    recs = [done[row["cell"]] for row in rows]
    acc = [row["val_acc_200ep"] for row in rows]
    result = {"what": "zero-cost proxies, NAS-Bench-201 CIFAR-10 200-epoch sample",
              "cells": len(rows), "cells_chosen": chosen, "sample_cells": len(table),
              "seed": args.seed,
              "batch_size": args.batch_size, "data": splits.source,
              "torch_threads": torch.get_num_threads(), "proxies": {}}
    for name in names:
        ours = [r["scores"][name] if r["scores"][name] is not None else -math.inf for r in recs]
        theirs = [reference[row["cell"]][NASLIB_NAMES[name]] for row in rows]
        result["proxies"][name] = {
            "spearman_val_acc": spearman(ours, acc),
            "naslib_spearman_val_acc": spearman(theirs, acc),
            "anchor": ANCHORS.get(name),
            "spearman_with_naslib": spearman(ours, theirs),
            "cpu_s_per_cell": round(float(np.mean([r["cpu_s"][name] for r in recs])), 4),
            "degenerate_cells": sum(r["scores"][name] is None for r in recs)}
    if args.agreement:
        result["agreement"] = agreement(done, Path(args.agreement), reference, names)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["proxies"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
