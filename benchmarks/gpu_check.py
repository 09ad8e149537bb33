"""The GPU check: what matters about nasforge on one accelerator, in at most 8 minutes.

    bash benchmarks/gpu_check.sh [--out gpu_check.json]            # on a GPU machine
    python benchmarks/gpu_check.py --reduced [--out FILE]           # anywhere, in seconds

No downloads: the data is nasforge's synthetic source (10,000 training and 2,000 test images,
32 px; ``nasforge.data.synthetic``). Measured, in this order, and written as one JSON object
(``FIGURES`` lists its keys; every figure is present, ``null`` where it does not apply):

* ``child``: training images/s of a ``search``-recipe child (NASNet-A, the recipe's N and F,
  batch 32) with bf16 autocast and channels_last, eager and ``torch.compile``d (with the
  compile time: the first step), each with its model FLOP utilisation;
* ``cifar_fast``: ``nasforge.train.train`` with the ``cifar-fast`` recipe (bf16 and
  channels_last apply on CUDA): seconds and test accuracy per epoch, images/s, MFU;
* ``hand_loop``: a minimal hand-written loop training the same airbench network (written out
  in plain torch at the recipe's widths; the recipe's batch, optimiser, schedule, label
  smoothing, reflect-pad crops and flips with one random offset and flip per batch, bf16,
  channels_last) on the same data and device, and
  ``trainer_over_hand``: the hand loop's images/s over cifar-fast's (1.0 = the trainer adds
  nothing);
* ``peak_memory_mb``: the most device memory allocated (CUDA) or this process's peak RSS (CPU)
  in each part.

MFU = achieved FLOP/s / the device's dense bf16 peak (``PEAK_BF16_TFLOPS``, matched by device
name; an unknown device gives ``null``), counting a training step as 3x the forward's FLOPs
(2 per mult-add, ``nasforge.flops.count_mult_adds``).

``--reduced``: tiny sizes (a NASNet N=1 F=8 child at batch 4, 256 training and 128 test
images, 1 epoch at batch 64, ``torch.compile(backend="eager")`` so no C++ compiler runs, fp32
on a CPU) so the script runs on a CPU in well under a minute on an idle machine; ``tests/test_gpu_check.py`` runs it. The figures are then only a check that every
part runs.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets (SXM
# parts for H100/H200/A100); matched as substrings of torch.cuda.get_device_name()
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "A10": 125.0}
FIGURES = ("device", "peak_bf16_tflops", "reduced", "torch", "wall_s", "child", "cifar_fast",
           "hand_loop", "trainer_over_hand", "peak_memory_mb")
CHILD_FIGURES = ("images_per_s_eager", "images_per_s_compiled", "compile_s", "mfu_eager",
                 "mfu_compiled", "compile_backend", "batch", "mult_adds_per_image")
CIFAR_FAST_FIGURES = ("epochs", "epoch_s", "test_acc", "final_test_acc", "images_per_s", "mfu",
                      "wall_s")
HAND_FIGURES = ("epoch_s", "final_test_acc", "images_per_s", "mfu")


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def mfu(images_per_s: float, mult_adds_per_image: int, peak: float | None) -> float | None:
    return None if peak is None else 3 * 2 * mult_adds_per_image * images_per_s / (peak * 1e12)


class Memory:
    """Peak memory of one part of the check: CUDA's allocator peak, or on CPU the process's
    peak RSS (which never goes down, so the parts' CPU figures are cumulative)."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child_speed(recipe, device, batch: int, steps: int, backend: str, peak) -> dict:
    """Images/s of training steps of the recipe's child, bf16 + channels_last, eager and
    compiled (each timed after its warm-up; the compiled one's first step is its compile)."""
    from nasforge.api import build_model
    from nasforge.flops import count_mult_adds

    out = {"batch": batch, "compile_backend": backend}
    on_gpu = device.type == "cuda"  # bf16 on a CPU without bf16 units would time emulation
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_model(recipe.defaults.model, recipe.defaults.setting, **recipe.overrides)
        if compiled is False:
            out["mult_adds_per_image"] = count_mult_adds(model, 32)[0]
        model = model.to(device, memory_format=torch.channels_last).train()
        fwd = torch.compile(model, backend=backend) if compiled else model
        opt = torch.optim.SGD(model.parameters(), lr=recipe.schedule.lr,
                              momentum=recipe.optim.momentum)
        x = torch.randn(batch, 3, 32, 32, device=device).contiguous(
            memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,), device=device)

        def step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                logits = fwd(x)
                logits = logits[0] if isinstance(logits, (tuple, list)) else logits
                loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = time.perf_counter()
        step()
        _sync(device)
        first_s = time.perf_counter() - t
        step()  # second warm-up (cudnn/oneDNN algorithm choice, recompiles)
        _sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        ips = batch * steps / (time.perf_counter() - t)
        key = "compiled" if compiled else "eager"
        out[f"images_per_s_{key}"] = ips
        out[f"mfu_{key}"] = mfu(ips, out["mult_adds_per_image"], peak)
        if compiled:
            out["compile_s"] = first_s
    return out


def cifar_fast(data, device, reduced: bool, peak) -> tuple[dict, object]:
    """``nasforge.train.train`` with the cifar-fast recipe on ``data``; per-epoch figures."""
    from nasforge.api import build_model
    from nasforge.flops import count_mult_adds
    from nasforge.train import get_recipe, train

    recipe = get_recipe("cifar-fast")
    if reduced:
        recipe = recipe.replace(name="cifar-fast-reduced", epochs=1, batch_size=64,
                         eval_batch_size=256, warmup_epochs=0.0)
    torch.manual_seed(0)
    model = build_model(recipe.defaults.model, recipe.defaults.setting)
    mult_adds = count_mult_adds(model, 32)[0]
    epochs = []
    t = time.perf_counter()
    result = train(model, data, recipe, device=device, seed=0,
                   report=lambda e, m: epochs.append(m))
    wall = time.perf_counter() - t
    rates = [m["train_images_per_s"] for m in epochs]
    # the first epoch pays for warm-up (cudnn algorithm search): rate of the later ones
    rate = sorted(rates[1:] or rates)[len(rates[1:] or rates) // 2]
    return {"epochs": len(epochs), "epoch_s": [m["epoch_s"] for m in epochs],
            "train_s": [m["train_s"] for m in epochs],
            "test_acc": [m.get("test_acc") for m in epochs],
            "final_test_acc": result.get("test_acc"), "images_per_s": rate,
            "mfu": mfu(rate, mult_adds, peak), "wall_s": wall}, recipe


def hand_airbench(widths, classes: int = 10) -> nn.Module:
    """airbench94's ``make_net`` (KellerJordan/cifar10-airbench) written out in plain torch:
    whitening conv 2x2 (3 -> 24, bias) -> GELU, three conv groups (conv3x3 -> maxpool2 -> BN
    -> GELU -> conv3x3 -> BN -> GELU), MaxPool2d(3), flatten, linear (no bias), x 1/9. The
    hand loop's model, and ``tests/test_fast_training.py``'s reference for the zoo's
    ``airbench``."""
    class Group(nn.Module):
        def __init__(self, c_in, c_out):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
            self.norm1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, padding="same", bias=False)
            self.norm2 = nn.BatchNorm2d(c_out)

        def forward(self, x):
            x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
            return F.gelu(self.norm2(self.conv2(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
            self.groups = nn.Sequential(Group(24, widths[0]), Group(widths[0], widths[1]),
                                        Group(widths[1], widths[2]))
            self.fc = nn.Linear(widths[2], classes, bias=False)

        def forward(self, x):
            x = self.groups(F.gelu(self.whiten(x)))
            return self.fc(F.max_pool2d(x, 3).flatten(1)) / 9

    return Net()


def recipe_widths(recipe) -> tuple:
    """The conv-group widths of the recipe's (airbench) model: its setting's, or its
    ``model_overrides``'."""
    from nasforge.zoo.registry import get_entry

    options = dict(get_entry(recipe.defaults.model).config(recipe.defaults.setting).options)
    return tuple(dict(recipe.defaults.model_overrides).get("widths", options["widths"]))


def hand_loop(data, recipe, device, peak) -> dict:
    """The recipe's training written as a plain loop, what a hand-written airbench script
    does: the same network (``hand_airbench`` at the recipe's widths; the whitening conv
    frozen at its random init, BN scales fixed at 1), Nesterov SGD with the recipe's lr,
    momentum, weight decay and airbench's linear schedule, BN shifts at ``bn_bias_lr_mult``
    x the lr, label smoothing, reflect-pad crops and flips with one random offset and flip
    per batch, bf16 on a GPU, channels_last; no lookahead and no test-time augmentation."""
    from nasforge.flops import count_mult_adds

    torch.manual_seed(0)
    model = hand_airbench(recipe_widths(recipe))
    mult_adds = count_mult_adds(model, 32)[0]
    on_gpu = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last)
    model.whiten.weight.requires_grad_(False)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.weight.requires_grad_(False)
    shifts = {id(m.bias) for m in norms}
    mean = torch.tensor(data.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, 3, 1, 1)

    def normalise(u8):
        return ((u8.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)

    train_x = data.train.images.to(device)
    train_y = data.train.labels.to(device)
    test_x, test_y = normalise(data.test.images.to(device)), data.test.labels.to(device)
    batch = min(recipe.schedule.batch_size, len(train_y))
    steps_per_epoch = len(train_y) // batch
    total = steps_per_epoch * recipe.schedule.epochs
    warm = max(1, int(recipe.schedule.warmup_epochs * steps_per_epoch))
    mult = recipe.optim.bn_bias_lr_mult
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(
        [{"params": [p for p in trained if id(p) not in shifts]},
         {"params": [p for p in trained if id(p) in shifts], "lr": recipe.schedule.lr * mult,
          "weight_decay": recipe.optim.weight_decay / mult}],
        lr=recipe.schedule.lr, momentum=recipe.optim.momentum, nesterov=True,
        weight_decay=recipe.optim.weight_decay)
    start, end = recipe.schedule.warmup_start_ratio, recipe.schedule.min_lr / recipe.schedule.lr
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: start + (1 - start) * s / warm if s < warm else
        1 + (end - 1) * min(1.0, (s - warm) / max(1, total - warm)))
    p = recipe.augmentation.crop_padding
    gen = torch.Generator(device="cpu").manual_seed(0)
    epoch_s, acc = [], None
    for _ in range(recipe.schedule.epochs):
        _sync(device)
        t = time.perf_counter()
        model.train()
        padded = F.pad(train_x.float(), (p, p, p, p), mode="reflect")
        perm = torch.randperm(len(train_y), generator=gen).to(device)
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            dy, dx = torch.randint(0, 2 * p + 1, (2,), generator=gen).tolist()
            x = padded[idx, :, dy:dy + 32, dx:dx + 32]  # one crop offset per batch
            if torch.rand((), generator=gen) < 0.5:
                x = x.flip(3)
            x = ((x / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                loss = F.cross_entropy(model(x).float(), train_y[idx],
                                       label_smoothing=recipe.regularisation.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        _sync(device)
        epoch_s.append(time.perf_counter() - t)
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                             enabled=on_gpu):
            correct = sum(int((model(test_x[j:j + 1000]).argmax(1) ==
                               test_y[j:j + 1000]).sum()) for j in range(0, len(test_y), 1000))
        acc = correct / len(test_y)
    rate = batch * steps_per_epoch / sorted(epoch_s[1:] or epoch_s)[len(epoch_s[1:] or
                                                                       epoch_s) // 2]
    return {"epoch_s": epoch_s, "final_test_acc": acc, "images_per_s": rate,
            "mfu": mfu(rate, mult_adds, peak)}


def run_check(reduced: bool, device: str | None = None) -> dict:
    """Every figure of the check (``FIGURES``), as a dict."""
    from nasforge.data import load_data
    from nasforge.data.load import make_splits
    from nasforge.data.synthetic import make_synthetic
    from nasforge.train import get_recipe

    t0 = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    peak = peak_tflops(dev)
    memory = Memory(dev)
    out = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "peak_bf16_tflops": peak, "reduced": reduced, "torch": torch.__version__,
           "peak_memory_mb": {}}

    search = get_recipe("search")
    if reduced:
        search = search.replace(name="search-reduced", model_overrides=(("N", 1),
                                                                         ("filters", 8)))
    memory.reset()
    out["child"] = child_speed(search, dev, batch=4 if reduced else search.schedule.batch_size,
                               steps=1 if reduced else 30,
                               backend="eager" if reduced else "inductor", peak=peak)
    out["peak_memory_mb"]["child"] = memory.peak_mb()

    if reduced:
        data = make_splits(*make_synthetic(256, 128), split="final")
    else:
        data = load_data("synthetic", split="final")
    memory.reset()
    out["cifar_fast"], recipe = cifar_fast(data, dev, reduced, peak)
    out["peak_memory_mb"]["cifar_fast"] = memory.peak_mb()

    memory.reset()
    out["hand_loop"] = hand_loop(data, recipe, dev, peak)
    out["peak_memory_mb"]["hand_loop"] = memory.peak_mb()
    out["trainer_over_hand"] = (out["hand_loop"]["images_per_s"] /
                                out["cifar_fast"]["images_per_s"])
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reduced", action="store_true", help="tiny sizes: a CPU check in seconds")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    result = run_check(args.reduced, args.device)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
