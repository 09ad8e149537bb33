"""Per-step cost of a supernet path against the stand-alone child of the same architecture.

    python benchmarks/bench_oneshot_step.py [--cells 8] [--N 1] [--filters 16] [--batch 64]
        [--rounds 5] [--steps 3] [--threads N] [--device cpu]

For each of ``--cells`` architectures sampled from the NASNet space with the add combine (the
supernet's space), one training step (forward + backward + SGD with momentum) of the supernet's
path and of the child with the inherited weights, same batch, alternating in one process. Prints
the median step time of each and the ratio path / child per architecture and overall (the
one-shot issue's target: at most 1.3).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from nasforge.oneshot import Supernet
from nasforge.search_spaces import NasNetSpace
from nasforge.zoo import SETTINGS


def step_fn(model, x, y, **forward_args):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        # grads set to None: SGD skips the supernet's unused weights, as a one-shot trainer must
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, **forward_args), y).backward()
        opt.step()
    return step


def timed(step, steps: int, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=8, help="architectures sampled")
    parser.add_argument("--N", type=int, default=1)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timed rounds")
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space = NasNetSpace(combines=("add",))
    config = replace(SETTINGS["cifar"], N=args.N, filters=args.filters)
    supernet = Supernet(space, config).to(args.device).train()
    x = torch.randn(args.batch, 3, 32, 32, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.cells):
        arch = space.sample(rng)
        steps = {"path": step_fn(supernet, x, y, arch=arch),
                 "child": step_fn(supernet.child(arch).to(args.device).train(), x, y)}
        for step in steps.values():  # warm-up (allocator, oneDNN primitives)
            step()
        times = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                times[name].append(timed(step, args.steps, args.device))
        med = {name: statistics.median(t) for name, t in times.items()}
        rows.append({"cell": i, "path_s": med["path"], "child_s": med["child"],
                     "ratio": med["path"] / med["child"]})
        if not args.json:
            print(f"cell {i}: path {med['path'] * 1e3:.1f} ms, child {med['child'] * 1e3:.1f} ms,"
                  f" ratio {rows[-1]['ratio']:.3f}", flush=True)
    summary = {"median_ratio": statistics.median(r["ratio"] for r in rows),
               "max_ratio": max(r["ratio"] for r in rows), "cells": rows,
               "config": {"N": args.N, "filters": args.filters, "batch": args.batch,
                          "threads": torch.get_num_threads(), "device": args.device}}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"median ratio path / child: {summary['median_ratio']:.3f} "
              f"(max {summary['max_ratio']:.3f})")


if __name__ == "__main__":
    main()
