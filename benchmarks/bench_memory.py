"""Resident memory of search children: the Ray worker processes of a real search, sampled.

    python benchmarks/bench_memory.py --recipe smoke --workers 1 --data /tmp/cifarjpeg
        [--trials 2] [--epochs 1] [--train-subset N] [--max-seconds 300] [--interval 0.5]
        [--recompute] [--worker-env KEY=VALUE] [--json]
    python benchmarks/bench_memory.py --breakdown --recipe smoke --data /tmp/cifarjpeg

Search mode: starts a local Ray with ``--workers`` CPUs (one child per CPU, so that many
children train at once), runs a random search of ``--trials`` children of ``--recipe`` for
``--epochs`` epochs on ``--data`` in this process, and samples every ``--interval`` seconds, with
psutil, the Ray worker processes that run trials (process title ``ray::ImplicitFunc...``):
per worker its peak RSS (resident, shared pages counted in full), peak USS (pages only it
holds) and peak PSS (shared pages split among the processes mapping them); per sample the sum
of the trial workers' PSS, whose peak is what the children of a node hold together. A search
still running after ``--max-seconds`` is interrupted (as Ctrl-C does) and the peaks so far are
reported. Compare ``--workers 1`` with ``--workers 2``: the difference of the summed peaks is
what a second child adds to a node. ``--train-subset N`` trains each child on N images (a
recipe variant) so that a child reaches its evaluation, whose batch of ``eval_batch_size``
images is the largest activation footprint, in a short run; the search data shipped to the
workers stays whole (a child's loader reads it where Ray's object store maps it; with N it
gathers a private copy of its N images). ``--recompute`` trains children with
``recompute_cells`` (cells recomputed in the backward pass); ``--worker-env KEY=VALUE`` starts
Ray's workers with that environment variable (Ray's job ``runtime_env``), e.g. glibc malloc
settings, which a process reads when it starts.

Breakdown mode (``--breakdown``): one child of the recipe trained for one epoch in this
process (no Ray; ``--train-subset`` applies), with the RSS after each phase (torch imported,
data loaded, model built, the training pass's and the evaluation's peaks, and after ``train``
returned: what the allocator kept), to see where a worker's memory goes; run it with an
allocator setting in the environment (``MALLOC_MMAP_THRESHOLD_=131072 python ...``) to compare.

Needs ``psutil`` (``pip install nasforge[bench]``). Prints one JSON object with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MB = 2 ** 20
TRIAL_TITLE = "ray::ImplicitFunc"  # the title Ray gives the worker of a function trainable


class WorkerSampler(threading.Thread):
    """Samples the memory of this process's Ray trial workers until ``stop()``; after
    ``deadline_s`` it sends this process SIGINT once (the search stops like on Ctrl-C)."""

    def __init__(self, interval_s: float, deadline_s: float | None):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.interval_s, self.deadline_s = interval_s, deadline_s
        self.workers: dict[int, dict] = {}  # pid -> peaks in bytes
        self.peak_total_pss = 0
        self.peak_concurrent = 0
        self.interrupted = False
        self._halt = threading.Event()
        self._t0 = time.perf_counter()

    def stop(self):
        self._halt.set()
        self.join()

    def run(self):
        while not self._halt.is_set():
            self.sample()
            if (self.deadline_s is not None and not self.interrupted
                    and time.perf_counter() - self._t0 > self.deadline_s):
                self.interrupted = True
                os.kill(os.getpid(), signal.SIGINT)
            self._halt.wait(self.interval_s)

    def sample(self):
        total, running = 0, 0
        for p in self.me.children(recursive=True):
            try:
                title = (p.cmdline() or [""])[0]
                if not title.startswith(TRIAL_TITLE):
                    continue
                m = p.memory_full_info()
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, IndexError):
                continue
            peaks = self.workers.setdefault(p.pid, {"rss": 0, "uss": 0, "pss": 0})
            for key in peaks:
                peaks[key] = max(peaks[key], getattr(m, key))
            total += m.pss
            running += 1
        self.peak_total_pss = max(self.peak_total_pss, total)
        self.peak_concurrent = max(self.peak_concurrent, running)

    def result(self) -> dict:
        per_worker = [{k: round(v / MB) for k, v in peaks.items()}
                      for _, peaks in sorted(self.workers.items())]
        return {"trial_workers": per_worker,
                "peak_rss_mb": max((w["rss"] for w in per_worker), default=None),
                "peak_uss_mb": max((w["uss"] for w in per_worker), default=None),
                "peak_sum_pss_mb": round(self.peak_total_pss / MB),
                "peak_concurrent_workers": self.peak_concurrent,
                "interrupted_after_max_seconds": self.interrupted}


def search_mode(args) -> dict:
    import ray

    from nasforge.search import SearchConfig
    from nasforge.search.runner import run_search

    recipe = args.recipe
    changes = {}
    if args.train_subset:
        changes["train_subset"] = args.train_subset
    if args.recompute:
        changes["recompute_cells"] = True
    if changes:
        from nasforge.train import get_recipe
        from nasforge.train.recipes import register_recipe

        recipe = "-".join([args.recipe] + [f"{k}{v}" for k, v in changes.items()])
        register_recipe(get_recipe(args.recipe).replace(name=recipe, **changes))
    worker_env = dict(kv.split("=", 1) for kv in args.worker_env)
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR",
             runtime_env={"env_vars": worker_env} if worker_env else None)
    sampler = WorkerSampler(args.interval, args.max_seconds)
    t = time.perf_counter()
    try:
        config = SearchConfig(searcher="random", trials=args.trials, recipe=recipe,
                              epochs=args.epochs, data=args.data, gpus=0, cpus_per_trial=1,
                              seed=0)
        sampler.start()
        summary = run_search(config, Path(tempfile.mkdtemp(prefix="nasforge-bench-mem-")) / "r")
    finally:
        sampler.stop()
        ray.shutdown()
    return {"mode": "search", "recipe": args.recipe, "train_subset": args.train_subset,
            "recompute_cells": args.recompute,
            "worker_env": worker_env,
            "workers": args.workers,
            "trials": args.trials, "epochs": args.epochs, "data": args.data,
            "wall_s": round(time.perf_counter() - t, 1),
            "finished_trials": summary.get("finished"), **sampler.result()}


def breakdown_mode(args) -> dict:
    """One child in this process, RSS after each phase (see the module docstring)."""
    import psutil

    me = psutil.Process()
    phases = {"start": me.memory_info().rss}
    import torch

    torch.set_num_threads(1)
    phases["torch imported"] = me.memory_info().rss
    from nasforge.api import build_model
    from nasforge.data import load_data
    from nasforge.train import get_recipe, train

    base = get_recipe(args.recipe)
    recipe = base.replace(epochs=1, recompute_cells=args.recompute or base.speed.recompute_cells,
                          train_subset=args.train_subset or base.inputs.train_subset)
    data = load_data(args.data, split="search", val_size=recipe.inputs.val_size)
    phases["data loaded"] = me.memory_info().rss
    model = build_model(recipe.defaults.model, recipe.defaults.setting,
                        num_classes=data.num_classes, **recipe.overrides)
    phases["model built"] = me.memory_info().rss
    samples = []  # (seconds since train() was called, rss)

    def watch():
        while True:
            samples.append((time.perf_counter() - t0, me.memory_info().rss))
            time.sleep(0.05)

    epochs = {}
    t0 = time.perf_counter()
    threading.Thread(target=watch, daemon=True).start()
    train(model, data, recipe, device="cpu",
          report=lambda e, m: epochs.update(m, reported_at=time.perf_counter() - t0))
    # the report comes right after evaluation, which took epoch_s - train_s
    train_end = epochs["reported_at"] - (epochs["epoch_s"] - epochs["train_s"])
    phases["training pass (peak)"] = max(r for t, r in samples if t <= train_end)
    phases["training + evaluation (peak)"] = max(r for _, r in samples)
    # what the allocator kept of the freed activations (a reused Ray worker starts from it)
    phases["after train() returned"] = me.memory_info().rss
    return {"mode": "breakdown", "recipe": args.recipe, "data": args.data,
            "rss_mb": {k: round(v / MB) for k, v in phases.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="smoke")
    p.add_argument("--data", default="synthetic", help="data path or name")
    p.add_argument("--workers", type=int, default=1, help="children training at once")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--train-subset", type=int, default=None,
                   help="train each child on this many images (default: the recipe's)")
    p.add_argument("--recompute", action="store_true",
                   help="children recompute their cells in the backward pass (a recipe "
                        "variant with recompute_cells=True)")
    p.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment variable of Ray's workers from their start (e.g. "
                        "MALLOC_MMAP_THRESHOLD_=131072); repeatable")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="interrupt the search after this long (peaks so far)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    p.add_argument("--breakdown", action="store_true",
                   help="one child in this process, RSS per phase")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = breakdown_mode(args) if args.breakdown else search_mode(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
