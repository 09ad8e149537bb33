"""One darts epoch on real CIFAR-10 at a small size: wall time and peak memory (getrusage),
first order, second order (unrolled) or both, with the second / first ratio.

    python benchmarks/bench_oneshot_darts_epoch.py --data /tmp/cifarjpeg [--runs-dir /tmp]
        [--order 1|2|both] [--train-subset 1280]

The supernet: N=1, F=8 (recipe oneshot-cifar-cpu) with 2 blocks over 4 ops, trained on a fixed
1,280 training images (20 steps of 64, each with an architecture step on a validation batch;
``--train-subset`` changes the count), validated on 1,000 images as the DARTS mixture. Each
order runs in its own process (so each peak RSS is its own); prints one JSON line per order,
then, with ``--order both``, one with the ratios. ``train_s`` is the training pass alone (the
checkpoint's), ``wall_s`` the whole run (data loading, evaluation, run folder).
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def one_order(args) -> dict:
    """One darts run of one epoch in this process: its times and this process's peak RSS."""
    from nasforge.oneshot.run import run_oneshot
    from nasforge.search.config import SearchConfig
    from nasforge.train import CHECKPOINT_NAME, get_recipe, load_checkpoint, register_recipe

    torch.set_num_threads(args.threads)
    recipe = register_recipe(get_recipe("oneshot-cifar-cpu").replace(name="darts-cifar-epoch",
                                     train_subset=args.train_subset, epochs=1))
    config = SearchConfig(searcher="darts", recipe=recipe.name, data=args.data, val_size=1000,
                          seed=0, searcher_options={
                              "blocks": 2, "ops": ["sep_conv_3x3", "max_pool_3x3", "identity",
                                                   "dil_conv_3x3"],
                              "unrolled": args.order == "2"})
    t0 = time.time()
    run_dir = f"{args.runs_dir}/darts{args.order}-epoch-{int(t0)}"
    summary = run_oneshot(config, run_dir)
    train_s = load_checkpoint(f"{run_dir}/{CHECKPOINT_NAME}")["train_s"]
    return {"order": int(args.order), "train_images": args.train_subset,
            "wall_s": round(time.time() - t0, 1), "train_s": round(train_s, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "val_acc": summary["best_val_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 (ImageFolder or python)")
    parser.add_argument("--runs-dir", default="/tmp", help="parent of the run folders")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--order", choices=("1", "2", "both"), default="1",
                        help="first order, second order (unrolled=true) or both")
    parser.add_argument("--train-subset", type=int, default=1280,
                        help="training images (steps of 64)")
    args = parser.parse_args()
    if args.order != "both":
        print(json.dumps(one_order(args)), flush=True)
        return
    rows = []
    for order in ("1", "2"):
        argv = ["--data", args.data, "--runs-dir", args.runs_dir, "--threads",
                str(args.threads), "--train-subset", str(args.train_subset), "--order", order]
        out = subprocess.run([sys.executable, __file__, *argv],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    first, second = rows
    print(json.dumps({"second_over_first_train_s": round(second["train_s"] / first["train_s"], 2),
                      "second_over_first_wall_s": round(second["wall_s"] / first["wall_s"], 2),
                      "second_over_first_peak_rss": round(second["peak_rss_mib"]
                                                          / first["peak_rss_mib"], 2)}))


if __name__ == "__main__":
    main()
