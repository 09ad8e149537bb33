"""Training-step time (forward + backward + SGD step) of a nasforge model against code nobody
here wrote, same weights, same batch, same threads, measured in one process, alternating.

    python benchmarks/bench_step_time.py [--pair resnet18|nasnet-mobile|child|all]
        [--batch B] [--size PX] [--rounds 10] [--steps 3] [--threads N]
        [--channels-last] [--bf16] [--json]

Pairs (``PAIRS``, name -> builder of ``(reference, nasforge)``):

* ``resnet18``: the DSL ``resnet18`` vs torchvision's ``resnet18`` (batch 64, 112 px);
* ``nasnet-mobile``: the DSL NASNet-A mobile vs pretrainedmodels' ``nasnetamobile`` (its
  weights imported with ``nasforge.weights.load_reference_state``; batch 4, 224 px: its
  classifier's 7x7 average pool fixes the input size);
* ``child``: a CIFAR search child (NASNet-A cells, N=1, F=8: the ``smoke`` recipe's child) vs
  its own ``nasforge export --format py`` module (the compiled graph's dispatch overhead
  against fx-generated straight-line code; batch 32, 32 px);
* ``airbench``: the ``cifar-fast`` recipe's model (the DSL ``airbench`` at the recipe's
  widths) vs airbench94's network written out in plain torch (``gpu_check.hand_airbench``,
  same weights; batch 250, 32 px; ``--batch`` shows the cost per image at other batches).

Each pair runs in NCHW (contiguous) and, with ``--channels-last``, in channels_last too;
``--bf16`` runs both models' forward passes under bf16 autocast (compare ``nasforge`` ms with
and without it to see what ``Recipe.speed.cpu_bf16`` buys on this CPU).
Prints the median step time of each and the ratio nasforge / reference (target <= 1.05).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import nasforge

# pair name -> (default batch, default input px, classes)
DEFAULTS = {"resnet18": (64, 112, 1000), "nasnet-mobile": (4, 224, 1000), "child": (32, 32, 10),
            "airbench": (250, 32, 10)}


def _resnet18():
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    return reference, nasforge.build_model("resnet18", weights=reference.state_dict())


def _nasnet_mobile():
    import pretrainedmodels  # builds offline with pretrained=None

    from nasforge.weights import load_reference_state

    reference = pretrainedmodels.nasnetamobile(num_classes=1000, pretrained=None)
    ours = nasforge.build_model("nasnet_a", "mobile")
    load_reference_state(ours, reference.state_dict())
    return reference, ours


def load_exported(model_name: str, setting: str, **overrides):
    """``(nasforge model, the Net of its exported py module with the same weights)``: the
    module is written by ``nasforge.export.export(..., "py")`` and imported from its file."""
    from nasforge.export import export

    folder = Path(tempfile.mkdtemp(prefix="nasforge-bench-export-"))
    path = export(model_name, "py", folder / "child.py", setting=setting, **overrides)
    spec = importlib.util.spec_from_file_location("nasforge_bench_child", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ours = nasforge.build_model(model_name, setting, **overrides)
    exported = module.Net()
    exported.load_state_dict(ours.state_dict(), strict=True)
    return exported, ours


def _airbench():
    # cifar-fast's model at its recipe's widths against airbench94's make_net written out in
    # plain torch (benchmarks/gpu_check.py); the whitening filters are frozen in both
    from gpu_check import hand_airbench, recipe_widths

    from nasforge.train import get_recipe

    widths = recipe_widths(get_recipe("cifar-fast"))
    ours = nasforge.build_model("airbench", "cifar", widths=widths)
    reference = hand_airbench(widths)
    state = ours.state_dict()
    whiten = {"whiten.weight": state.pop("blocks.0.ops.whiten.weight"),
              "whiten.bias": state.pop("blocks.0.ops.whiten.bias")}
    rest = [k for k in reference.state_dict() if not k.startswith("whiten.")]
    reference.load_state_dict({**whiten, **dict(zip(rest, state.values()))})
    reference.whiten.weight.requires_grad_(False)
    return reference, ours


def _child():
    # the smoke recipe's child (search children are NASNet cells of the same size)
    return load_exported("nasnet_a", "cifar", N=1, filters=8)


PAIRS = {"resnet18": _resnet18, "nasnet-mobile": _nasnet_mobile, "child": _child,
         "airbench": _airbench}


def step_fn(model, x, y, bf16: bool = False):
    """A closure running one SGD training step of ``model`` on ``(x, y)`` (forward under bf16
    autocast with ``bf16``, as the trainer's ``Recipe.speed.bf16`` / ``cpu_bf16``)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        if isinstance(out, (tuple, list)):  # auxiliary head
            out = out[0]
        F.cross_entropy(out, y).backward()
        opt.step()
    return step


def alternate(steps: dict, rounds: int, steps_per_round: int, device: str = "cpu",
              warmup: int = 2) -> dict:
    """Median seconds per call of each closure in ``steps``, timed in ``rounds`` rounds that
    alternate between them (so a load change on a shared machine hits all alike)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for step in steps.values():  # warm-up (allocator, oneDNN primitives)
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            t = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            sync()
            times[name].append((time.perf_counter() - t) / steps_per_round)
    return {name: statistics.median(v) for name, v in times.items()}


def measure_pair(pair: str, batch: int, size: int, rounds: int, steps: int,
                 channels_last: bool, device: str = "cpu", bf16: bool = False) -> dict:
    torch.manual_seed(0)
    reference, ours = PAIRS[pair]()
    classes = DEFAULTS[pair][2]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)
    models = {"reference": reference, "nasforge": ours}
    closures = {}
    for name, m in models.items():
        m = m.to(device).train()
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        closures[name] = step_fn(m, x, y, bf16)
    med = alternate(closures, rounds, steps, device)
    return {"pair": pair, "layout": "channels_last" if channels_last else "nchw", "bf16": bf16,
            "batch": batch, "size": size, "threads": torch.get_num_threads(),
            "reference_ms": med["reference"] * 1000, "nasforge_ms": med["nasforge"] * 1000,
            "nasforge_ms_per_image": med["nasforge"] * 1000 / batch,
            "ratio": med["nasforge"] / med["reference"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default="resnet18", choices=[*PAIRS, "all"])
    parser.add_argument("--batch", type=int, default=None, help="default: per pair")
    parser.add_argument("--size", type=int, default=None, help="input pixels (default: per pair)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating timed rounds")
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true",
                        help="also measure with channels_last models and inputs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true",
                        help="forward passes under bf16 autocast (on CPU: AMX units pay)")
    parser.add_argument("--json", action="store_true", help="one JSON line per measurement")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = list(PAIRS) if args.pair == "all" else [args.pair]
    for pair in pairs:
        batch, size, _ = DEFAULTS[pair]
        for cl in ([False, True] if args.channels_last else [False]):
            r = measure_pair(pair, args.batch or batch, args.size or size, args.rounds,
                             args.steps, cl, args.device, args.bf16)
            if args.json:
                print(json.dumps(r), flush=True)
            else:
                precision = "bf16" if r["bf16"] else "fp32"
                print(f"{pair:14s} {r['layout']:13s} {precision} batch {r['batch']}, {r['size']}px, "
                      f"{r['threads']} threads: reference {r['reference_ms']:8.1f} ms, "
                      f"nasforge {r['nasforge_ms']:8.1f} ms "
                      f"({r['nasforge_ms_per_image']:.3f} ms/image), ratio {r['ratio']:.3f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
