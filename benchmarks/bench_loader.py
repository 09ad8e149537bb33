"""DeviceLoader cost per batch against one training step (forward + backward + SGD step).

    python benchmarks/bench_loader.py [--batch-sizes 128 256] [--models small search]
        [--device cpu] [--cutout 16] [--repeats 5]

Loader time = whole epochs over the synthetic training set (10,000 images, 32x32, padding 4,
reflect, flip, cutout) divided by the number of batches, so the per-epoch draws are included.
Step time = a training step of ``small`` (a 4-conv plain net, 0.3M params: the worst case for
the ratio) and ``search`` (the NASNet-A child of the search recipe: N=2, F=--filters) on one
batch. Loader epochs and training steps alternate; medians of ``--repeats`` rounds are printed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from nasforge.data import DeviceLoader, load_data


def small_net(num_classes: int = 10) -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(*block(3, 32), *block(32, 64), nn.MaxPool2d(2), *block(64, 128),
                         nn.MaxPool2d(2), *block(128, 128), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(128, num_classes))


def search_net(filters: int) -> nn.Module:
    import nasforge

    return nasforge.build_model("nasnet_a", "cifar", N=2, filters=filters, aux_head=False,
                                drop_path_keep_prob=1.0)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_ms(loader, device) -> float:
    sync(device)
    t = time.perf_counter()
    n = 0
    for x, y in loader:
        n += 1
    sync(device)
    return (time.perf_counter() - t) / n * 1e3


def step_ms(model, opt, x, y, device, steps: int) -> float:
    loss_fn = nn.CrossEntropyLoss()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        loss_fn(out, y).backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - t) / steps * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--models", nargs="+", default=["small", "search"],
                    choices=["small", "search"])
    ap.add_argument("--filters", type=int, default=16, help="F of the search child")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cutout", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="training steps per timing round")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_data("synthetic", split="final")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"loader over {len(data.train)} images 32x32, padding 4 reflect, flip, "
          f"cutout {args.cutout}")
    print(f"{'model':>8} {'batch':>5} {'loader ms/batch':>16} {'step ms':>9} {'loader/step':>11}")
    for bs in args.batch_sizes:
        loader = DeviceLoader(data.train, bs, device=device, mean=data.mean, std=data.std,
                              cutout=args.cutout, generator=torch.Generator().manual_seed(0))
        x, y = next(iter(loader))
        for name in args.models:
            torch.manual_seed(0)
            model = (small_net() if name == "small" else search_net(args.filters)).to(device)
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            step_ms(model, opt, x, y, device, 1)  # warm-up
            loads, steps = [], []
            for _ in range(args.repeats):  # alternate, so both see the same machine load
                loads.append(loader_ms(loader, device))
                steps.append(step_ms(model, opt, x, y, device, args.steps))
            lm, sm = statistics.median(loads), statistics.median(steps)
            print(f"{name:>8} {bs:>5} {lm:>16.2f} {sm:>9.1f} {100 * lm / sm:>10.2f}%")


if __name__ == "__main__":
    main()
