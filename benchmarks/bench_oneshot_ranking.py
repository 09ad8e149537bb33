"""Ranking quality of the weight-sharing supernet (SPOS) against stand-alone training.

    python benchmarks/bench_oneshot_ranking.py --data /tmp/cifarjpeg [--cells 12]
        [--train-images 2000] [--val-images 1000] [--N 1] [--filters 8] [--blocks 3]
        [--supernet-epochs 8] [--child-epochs 2] [--batch 64] [--recal-batches 10]
        [--search-candidates 20] [--threads 1] [--seed 0] [--out runs/ranking.json]

1. Trains one supernet with a uniformly sampled path per step (single-path one-shot: random
   search with weight sharing; the ``spos`` method's hooks) by the one trainer,
   ``nasforge.train.train``, on a fixed subset of the real training split
   (``--train-images``).
2. Scores ``--cells`` random cells of the same space with ``SupernetEvaluator`` (the path's
   validation accuracy after BN recalibration on ``--recal-batches`` training batches), and,
   for comparison, with the supernet's training-time BN statistics (no recalibration).
3. Trains each cell stand-alone from scratch with one identical short recipe on the same
   images (``--child-epochs``) and takes its validation accuracy.
4. Prints Kendall tau and Spearman rho (scipy.stats) between the supernet's and the
   stand-alone accuracies, plus the evaluator's throughput in candidates per second (a random
   searcher driven by ``search_with_supernet``); the literature's figure is Kendall tau about
   0.2 (Yu et al. 2020, docs/reference.md section 9).

The space is ENAS' micro op set (docs/reference.md section 9: sep 3x3, sep 5x5, avg 3x3, max
3x3, identity, add combine) with B = 3 blocks by default (ENAS has 5; reduced, with the image
counts and epochs, to fit a shared 2-core CPU: the defaults took 57 minutes under a load of
about 8, 1 thread); ``--ops``/``--blocks`` change it.
Progress goes to stderr; one JSON object (settings, per-cell rows, correlations, times) to
stdout and to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from nasforge.controllers import get_searcher
from nasforge.data import DeviceLoader, ImageData, load_data
from nasforge.data.types import fixed_subset_indices
from nasforge.oneshot import PathModel, Supernet, SupernetEvaluator, search_with_supernet
from nasforge.oneshot.methods import OneShotModel, Spos, SposConfig
from nasforge.search_spaces import ENAS_MICRO_OPS, NasNetSpace
from nasforge.train import evaluate, get_recipe, train
from nasforge.zoo import SETTINGS

LITERATURE_KENDALL_TAU = 0.2  # Yu et al. 2020, docs/reference.md section 9


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/cifarjpeg",
                        help="CIFAR-10 (folder, .tar.gz or ImageFolder tree)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--cells", type=int, default=12, help="random cells ranked")
    parser.add_argument("--train-images", type=int, default=2000,
                        help="fixed subset of the training split (supernet and children)")
    parser.add_argument("--val-images", type=int, default=1000,
                        help="validation images held out of the training set")
    parser.add_argument("--N", type=int, default=1)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--ops", default=",".join(ENAS_MICRO_OPS))
    parser.add_argument("--supernet-epochs", type=int, default=8)
    parser.add_argument("--child-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--recal-batches", type=int, default=10)
    parser.add_argument("--search-candidates", type=int, default=20,
                        help="candidates of the throughput measurement (0: skip)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    data = load_data(args.data, split="search", val_size=args.val_images, seed=args.seed,
                     cache_dir=args.cache_dir)
    pick = fixed_subset_indices(len(data.train), args.train_images)
    if pick is not None:  # one fixed subset for the supernet, the recalibration and children
        data = replace(data, train=ImageData(data.train.images[pick], data.train.labels[pick]))
    progress(f"data: {data!r}")
    space = NasNetSpace(num_blocks=args.blocks, ops=tuple(args.ops.split(",")),
                        combines=("add",))
    config = replace(SETTINGS["cifar"], N=args.N, filters=args.filters,
                     num_classes=data.num_classes)
    # One short recipe for both: the search recipe (NASNet child training) shortened.
    base = get_recipe("search").replace(batch_size=args.batch, lr=args.lr)
    supernet_recipe = base.replace(name="ranking-supernet", epochs=args.supernet_epochs)
    child_recipe = base.replace(name="ranking-child", epochs=args.child_epochs)

    torch.manual_seed(args.seed)
    supernet = Supernet(space, config)
    # spos' own training: a uniformly drawn path per step (its derived cell per epoch, one
    # path scored on one validation batch, is not used here)
    model = OneShotModel(supernet)
    spos = Spos(space, model, data, epochs=args.supernet_epochs, seed=args.seed,
                config=SposConfig(derive_candidates=1, derive_batches=1))
    t = time.perf_counter()
    train(model, data, supernet_recipe, device=args.device, seed=args.seed, hooks=spos,
          report=lambda e, m: progress(f"supernet epoch {e}: loss {m['train_loss']:.3f} "
                                       f"acc {m['train_acc']:.3f} ({m['train_s']:.0f} s)"))
    supernet_s = time.perf_counter() - t
    supernet = supernet.to(memory_format=torch.contiguous_format)

    rng = np.random.default_rng(args.seed + 1)
    cells = [space.sample(rng) for _ in range(args.cells)]
    # The supernet's training-time BN statistics, before the evaluator overwrites them.
    val_loader = DeviceLoader(data.val, 500, train=False, device=args.device, mean=data.mean,
                              std=data.std)
    no_recal = [evaluate(PathModel(supernet, arch), val_loader, False,
                         torch.device(args.device))["acc"] for arch in cells]
    evaluator = SupernetEvaluator(supernet, data, recalibration_batches=args.recal_batches,
                                  batch_size=args.batch, device=args.device,
                                  generator=torch.Generator().manual_seed(args.seed))
    t = time.perf_counter()
    oneshot = [evaluator.evaluate(arch)["val_acc"] for arch in cells]
    evaluate_s = (time.perf_counter() - t) / len(cells)
    progress(f"supernet accuracies: {[round(a, 3) for a in oneshot]}")

    throughput = None
    if args.search_candidates > 0:
        searcher = get_searcher("random", space, seed=args.seed)
        t = time.perf_counter()
        search_with_supernet(searcher, evaluator, args.search_candidates)
        throughput = args.search_candidates / (time.perf_counter() - t)

    rows = []
    for i, arch in enumerate(cells):
        torch.manual_seed(args.seed)
        child = supernet.child(arch, inherit=False)
        result = train(child, data, child_recipe, device=args.device, seed=args.seed)
        rows.append({"cell": i, "tokens": [int(v) for v in space.encode(arch)],
                     "supernet_acc": oneshot[i], "supernet_acc_no_recalibration": no_recal[i],
                     "standalone_acc": result["val_acc"], "standalone_s": result["wall_s"],
                     "params": result["params"]})
        progress(f"cell {i}: supernet {oneshot[i]:.3f} (no recal {no_recal[i]:.3f}), "
                 f"stand-alone {result['val_acc']:.3f} ({result['wall_s']:.0f} s)")

    standalone = [r["standalone_acc"] for r in rows]

    def correlations(scores):
        tau = stats.kendalltau(scores, standalone)
        rho = stats.spearmanr(scores, standalone)
        return {"kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
                "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue)}

    summary = {
        "command": " ".join(sys.argv),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "data": repr(data), "threads": torch.get_num_threads(),
        "recalibrated": correlations(oneshot),
        "no_recalibration": correlations(no_recal),
        "literature_kendall_tau": LITERATURE_KENDALL_TAU,
        "supernet_train_s": supernet_s, "evaluate_s_per_candidate": evaluate_s,
        "search_candidates_per_s": throughput,
        "standalone_mean_acc": float(np.mean(standalone)),
        "standalone_std_acc": float(np.std(standalone)),
        "total_s": time.perf_counter() - t_start, "cells": rows,
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    progress(f"Kendall tau {summary['recalibrated']['kendall_tau']:.3f} (p "
             f"{summary['recalibrated']['kendall_p']:.3f}), Spearman "
             f"{summary['recalibrated']['spearman_rho']:.3f}; without recalibration tau "
             f"{summary['no_recalibration']['kendall_tau']:.3f}; literature ~"
             f"{LITERATURE_KENDALL_TAU}; total {summary['total_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
