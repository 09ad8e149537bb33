"""Where a CPU search child's training step goes, and what makes it faster.

    python benchmarks/bench_child_step.py [--recipe smoke] [--batch 32] [--threads 1]
        [--rounds 8] [--steps 2] [--variants eager-nchw,eager-cl,compile-cl] [--profile]
        [--saved-bytes] [--json]

The child is the recipe's default model (``smoke``: NASNet-A N=1, F=8 on 32 px CIFAR images;
``search``: N=2, F=32), trained with the recipe's optimizer settings on random data. For each
variant (``VARIANTS``: layout, ``torch.compile`` and shared ReLUs; ``-unshared``: each op
computes its own ReLU, as the compiler did before; any variant + ``-recompute``: cells
recomputed in the backward pass, ``Recipe.speed.recompute_cells``) it reports the median step
time from alternating rounds in this one process, images/s, and GFLOP/s, counting a training
step as 3x the forward's FLOPs (2 per mult-add, ``nasforge.flops.count_mult_adds``); a compiled
variant also reports its compile time (the first steps) and the steps a child needs before compiling
pays off, against the recipe's steps per child. ``--profile`` adds the top operators of an
eager step by self CPU time (``torch.profiler``); ``--saved-bytes`` the bytes of the distinct
storages autograd keeps for the backward pass of one training forward of each eager variant.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_step_time import alternate  # noqa: E402
from nasforge.flops import saved_activation_bytes  # noqa: E402

# variant -> (channels_last, torch.compile, shared ReLUs); "-unshared": every op computes its
# own ReLU (``set_relu_sharing(model, False)``, the compiler before shared ReLUs)
VARIANTS = {"eager-nchw": (False, False, True), "eager-cl": (True, False, True),
            "compile-nchw": (False, True, True), "compile-cl": (True, True, True),
            "eager-nchw-unshared": (False, False, False), "eager-cl-unshared": (True, False, False),
            "compile-cl-unshared": (True, True, False)}
RECOMPUTE = "-recompute"  # variant suffix: cells recomputed in the backward pass
CIFAR_TRAIN_IMAGES = 45_000  # CIFAR-10's training set less the search's 5,000 validation images


def child_step(recipe, channels_last: bool, compiled: bool, batch: int, seed: int = 0,
               share_relu: bool = True, recompute: bool = False):
    """``(step closure, model)`` for one training step of the recipe's child on a fixed
    random batch (cross-entropy + the auxiliary head, clipping, SGD, as the trainer does)."""
    from nasforge.api import build_model
    from nasforge.compiler import set_cell_recompute, set_relu_sharing

    torch.manual_seed(seed)
    model = build_model(recipe.defaults.model, recipe.defaults.setting, **recipe.overrides).train()
    set_cell_recompute(set_relu_sharing(model, share_relu), recompute)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    fwd = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=recipe.schedule.lr,
                          momentum=recipe.optim.momentum, weight_decay=recipe.optim.weight_decay)

    def step():
        out = fwd(x)
        logits, aux = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, None)
        loss = F.cross_entropy(logits, y, label_smoothing=recipe.regularisation.label_smoothing)
        if aux is not None and recipe.regularisation.aux_weight > 0:
            loss = loss + recipe.regularisation.aux_weight * F.cross_entropy(aux, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.regularisation.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.regularisation.grad_clip)
        opt.step()
    step.batch = x
    return step, model


def top_ops(step, n: int = 12) -> list[dict]:
    """The ``n`` operators with the most self CPU time over 3 profiled steps."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 3e3, 2),
             "share": round(e.self_cpu_time_total / total, 3), "calls_per_step": e.count // 3}
            for e in events[:n]]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="smoke")
    p.add_argument("--batch", type=int, default=None, help="default: the recipe's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="steps per round")
    p.add_argument("--variants", default="eager-nchw,eager-cl,compile-cl")
    p.add_argument("--profile", action="store_true", help="top operators of an eager step")
    p.add_argument("--saved-bytes", action="store_true",
                   help="bytes kept for the backward pass by each eager variant")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from nasforge.flops import count_mult_adds
    from nasforge.train import get_recipe

    torch.set_num_threads(args.threads)
    recipe = get_recipe(args.recipe)
    batch = args.batch or recipe.schedule.batch_size
    images = recipe.inputs.train_subset or CIFAR_TRAIN_IMAGES
    steps_per_child = images // batch * recipe.schedule.epochs
    steps, compile_s, saved, model = {}, {}, {}, None
    for name in args.variants.split(","):
        channels_last, compiled, share_relu = VARIANTS[name.removesuffix(RECOMPUTE)]
        steps[name], model = child_step(recipe, channels_last, compiled, batch,
                                        share_relu=share_relu,
                                        recompute=name.endswith(RECOMPUTE))
        if args.saved_bytes and not compiled:
            saved[name] = saved_activation_bytes(model, steps[name].batch)
        if compiled:  # the first calls compile forward and backward
            t = time.perf_counter()
            steps[name]()
            compile_s[name] = time.perf_counter() - t
    mult_adds = count_mult_adds(model, 32)[0]
    flops_per_step = 3 * 2 * mult_adds * batch
    med = alternate(steps, args.rounds, args.steps)
    result = {"recipe": recipe.name, "batch": batch, "threads": args.threads,
              "load_avg_1min": round(os.getloadavg()[0], 2),
              "mult_adds_per_image": mult_adds, "steps_per_child": steps_per_child,
              "variants": {}}
    base = next(iter(med.values()))  # vs_first: step time / the first variant's
    for name, s in med.items():
        v = {"step_ms": round(s * 1000, 1), "images_per_s": round(batch / s, 1),
             "gflop_per_s": round(flops_per_step / s / 1e9, 2),
             "vs_first": round(s / base, 3)}
        if name in saved:
            v["saved_mb"] = round(saved[name] / 2 ** 20, 1)
        if name in compile_s:
            eager = med.get(name.replace("compile", "eager"))
            v["compile_s"] = round(compile_s[name], 1)
            if eager is not None and eager > s:
                v["break_even_steps"] = round(compile_s[name] / (eager - s))
        result["variants"][name] = v
    if args.profile:  # the first variant's eager step
        channels_last, _, share_relu = VARIANTS[next(iter(med)).removesuffix(RECOMPUTE)]
        result["top_ops"] = top_ops(child_step(recipe, channels_last, False, batch,
                                               share_relu=share_relu)[0])
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
