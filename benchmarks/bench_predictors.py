"""Performance predictors on NAS-Bench-201's 200-epoch sample: rank correlation on held-out
cells against the number of training cells.

    python benchmarks/bench_predictors.py [--dataset cifar10] [--sizes 10,30,100,400]
        [--seeds 5] [--predictors a,b] [--own-proxies CELLS.jsonl] [--out PATH] [--json]

For each seed the sample's cells (``nasforge.tables.load_sample``: 724 on CIFAR-10) are
shuffled once; the test set is every cell outside the first ``max(sizes)`` (324 on
CIFAR-10), the same for every training size, and the first n cells are the training set.
Every registered predictor (``nasforge.predictors.PREDICTORS``, each on its own encoding) is
fitted on ``val_acc_200ep`` of the training cells, without and with proxy features, and
scored by Spearman's rho and Kendall's tau between its predicted mean and the held-out
cells' ``val_acc_200ep``.

Proxy features: the zero-cost scores that NASLib's implementation computed for each cell,
stored in the sample file (``proxies``: synflow, snip, grasp, fisher, grad_norm, jacov, nwot,
epe_nas, l2_norm, plain) plus its ``params_M`` and ``flops_M``: 12 columns, NAS-Bench-Suite-
Zero's proxies less zen (not in the file). nasforge's own proxies are not used here. A
non-finite score (NASLib's nwot is -inf for one CIFAR-10 cell) is replaced by its column's
finite minimum, keeping the cell's rank.

``--own-proxies CELLS.jsonl`` (the per-cell file of ``benchmarks/bench_proxies.py``, e.g.
``benchmarks/results/proxies_nb201_cifar10.cells.jsonl``: 200 cells) restricts the sample to
the cells it scores and adds a third feature set, nasforge's own scores of those cells (its
9 proxies: synflow, snip, grasp, fisher, grad_norm, jacob_cov, nwot, params, flops), next to
none and NASLib's on the same cells and splits. Each run's ``features`` says which
(``none``, ``naslib``, ``nasforge``).

Anchor: NAS-Bench-Suite-Zero (Krishnakumar et al. 2022) report Spearman 0.941 for XGBoost on
all proxies (plus the encoding) with 400 training cells on NAS-Bench-201 CIFAR-10.
Needs scipy (the test extra). Times in seconds; one thread.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nasforge.predictors import PREDICTORS, encode, get_predictor  # noqa: E402
from nasforge.search_spaces import NasBench201Space  # noqa: E402
from nasforge.search_spaces.nas_bench_201 import format_cell, parse_cell  # noqa: E402
from nasforge.tables import SAMPLE_DATASETS, load_sample  # noqa: E402
from nasforge.tables.nas_bench_201 import SAMPLE_FILE  # noqa: E402

NASLIB_PROXIES = ("synflow", "snip", "grasp", "fisher", "grad_norm", "jacov", "nwot",
                  "epe_nas", "l2_norm", "plain")
COUNTS = ("params_M", "flops_M")
ANCHOR = {"source": "NAS-Bench-Suite-Zero (Krishnakumar et al. 2022), XGBoost on all proxies, "
                    "400 training cells, NAS-Bench-201 CIFAR-10", "spearman": 0.941}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "predictors_nb201_{dataset}.json"


def naslib_scores(dataset: str) -> dict[str, list[float]]:
    """NASLib's proxy scores of each cell of the sample file (``load_sample`` keeps only the
    accuracy and the counts), keyed by the normalised cell string. Read here until nasforge's
    proxies package exposes them."""
    records = json.loads(gzip.decompress(SAMPLE_FILE.read_bytes()))
    return {format_cell(parse_cell(r["cell"])): [float(r["proxies"][p]) for p in NASLIB_PROXIES]
            for r in records if SAMPLE_DATASETS.get(r["dataset"]) == dataset}


def finite(features: np.ndarray) -> np.ndarray:
    """Non-finite scores (NASLib's nwot is -inf for one CIFAR-10 cell) replaced by their
    column's finite minimum (-inf) or maximum (+inf): the cell keeps its rank."""
    out = features.copy()
    for j in range(out.shape[1]):
        col = out[:, j]
        ok = np.isfinite(col)
        col[col == -np.inf] = col[ok].min()
        col[col == np.inf] = col[ok].max()
        col[np.isnan(col)] = np.median(col[ok])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cifar10", choices=sorted(SAMPLE_DATASETS.values()))
    parser.add_argument("--sizes", default="10,30,100,400")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--predictors", default=",".join(PREDICTORS))
    parser.add_argument("--own-proxies", default=None, metavar="CELLS.jsonl",
                        help="restrict to the cells nasforge's proxies scored (bench_proxies' "
                             "per-cell file) and add their scores as a third feature set")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/"
                                                    "predictors_nb201_<dataset>.json)")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of a table")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    names = [n for n in args.predictors.split(",") if n]
    space = NasBench201Space(args.dataset)
    rows = list(load_sample(args.dataset))
    scores = naslib_scores(args.dataset)
    own = None
    if args.own_proxies:
        own = {}
        for line in Path(args.own_proxies).read_text().splitlines():
            rec = json.loads(line)
            own[format_cell(parse_cell(rec["cell"]))] = rec["scores"]
        rows = [r for r in rows if r["cell"] in own]
        own_names = sorted(next(iter(own.values())))
    cells = [parse_cell(r["cell"]) for r in rows]
    y = np.array([r["val_acc_200ep"] for r in rows])
    feature_sets = {"none": None, "naslib": finite(np.array(
        [scores[r["cell"]] + [r[c] for c in COUNTS] for r in rows]))}
    if own is not None:
        feature_sets["nasforge"] = finite(np.array(
            [[-np.inf if own[r["cell"]][n] is None else own[r["cell"]][n] for n in own_names]
             for r in rows], dtype=float))
    encodings = {e: encode(space, cells, e) for e in {PREDICTORS[n].encoding for n in names}}
    if max(sizes) >= len(rows):
        parser.error(f"the largest training size must leave test cells ({len(rows)} in all)")
    results = []
    start = time.perf_counter()
    for seed in range(args.seeds):
        order = np.random.default_rng(seed).permutation(len(rows))
        test = order[max(sizes):]
        for n in sizes:
            train = order[:n]
            for name in names:
                x = encodings[PREDICTORS[name].encoding]
                for fs, features in feature_sets.items():
                    with_proxies = features is not None
                    t0 = time.perf_counter()
                    p = get_predictor(name, seed=seed)
                    p.fit(x[train], y[train], features[train] if with_proxies else None)
                    pred = p.predict(x[test], features[test] if with_proxies else None)
                    results.append({
                        "predictor": name, "encoding": p.encoding, "proxies": with_proxies,
                        "features": fs,
                        "train_cells": n, "seed": seed, "test_cells": len(test),
                        "spearman": float(scipy.stats.spearmanr(pred.mean, y[test])[0]),
                        "kendall": float(scipy.stats.kendalltau(pred.mean, y[test])[0]),
                        "mean_std": float(pred.std.mean()),
                        "seconds": round(time.perf_counter() - t0, 3)})
                    print(f"bench: seed {seed} n={n} {name} features={fs}: spearman "
                          f"{results[-1]['spearman']:.3f} ({results[-1]['seconds']:.1f} s)",
                          file=sys.stderr, flush=True)
    summary = []
    for name in names:
        for fs in feature_sets:
            for n in sizes:
                group = [r for r in results if r["predictor"] == name and
                         r["features"] == fs and r["train_cells"] == n]
                summary.append({"predictor": name, "proxies": fs != "none", "features": fs,
                                "train_cells": n,
                                **{f"{m}_{s}": round(float(f([r[m] for r in group])), 4)
                                   for m in ("spearman", "kendall", "seconds")
                                   for s, f in (("mean", np.mean), ("std", np.std))}})
    report = {"dataset": args.dataset, "sample_cells": len(rows), "sizes": sizes,
              "seeds": args.seeds, "proxy_features": list(NASLIB_PROXIES) + list(COUNTS),
              "proxy_source": "NASLib's scores in the 200-epoch sample file",
              **({"own_proxies": {"file": args.own_proxies, "features": own_names}}
                 if own is not None else {}),
              "anchor": ANCHOR, "threads": int(torch.get_num_threads()),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "wall_s": round(time.perf_counter() - start, 1), "summary": summary,
              "runs": results}
    out = Path(args.out or str(DEFAULT_OUT).format(dataset=args.dataset))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"NAS-Bench-201 {args.dataset} 200-epoch sample: {len(rows)} cells, test = "
          f"{len(rows) - max(sizes)} held-out cells, {args.seeds} seeds; Spearman / Kendall "
          f"tau, mean +- std over seeds; anchor {ANCHOR['spearman']} (400 cells, proxies)")
    print("| predictor | proxies | " + " | ".join(f"{n} cells" for n in sizes) + " |")
    print("|---|---" + "|---" * len(sizes) + "|")
    for name in names:
        for fs in feature_sets:
            cells_txt = []
            for n in sizes:
                s = next(r for r in summary if r["predictor"] == name and
                         r["features"] == fs and r["train_cells"] == n)
                cells_txt.append(f"{s['spearman_mean']:.3f} +- {s['spearman_std']:.3f} / "
                                 f"{s['kendall_mean']:.3f}")
            print(f"| {name} | {fs} | " + " | ".join(cells_txt) +
                  " |")
    print(f"wall time {report['wall_s']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
