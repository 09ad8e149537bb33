"""Search value: the cells one-shot searches found vs random cells of the same space, all
trained stand-alone with one identical short recipe on the real data.

    python benchmarks/bench_oneshot_value.py --runs runs/enas runs/gdas runs/spos
        --data /tmp/cifarjpeg [--random 5] [--train-images 10000] [--N 1] [--filters 16]
        [--epochs 5] [--batch 64] [--lr 0.05] [--supernet runs/spos] [--threads 1]
        [--seed 0] [--out value.json]

1. Reads each run folder's best trial (the cell of its ``best_cell.json``, which ``nasforge
   export best_cell --run`` gives) and ``config.json`` (method and resolved space); every run
   must search the same space.
2. Draws ``--random`` cells of that space with a seeded numpy generator (distinct hashes, none
   equal to a found cell).
3. Trains every cell from scratch with one recipe (the ``search`` recipe shortened: NASNet
   macro at ``--N``/``--filters``, ``--epochs`` over a fixed ``--train-images`` subset of the
   training set, batch ``--batch``, cosine from ``--lr``) under the same seed and reports its
   accuracy on the whole test set (never read by the searches, which split the training set).
4. Prints one table: each found cell's test accuracy and its rank among the random cells, the
   random cells' mean, standard deviation and range. The literature's expectation: random
   cells of a well-designed space are strong (Yang et al. 2020; Li & Talwalkar 2019, see
   docs/reference.md section 9), so a search's margin is small: the table says what it is here.
5. With ``--supernet RUN`` (a trained one-shot run, e.g. the spos one): every cell's score by
   that supernet (``SupernetEvaluator``: the path's validation accuracy after BN
   recalibration, with the run's spos options) and the Kendall tau / Spearman rho between
   supernet and stand-alone accuracies (scipy.stats); the literature's tau is about 0.2.

Progress goes to stderr; one JSON object (settings, rows, summary) to stdout and ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from scipy import stats

from nasforge.api import compile_architecture
from nasforge.data import ImageData, load_data
from nasforge.data.types import fixed_subset_indices
from nasforge.oneshot.methods import SposConfig
from nasforge.search.run_folder import RunFolder, best_trial
from nasforge.search_spaces import get_space
from nasforge.train import get_recipe, train
from nasforge.zoo import SETTINGS


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_space(run: RunFolder):
    """The search space a one-shot run searched (config.json's resolved space)."""
    space = run.config()["space"]
    return get_space(space["name"], num_blocks=space["num_blocks"], ops=tuple(space["ops"]),
                     combines=tuple(space["combines"]))


def supernet_scores(run: RunFolder, archs: list, args) -> list[float]:
    """Each cell's validation accuracy as ``run``'s trained supernet scores it: its path
    after BN recalibration (``SupernetEvaluator``, the spos search phase's evaluator, with the
    run's own settings and validation split; the supernet rebuilt as the run built it,
    ``oneshot.ranking.load_trained_supernet``)."""
    from nasforge.oneshot import SupernetEvaluator
    from nasforge.oneshot.ranking import load_trained_supernet

    trained = load_trained_supernet(run.path)
    search = run.config()["search"]
    options = SposConfig(**{k: v for k, v in search["searcher_options"].items()
                            if k in EVALUATOR_OPTIONS})
    evaluator = SupernetEvaluator(
        trained.supernet, trained.data, recalibration_batches=options.recalibration_batches,
        batch_size=options.recalibration_batch_size, device=args.device,
        generator=torch.Generator().manual_seed(args.seed),
        validation_images=options.validation_images)
    return [evaluator.evaluate(arch)["val_acc"] for arch in archs]


EVALUATOR_OPTIONS = ("recalibration_batches", "recalibration_batch_size", "validation_images")
LITERATURE_KENDALL_TAU = 0.2  # Yu et al. 2020, docs/reference.md section 9


def found_arch(run: RunFolder, space):
    """The architecture of ``run``'s best trial (the cell of its best_cell.json)."""
    best = best_trial(run.trials())
    if best is None:
        sys.exit(f"bench_oneshot_value: {run.path} has no finished record")
    return space.decode(best["tokens"])


def same_space(a, b) -> bool:
    return (a.name, a.num_blocks, a.ops, a.combines) == (b.name, b.num_blocks, b.ops, b.combines)


def random_archs(space, count: int, exclude: set[str], seed: int) -> list:
    """``count`` seeded random architectures whose cells are distinct and not in ``exclude``
    (canonical hashes)."""
    rng = np.random.default_rng(seed)
    archs, seen = [], set(exclude)
    while len(archs) < count:
        arch = space.sample(rng)
        digest = space.to_graph(arch).canonical_hash()
        if digest not in seen:
            seen.add(digest)
            archs.append(arch)
    return archs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="one-shot run folders")
    parser.add_argument("--data", default="/tmp/cifarjpeg",
                        help="CIFAR-10 (folder, .tar.gz or ImageFolder tree)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--random", type=int, default=5, help="random cells of the space")
    parser.add_argument("--train-images", type=int, default=10000,
                        help="fixed subset of the training set every cell trains on")
    parser.add_argument("--N", type=int, default=1)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--supernet", default=None,
                        help="a trained one-shot run: also rank every cell by its supernet")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    runs = [RunFolder(Path(r)) for r in args.runs]
    spaces = [run_space(r) for r in runs]
    if not all(same_space(spaces[0], s) for s in spaces[1:]):
        sys.exit("bench_oneshot_value: the runs searched different spaces")
    space = spaces[0]
    found = [(f"{r.config()['search']['searcher']} ({r.path.name})", found_arch(r, space))
             for r in runs]
    exclude = {space.to_graph(a).canonical_hash() for _, a in found}
    randoms = [(f"random {i}", a) for i, a in
               enumerate(random_archs(space, args.random, exclude, args.seed))]

    data = load_data(args.data, split="final", seed=args.seed, cache_dir=args.cache_dir)
    pick = fixed_subset_indices(len(data.train), args.train_images)
    if pick is not None:
        data = replace(data, train=ImageData(data.train.images[pick], data.train.labels[pick]))
    progress(f"data: {data!r}; space {space.name} (B={space.num_blocks}, ops {space.ops})")
    config = replace(SETTINGS["cifar"], N=args.N, filters=args.filters,
                     num_classes=data.num_classes)
    recipe = get_recipe("search").replace(name="value-standalone", split="final",
                     epochs=args.epochs, batch_size=args.batch, lr=args.lr)

    rows = []
    for kind, cells in (("found", found), ("random", randoms)):
        for label, arch in cells:
            pair = space.to_graph(arch, name=label.split(" ")[0])
            torch.manual_seed(args.seed)
            model = compile_architecture(pair, config)
            result = train(model, data, recipe, device=args.device, seed=args.seed)
            rows.append({"kind": kind, "cell": label, "hash": pair.canonical_hash(),
                         "test_acc": result["test_acc"], "params": result["params"],
                         "wall_s": result["wall_s"], "cell_pair": pair.to_dict()})
            progress(f"{kind:6s} {label}: test {result['test_acc']:.4f} "
                     f"({result['wall_s']:.0f} s)")

    ranking = None
    if args.supernet:
        scores = supernet_scores(RunFolder(Path(args.supernet)),
                                 [a for _, a in found + randoms], args)
        for r, score in zip(rows, scores):
            r["supernet_val_acc"] = score
        standalone = [r["test_acc"] for r in rows]
        tau, rho = stats.kendalltau(scores, standalone), stats.spearmanr(scores, standalone)
        ranking = {"supernet": args.supernet, "cells": len(rows),
                   "kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
                   "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue),
                   "literature_kendall_tau": LITERATURE_KENDALL_TAU}
    random_acc = np.array([r["test_acc"] for r in rows if r["kind"] == "random"])
    for r in rows:
        r["random_cells_below"] = int((random_acc < r["test_acc"]).sum())
    summary = {
        "command": " ".join(sys.argv),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "space": {"name": space.name, "blocks": space.num_blocks, "ops": list(space.ops)},
        "data": repr(data), "threads": torch.get_num_threads(),
        "random_mean": float(random_acc.mean()), "random_std": float(random_acc.std(ddof=1))
        if len(random_acc) > 1 else 0.0,
        "random_min": float(random_acc.min()), "random_max": float(random_acc.max()),
        "ranking": ranking, "total_s": time.perf_counter() - t_start, "rows": rows,
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    progress(f"\n| cell | test accuracy | random cells below it (of {len(random_acc)}) |")
    progress("| --- | --- | --- |")
    for r in rows:
        progress(f"| {r['kind']}: {r['cell']} | {r['test_acc']:.4f} | "
                 f"{r['random_cells_below'] if r['kind'] == 'found' else ''} |")
    progress(f"random cells: mean {summary['random_mean']:.4f}, std {summary['random_std']:.4f}"
             f", range {summary['random_min']:.4f}-{summary['random_max']:.4f}; total "
             f"{summary['total_s'] / 60:.1f} min")
    if ranking:
        progress(f"supernet ranking over {ranking['cells']} cells: Kendall tau "
                 f"{ranking['kendall_tau']:.3f} (p {ranking['kendall_p']:.3f}), Spearman "
                 f"{ranking['spearman_rho']:.3f}; literature ~{LITERATURE_KENDALL_TAU}")


if __name__ == "__main__":
    main()
