"""One darts epoch on real CIFAR-10 at a small size: wall time and peak memory (getrusage).

    python benchmarks/bench_oneshot_darts_epoch.py --data /tmp/cifarjpeg [--runs-dir /tmp]

The supernet: N=1, F=8 (recipe oneshot-cifar-cpu) with 2 blocks over 4 ops, trained on a fixed
1,280 training images (20 steps of 64, each with an architecture step on a validation batch),
validated on 1,000 images as the DARTS mixture. Prints one JSON line.
"""
import argparse
import json
import resource
import time
from dataclasses import replace

import torch

from nasforge.oneshot.run import run_oneshot
from nasforge.search.config import SearchConfig
from nasforge.train import get_recipe, register_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 (ImageFolder or python)")
    parser.add_argument("--runs-dir", default="/tmp", help="parent of the run folder")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = register_recipe(replace(get_recipe("oneshot-cifar-cpu"), name="darts-cifar-epoch",
                                     train_subset=1280, epochs=1))
    config = SearchConfig(searcher="darts", recipe=recipe.name, data=args.data, val_size=1000,
                          seed=0, searcher_options={
                              "blocks": 2, "ops": ["sep_conv_3x3", "max_pool_3x3", "identity",
                                                   "dil_conv_3x3"]})
    t0 = time.time()
    summary = run_oneshot(config, f"{args.runs_dir}/darts-epoch-{int(t0)}")
    print(json.dumps({"wall_s": round(time.time() - t0, 1),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                            / 1024),
                      "val_acc": summary["best_val_acc"]}))


if __name__ == "__main__":
    main()
