"""Training-step time of the DSL resnet18 against torchvision's resnet18, same weights, same
batch, measured in one process, alternating, on the CPU (or --device).

    python benchmarks/bench_step_time.py [--batch 64] [--size 112] [--rounds 10] [--threads N]

Prints the median step time of each and their ratio (DSL / torchvision).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

import nasforge


def step_fn(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=112, help="input pixels")
    parser.add_argument("--rounds", type=int, default=10, help="alternating timed rounds")
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    ours = nasforge.build_model("resnet18", weights=reference.state_dict())
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    y = torch.randint(0, 1000, (args.batch,), device=args.device)
    steps = {"torchvision": step_fn(reference.to(args.device).train(), x, y),
             "nasforge": step_fn(ours.to(args.device).train(), x, y)}
    for step in steps.values():  # warm-up (allocator, oneDNN primitives)
        step()
        step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t) / args.steps)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"batch {args.batch}, {args.size}px, {torch.get_num_threads()} threads, "
          f"{args.rounds} alternating rounds of {args.steps} steps")
    for name, m in med.items():
        print(f"{name:12s} median step {m * 1000:8.1f} ms")
    print(f"ratio nasforge / torchvision: {med['nasforge'] / med['torchvision']:.3f}")


if __name__ == "__main__":
    main()
