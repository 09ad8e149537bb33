"""``train``: the one training loop for search trials, final runs, baselines and smoke runs."""
from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nasforge.compiler import set_cell_recompute, set_relu_sharing
from nasforge.data import DeviceLoader, ImageData
from nasforge.data.types import fixed_subset_indices
from nasforge.train.checkpoint import (CHECKPOINT_NAME, CHECKPOINT_VERSION, load_checkpoint,
                                       save_checkpoint)
from nasforge.train.hooks import TrainHooks
from nasforge.train.recipes import Recipe, get_recipe
from nasforge.trials import Status

log = logging.getLogger(__name__)


class _Diverged(Exception):
    pass


def cosine_warmup(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """LR multiplier at iteration ``step`` (0-based): linear warm-up from 1/warmup to 1 over
    ``warmup_steps``, then a half cosine from 1 to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def linear_warmup_decay(step: int, total_steps: int, warmup_steps: int, start_ratio: float,
                        min_ratio: float) -> float:
    """LR multiplier at iteration ``step`` (0-based) of airbench's triangle: a straight line
    from ``start_ratio`` at step 0 to 1 at ``warmup_steps``, then a straight line to
    ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        frac = step / warmup_steps
        return start_ratio + (1.0 - start_ratio) * frac
    frac = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 1.0 + (min_ratio - 1.0) * frac


def lookahead_decay(step: int, total_steps: int, final_decay: float) -> float:
    """The lookahead EMA's decay after iteration ``step`` (1-based) of ``total_steps``:
    ``final_decay * (step / total_steps) ** 3`` (airbench: near 0, i.e. no averaging, early
    on; ``final_decay`` at the end)."""
    return final_decay * (step / total_steps) ** 3


class Lookahead:
    """hlb-CIFAR10/airbench's lookahead: an EMA of a model's floating-point state (weights
    and BN statistics) that the model is reset to at every update. Built before the first
    step (the EMA starts at the model's state); ``update`` is called every
    ``recipe.lookahead_every`` steps and after the last one (with decay 1: the model takes
    the EMA)."""

    def __init__(self, model: torch.nn.Module):
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()
                    if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay: float) -> None:
        """``ema <- decay * ema + (1 - decay) * model``, then ``model <- ema``."""
        for k, v in model.state_dict().items():
            if k in self.ema:
                self.ema[k].lerp_(v, 1.0 - decay)
                v.copy_(self.ema[k])

    def state_dict(self) -> dict:
        return dict(self.ema)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.ema[k].copy_(v)


def cosine_restarts(step: int, first_period_steps: int, mult: float, min_ratio: float) -> float:
    """LR multiplier at iteration ``step`` of SGDR (Loshchilov & Hutter 2017, as ENAS's
    ``lr_cosine`` with ``lr_T_0``/``lr_T_mul``): half cosines from 1 to ``min_ratio``, the first
    ``first_period_steps`` long, each next one ``mult`` times longer."""
    period, start = max(1, first_period_steps), 0
    while step >= start + period:
        start += period
        period = max(1, int(round(period * mult)))
    t = (step - start) / period
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def local_batch(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's contiguous share of a global batch (rank ``r`` of ``w``: rows
    ``r * b .. (r + 1) * b``, ``b = len(x) / w``): the data-parallel rule of ``train``."""
    local = len(x) // world
    return x[rank * local:(rank + 1) * local]


def _subset(data: ImageData, n: int | None) -> ImageData:
    """``n`` images of ``data`` (``fixed_subset_indices``)."""
    pick = fixed_subset_indices(len(data), n)
    return data if pick is None else ImageData(data.images[pick], data.labels[pick])


def _split_output(out):
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


class _GlobalBatchShard:
    """Data parallelism over a :class:`DeviceLoader`: every rank draws the same global batches
    (same generator seed) and trains on its contiguous slice ``rank * b .. (rank + 1) * b`` of
    each, ``b = global batch / world``; the union over ranks of a step is the global batch."""

    def __init__(self, loader, rank: int, world: int):
        self.loader, self.rank, self.world = loader, rank, world
        if loader.batch_size % world:
            raise ValueError(f"global batch {loader.batch_size} is not divisible by "
                             f"{world} data-parallel workers")
        self.local = loader.batch_size // world

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield local_batch(x, self.rank, self.world), local_batch(y, self.rank, self.world)

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


class _EvalShard:
    """Evaluation batches ``rank, rank + world, ...`` of a loader (sums are all-reduced)."""

    def __init__(self, loader, rank: int, world: int):
        self.loader, self.rank, self.world = loader, rank, world

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i % self.world == self.rank:
                yield batch


def _all_reduce_sum(values: list[torch.Tensor], device) -> list[float]:
    """Sums over ranks (one collective) when a process group is up, else the values."""
    t = torch.stack([v.to(device, torch.float64) for v in values])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def tta_logits(model, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Logits of ``model`` on ``x`` with test-time augmentation ``tta`` (a recipe's
    ``tta``): "none"; "flip": the mean of the logits of ``x`` and of its mirror image;
    "flip_translate": 1/2 x that + 1/4 x that for ``x`` shifted one pixel down-right and
    1/4 x that for ``x`` shifted one pixel up-left (reflect padding; airbench's level 2)."""
    def plain(v):
        return _split_output(model(v))[0].float()

    def flipped(v):
        return 0.5 * plain(v) + 0.5 * plain(v.flip(-1))

    if tta == "none":
        return plain(x)
    if tta == "flip":
        return flipped(x)
    if tta != "flip_translate":
        raise ValueError(f"unknown tta {tta!r}")
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    shifted = [padded[..., :h, :w], padded[..., 2:2 + h, 2:2 + w]]
    return 0.5 * flipped(x) + 0.25 * sum(flipped(v.contiguous(memory_format=fmt))
                                         for v in shifted)


@torch.no_grad()
def evaluate(model, loader, amp: bool, device: torch.device, *,
             distributed: bool = False, tta: str = "none") -> dict:
    """``{"loss", "acc", "top5"}`` (mean cross-entropy, top-1 and top-5 fractions) of
    ``model`` on ``loader``, its logits taken with test-time augmentation ``tta`` (see
    ``tta_logits``); with ``distributed``, ``loader`` gives this rank's share and the
    sums are all-reduced, so every rank returns the figures of the whole split."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    for x, y in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = tta_logits(model, x, tta)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        k = min(5, logits.shape[1])
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
        n += len(y)
    if distributed:
        loss, c, c5, n = _all_reduce_sum([loss_sum, correct, top5, torch.tensor(float(n))],
                                         device)
    else:
        loss, c, c5 = float(loss_sum), int(correct), int(top5)
    n = max(n, 1)
    return {"loss": loss / n, "acc": c / n, "top5": c5 / n}


def training_loss(recipe: Recipe, output, y: torch.Tensor) -> torch.Tensor:
    """The loss ``train`` minimises for a model ``output`` (logits, or (logits, auxiliary
    logits)): label-smoothed cross-entropy plus ``aux_weight`` x the auxiliary head's."""
    logits, aux = _split_output(output)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
    if aux is not None and recipe.aux_weight > 0:
        loss = loss + recipe.aux_weight * F.cross_entropy(
            aux.float(), y, label_smoothing=recipe.label_smoothing)
    return loss


BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d,
               torch.nn.SyncBatchNorm)


def _param_groups(model, recipe: Recipe) -> list[dict]:
    """The trained parameters (``requires_grad``), BN shifts in their own group with
    ``bn_bias_lr_mult`` x the lr and weight decay / that (one group when it is 1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    mult = recipe.bn_bias_lr_mult
    if mult == 1.0:
        return [{"params": params}]
    shifts = {id(m.bias) for m in model.modules()
              if isinstance(m, BATCH_NORMS) and m.bias is not None and m.bias.requires_grad}
    return [{"params": [p for p in params if id(p) not in shifts]},
            {"params": [p for p in params if id(p) in shifts], "lr": recipe.lr * mult,
             "weight_decay": recipe.weight_decay / mult}]


def _optimizer(model, recipe: Recipe):
    groups = _param_groups(model, recipe)
    if recipe.optimizer == "rmsprop":
        # TF-style RMSProp as used for NASNet on ImageNet: decay (alpha) 0.9, momentum 0.9,
        # epsilon 1.0 (torch adds eps outside the square root, TF inside; with eps = 1 both
        # denominators are ~1 for small second moments)
        return torch.optim.RMSprop(groups, lr=recipe.lr, alpha=recipe.rmsprop_decay,
                                   eps=recipe.rmsprop_eps, momentum=recipe.momentum,
                                   weight_decay=recipe.weight_decay)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov and recipe.momentum > 0,
                           weight_decay=recipe.weight_decay)


def _seed_epoch(seed: int, rank: int, epoch: int) -> None:
    """Data-parallel runs: torch's global RNG (dropout, drop-path) per rank and epoch, so
    ranks draw different masks and a resumed run draws the same ones without saving every
    rank's RNG state."""
    torch.manual_seed((seed * 1_000_003 + rank * 10_007 + epoch) % (2 ** 63))


def train(model: torch.nn.Module, data, recipe: Recipe | str, *,
          report: Callable[[int, dict], None] | None = None, checkpoint_dir=None,
          device=None, seed: int = 0, epochs: int | None = None,
          distributed: bool = False, hooks: TrainHooks | None = None) -> dict:
    """Train ``model`` on ``data.train`` with ``recipe``; return the run's metrics.

    Per epoch: one pass of augmented batches (DeviceLoader, generator seeded by ``seed``),
    SGD (momentum, optional Nesterov, weight decay; or RMSProp with ``recipe.optimizer``)
    (cell networks share their ops' ReLUs unless ``recipe.share_relu`` is False, and
    recompute their cells in the backward pass when ``recipe.recompute_cells`` is True)
    with a per-iteration cosine schedule after
    a linear warm-up, label-smoothed cross-entropy plus ``aux_weight`` x the auxiliary head's
    loss, global gradient-norm clipping, ``set_drop_path_progress(epoch fraction)`` on models
    that have it; then evaluation on ``data.val`` (if any) and on ``data.test`` when
    ``data.split == "final"``; then the checkpoint (``checkpoint_dir/checkpoint.pt``,
    atomic) and ``report(epoch, metrics)`` (1-based epoch; the metrics of the history entry
    plus ``train_s``, the seconds of the training pass, and ``train_images_per_s``).

    ``data`` is a :class:`~nasforge.data.DataSplits` (small images, device-resident loader)
    or a streaming source with ``make_loaders(recipe, device=, seed=, rank=, world=,
    channels_last=) -> (train_loader, {"val": loader, ...})`` such as
    :class:`nasforge.data.stream.ImageFolderStream` (large images, DataLoader workers).

    ``distributed=True``: data-parallel training in an initialised ``torch.distributed``
    process group (Ray Train's TorchTrainer sets one up: gloo on CPU, NCCL on GPU). The model
    is wrapped in ``DistributedDataParallel``; ``recipe.batch_size`` stays the *global* batch
    and each rank trains on its ``1 / world`` share of every global batch, so the same recipe
    gives the same steps on any number of workers; training and evaluation sums are
    all-reduced (every rank returns the same metrics), BN buffers are taken from rank 0
    before evaluation, and only rank 0 writes the checkpoint (``checkpoint_dir`` must be
    readable by every rank for a resume: one machine or a shared file system).

    ``seed`` seeds torch's global RNG (drop-path, dropout) and the loader's generator; build
    the model under your own seed before calling. With a checkpoint in ``checkpoint_dir``, the
    run resumes after its last epoch (model, optimiser, schedule, loader and RNG states) and
    ends with the same metrics and weights as an uninterrupted run. A non-finite training loss
    ends the run with status ``diverged``. ``epochs`` overrides ``recipe.epochs``.

    The fast-training ingredients are recipe fields, applied to any model: ``bn_scale=False``
    fixes every BatchNorm scale at 1 (``freeze_bn_scales``) and ``bn_bias_lr_mult`` gives BN
    shifts their own lr; ``data_init_images`` fits data-initialised layers (modules with
    ``fit_to_inputs``, e.g. the patch-whitening conv) to the first training images before the
    first step (``fit_data_initialised``); ``lr_shape="linear"`` is airbench's triangle;
    ``lookahead_every`` keeps a :class:`Lookahead` EMA (saved in the checkpoint); ``tta``
    evaluates the last epoch with test-time augmentation (``tta_logits``); ``flip_mode``
    goes to the loader.

    ``hooks``: a :class:`~nasforge.train.hooks.TrainHooks` called around the steps and epochs
    (one-shot search steers a supernet through it); its state is saved in the checkpoint and
    restored on resume, and ``end_epoch``'s metrics join the epoch's history entry.

    Returns ``{"status", "epochs", "train_loss", "train_acc", "val_acc"/"val_loss"/"val_top5"
    (with a validation split), "test_acc"/"test_loss"/"test_top5" (final split), "wall_s",
    "train_s", "train_images", "params", "history"}``.
    """
    recipe = get_recipe(recipe)
    total_epochs = int(recipe.epochs if epochs is None else epochs)
    if total_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {total_epochs}")
    place = _placement(recipe, device, distributed)
    model = set_cell_recompute(set_relu_sharing(model.to(place.device), recipe.share_relu),
                               recipe.recompute_cells)
    if place.channels_last:
        model = model.to(memory_format=torch.channels_last)
    hooks = hooks if hooks is not None else TrainHooks()
    hooks.bind(place.device, place.rank, place.world)
    params = sum(p.numel() for p in model.parameters())

    torch.manual_seed(seed)
    train_loader, eval_sets = _loaders(data, recipe, place, seed)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch < 1:
        raise ValueError("the training split is smaller than one batch")
    if not recipe.bn_scale:
        freeze_bn_scales(model)
    if recipe.data_init_images:
        fit_data_initialised(model, _init_batches(data, recipe, place))
    optimizer, scheduler = _optimizer_and_schedule(model, recipe, steps_per_epoch, total_epochs)
    hooks.bind_optimizer(optimizer, functools.partial(training_loss, recipe))
    lookahead = Lookahead(model) if recipe.lookahead_every else None

    progress = _Progress()
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        progress = _resume(ckpt_path, total_epochs, place, model, optimizer, scheduler,
                           train_loader, hooks, lookahead)
    fwd, eval_fwd = _forwards(model, recipe, place, hooks.find_unused_parameters)
    run = _Run(recipe, place, total_epochs, seed, model, fwd, eval_fwd, optimizer, scheduler,
               train_loader, eval_sets, hooks, lookahead)
    t0 = time.perf_counter()
    for epoch in range(progress.epochs_done, total_epochs):
        if progress.status != Status.OK:
            break
        entry, train_s, seen = _run_epoch(run, epoch, progress, t0)
        if ckpt_path is not None:
            _checkpoint(run, ckpt_path, epoch, progress)
        log.info("epoch %d/%d %s", epoch + 1, total_epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in entry.items() if isinstance(v, float)))
        if report is not None:
            report(epoch + 1, dict(entry, train_s=train_s,
                                   train_images_per_s=seen / max(train_s, 1e-9)))
    return _result(progress, params, progress.wall_s_before + time.perf_counter() - t0,
                   eval_sets)


# ------------------------------------------------------------------------- train's parts
@dataclass(frozen=True)
class _Placement:
    """Where and how a run computes; decided once, before the model moves to ``device``."""

    device: torch.device
    distributed: bool
    rank: int
    world: int  # data-parallel processes
    amp: bool  # bf16 autocast
    channels_last: bool
    check_every: int  # iterations between divergence checks (each one syncs a GPU)


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles), the condition under
    which ``Recipe.cpu_bf16`` pays. torch exposes the check only as ``torch.cpu``'s private
    ``_is_amx_tile_supported`` (what inductor uses); a torch without it counts as no."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


def _placement(recipe: Recipe, device, distributed: bool) -> _Placement:
    """Called first by ``train``: the device, this process's rank and the recipe's device
    flags (bf16, channels-last) that apply there."""
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("train(distributed=True) needs an initialised torch.distributed "
                               "process group")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    device = torch.device(device if device is not None else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    on_accel = device.type == "cuda" or recipe.device_flags_on_cpu
    wants_cpu_bf16 = recipe.cpu_bf16 and device.type == "cpu"
    cpu_bf16 = wants_cpu_bf16 and cpu_has_bf16_units()
    if wants_cpu_bf16 and not cpu_bf16:
        log.info("recipe %s: this CPU has no AMX bf16 units; training in float32",
                 recipe.name)
    return _Placement(
        device=device, distributed=distributed, rank=rank, world=world,
        amp=recipe.bf16 and (on_accel or cpu_bf16),
        channels_last=recipe.channels_last and (on_accel or recipe.cpu_channels_last),
        check_every=1 if device.type != "cuda" else max(1, recipe.divergence_check_every))


def _loaders(data, recipe: Recipe, place: _Placement, seed: int):
    """``(train_loader, {"val": loader, "test": loader})`` of this rank: a streaming source
    makes its own; small-image splits get device-resident loaders (the test split only when
    ``data.split == "final"``)."""
    if hasattr(data, "make_loaders"):  # a streaming source (large images, worker processes)
        return data.make_loaders(recipe, device=place.device, seed=seed, rank=place.rank,
                                 world=place.world, channels_last=place.channels_last)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    train_data = _subset(data.train, recipe.train_subset)
    batch = min(recipe.batch_size, len(train_data))
    batch -= batch % place.world
    if batch < 1:
        raise ValueError(f"{len(train_data)} training images cannot be shared by "
                         f"{place.world} workers")
    common = dict(device=place.device, mean=data.mean, std=data.std,
                  channels_last=place.channels_last)
    train_loader = DeviceLoader(train_data, batch, train=True,
                                crop_padding=recipe.crop_padding, pad_mode=recipe.pad_mode,
                                flip=recipe.flip, flip_mode=recipe.flip_mode,
                                cutout=recipe.cutout, generator=gen, **common)
    eval_sets = {}
    if data.val is not None:
        eval_sets["val"] = DeviceLoader(data.val, recipe.eval_batch_size, train=False,
                                        **common)
    if data.test is not None and data.split == "final":
        eval_sets["test"] = DeviceLoader(data.test, recipe.eval_batch_size, train=False,
                                         **common)
    if place.world > 1:
        train_loader = _GlobalBatchShard(train_loader, place.rank, place.world)
        eval_sets = {k: _EvalShard(v, place.rank, place.world) for k, v in eval_sets.items()}
    return train_loader, eval_sets


def _init_batches(data, recipe: Recipe, place: _Placement):
    """The unaugmented, normalised batches of the first ``recipe.data_init_images`` training
    images (of the training subset) that data-initialised layers are fitted to."""
    if hasattr(data, "make_loaders"):
        raise ValueError("data_init_images needs a small-image (device-resident) data set")
    train_data = _subset(data.train, recipe.train_subset)
    n = min(recipe.data_init_images, len(train_data))
    first = ImageData(train_data.images[:n], train_data.labels[:n])
    return DeviceLoader(first, recipe.eval_batch_size, train=False, device=place.device,
                        mean=data.mean, std=data.std, channels_last=place.channels_last)


def freeze_bn_scales(model: torch.nn.Module) -> None:
    """Called before the optimiser is built when ``recipe.bn_scale`` is False: every
    BatchNorm scale is set to 1 and left out of training."""
    for m in model.modules():
        if isinstance(m, BATCH_NORMS) and m.weight is not None:
            with torch.no_grad():
                m.weight.fill_(1.0)
            m.weight.requires_grad_(False)


class _Captured(Exception):
    """Stops a forward once the module being fitted has seen its input."""


@torch.no_grad()
def fit_data_initialised(model: torch.nn.Module, batches) -> int:
    """Called before training when ``recipe.data_init_images`` > 0: every module of ``model``
    with a ``fit_to_inputs(x)`` method (e.g. ``PatchWhitening``), in module order, gets the
    inputs that reach it from ``batches`` (an iterable of ``(x, y)``; concatenated) with the
    modules before it already fitted; the forward stops at the module, so the rest of the
    network and its BN statistics are untouched. Returns the number of modules fitted."""
    fitted = [m for m in model.modules() if callable(getattr(m, "fit_to_inputs", None))]
    was_training = model.training
    model.eval()
    for module in fitted:
        seen = []

        def capture(_module, args):
            seen.append(args[0].detach().float())
            raise _Captured

        handle = module.register_forward_pre_hook(capture)
        try:
            for x, _ in batches:
                try:
                    model(x)
                except _Captured:
                    pass
        finally:
            handle.remove()
        module.fit_to_inputs(torch.cat(seen))
        log.info("fitted %s to %d inputs", type(module).__name__, sum(len(t) for t in seen))
    model.train(was_training)
    return len(fitted)


def _optimizer_and_schedule(model, recipe: Recipe, steps_per_epoch: int, total_epochs: int):
    """The recipe's optimizer and its per-iteration schedule (linear warm-up, then cosine)."""
    total_steps = steps_per_epoch * total_epochs
    warmup_steps = int(round(recipe.warmup_epochs * steps_per_epoch))
    optimizer = _optimizer(model, recipe)
    min_ratio = recipe.min_lr / recipe.lr
    if recipe.restart_epochs > 0:
        first = int(round(recipe.restart_epochs * steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: cosine_restarts(s, first, recipe.restart_mult, min_ratio))
        return optimizer, scheduler
    if recipe.lr_shape == "linear":
        start = recipe.warmup_start_ratio
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: linear_warmup_decay(s, total_steps, warmup_steps, start, min_ratio))
        return optimizer, scheduler
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_warmup(s, total_steps, warmup_steps, min_ratio))
    return optimizer, scheduler


@dataclass
class _Progress:
    """What a run has done so far; the checkpoint carries it from one process to the next."""

    epochs_done: int = 0
    history: list = field(default_factory=list)  # one metrics dict per finished epoch
    status: str = Status.OK.value  # Status.DIVERGED ends the run (plain text: checkpointed)
    wall_s_before: float = 0.0  # seconds of wall time spent by earlier processes
    train_s: float = 0.0  # seconds inside training passes, all processes
    train_images: int = 0  # images trained on, all processes


def _resume(ckpt_path: Path, total_epochs: int, place: _Placement, model, optimizer,
            scheduler, train_loader, hooks: TrainHooks, lookahead: Lookahead | None) -> _Progress:
    """Called when ``checkpoint_dir`` holds a checkpoint: restores the model, optimizer,
    schedule, loader and RNG states in place and returns the progress it recorded."""
    state = load_checkpoint(ckpt_path)  # plain data only: see train/checkpoint.py
    if state.get("total_epochs") != total_epochs:
        log.warning("checkpoint %s was written for %s epochs, this run has %s",
                    ckpt_path, state.get("total_epochs"), total_epochs)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    train_loader.load_state_dict(state["loader"])
    hooks.load_state_dict(state.get("hooks") or {})
    if lookahead is not None and state.get("lookahead"):
        lookahead.load_state_dict(state["lookahead"])
    torch.set_rng_state(state["torch_rng"])
    device = place.device
    if device.type == "cuda" and state.get("cuda_rng") is not None and not place.distributed:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    log.info("resumed from %s after epoch %d", ckpt_path, int(state["epoch"]))
    return _Progress(epochs_done=int(state["epoch"]), history=list(state["history"]),
                     status=state.get("status", Status.OK.value),
                     wall_s_before=float(state.get("wall_s", 0.0)),
                     train_s=float(state.get("train_s", 0.0)),
                     train_images=int(state.get("train_images", 0)))


def _forwards(model, recipe: Recipe, place: _Placement, find_unused_parameters: bool = False):
    """``(train forward, eval forward)``: the model wrapped in DDP and/or ``torch.compile``.
    Called after a resume, so DDP broadcasts the restored weights."""
    fwd = model
    if place.distributed:
        from torch.nn.parallel import DistributedDataParallel

        fwd = DistributedDataParallel(
            model, device_ids=[place.device.index] if place.device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters)
    if recipe.compile:
        fwd = torch.compile(fwd)
    eval_fwd = fwd  # data-parallel evaluation skips DDP (its forward syncs buffers)
    if place.distributed:
        eval_fwd = torch.compile(model) if recipe.compile else model
    return fwd, eval_fwd


@dataclass(frozen=True)
class _Run:
    """Everything an epoch of ``train`` works with, built once before the first epoch."""

    recipe: Recipe
    place: _Placement
    total_epochs: int
    seed: int
    model: torch.nn.Module
    fwd: Callable  # training forward (DDP and/or compiled)
    eval_fwd: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: object
    eval_sets: dict
    hooks: TrainHooks
    lookahead: Lookahead | None = None  # recipe.lookahead_every > 0


@dataclass
class _EpochTally:
    """Sums over one training pass (this rank's until the pass ends, then all ranks')."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    diverged: bool = False


def _run_epoch(run: _Run, epoch: int, progress: _Progress, t0: float):
    """One epoch (0-based ``epoch``): the training pass, then, unless it diverged, the
    evaluation splits; appends the epoch's metrics to ``progress``. Returns ``(metrics,
    seconds of the training pass, images trained on)``."""
    place = run.place
    if place.distributed:
        _seed_epoch(run.seed, place.rank, epoch)
    t_epoch = time.perf_counter()
    tally = _train_pass(run, epoch)
    if tally.diverged:
        progress.status = Status.DIVERGED.value
        log.warning("non-finite training loss in epoch %d: run diverged", epoch + 1)
    if place.device.type == "cuda":
        torch.cuda.synchronize(place.device)
    train_s = time.perf_counter() - t_epoch
    progress.train_s += train_s
    progress.train_images += tally.seen
    entry = {"epoch": epoch + 1,
             "train_loss": (float(tally.loss_sum) / max(tally.seen, 1)
                            if progress.status == Status.OK else math.nan),
             "train_acc": int(tally.correct) / max(tally.seen, 1),
             "lr": run.optimizer.param_groups[0]["lr"]}
    if progress.status == Status.OK:
        entry.update(run.hooks.end_epoch(epoch))
        entry.update(_evaluate_splits(run, final=epoch + 1 == run.total_epochs))
    entry["epoch_s"] = time.perf_counter() - t_epoch
    entry["elapsed_s"] = progress.wall_s_before + time.perf_counter() - t0
    progress.history.append(entry)
    progress.epochs_done = epoch + 1
    return entry, train_s, tally.seen


def _train_pass(run: _Run, epoch: int) -> _EpochTally:
    """One pass over the training loader: label-smoothed cross-entropy (+ the auxiliary
    head's), clipping, optimizer and schedule steps. A non-finite loss stops the pass with
    ``diverged`` set (the sums then hold what was seen before it)."""
    recipe, place, model = run.recipe, run.place, run.model
    device = place.device
    steps_per_epoch = len(run.train_loader)
    has_drop_path = hasattr(model, "set_drop_path_progress")
    model.train()
    tally = _EpochTally(torch.zeros((), dtype=torch.float64, device=device),
                        torch.zeros((), dtype=torch.int64, device=device))
    try:
        for i, (x, y) in enumerate(run.train_loader):
            if has_drop_path:
                model.set_drop_path_progress((epoch + i / steps_per_epoch) / run.total_epochs)
            run.hooks.before_step(epoch, i, (x, y))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=place.amp):
                output = run.fwd(x)
                loss = training_loss(recipe, output, y)
            logits, _ = _split_output(output)
            if (i + 1) % place.check_every == 0:
                check = loss.detach().float()
                if place.distributed:  # every rank must agree, or the collectives hang
                    check = check.clone()
                    dist.all_reduce(check)
                if not torch.isfinite(check):
                    raise _Diverged
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            run.optimizer.step()
            run.scheduler.step()
            if run.lookahead is not None:
                _lookahead_step(run, epoch * steps_per_epoch + i + 1)
            tally.loss_sum += loss.detach().double() * len(y)
            tally.correct += (logits.detach().argmax(1) == y).sum()
            tally.seen += len(y)
        if place.distributed:
            loss_f, correct_f, seen = _all_reduce_sum(
                [tally.loss_sum, tally.correct, torch.tensor(float(tally.seen))], device)
            tally.loss_sum = torch.tensor(loss_f, dtype=torch.float64)
            tally.correct, tally.seen = torch.tensor(int(correct_f)), int(seen)
        if not math.isfinite(float(tally.loss_sum)):
            raise _Diverged
    except _Diverged:
        tally.diverged = True
    return tally


def _lookahead_step(run: _Run, step: int) -> None:
    """After optimizer step ``step`` (1-based over the run): the lookahead update every
    ``lookahead_every`` steps, and at the last step the model takes the EMA."""
    total = len(run.train_loader) * run.total_epochs
    if step % run.recipe.lookahead_every == 0:
        run.lookahead.update(run.model,
                             lookahead_decay(step, total, run.recipe.lookahead_decay))
    if step >= total:  # as airbench: the steps since the last update are dropped
        run.lookahead.update(run.model, 1.0)


def _evaluate_splits(run: _Run, final: bool = False) -> dict:
    """``{"<split>_loss", "<split>_acc", "<split>_top5"}`` for every evaluation split; the
    ``final`` (last) epoch's with the recipe's test-time augmentation."""
    if run.place.distributed:  # rank 0's BN statistics, as DDP's forward would broadcast them
        for b in run.model.buffers():
            dist.broadcast(b, 0)
    out = {}
    for name, loader in run.eval_sets.items():
        m = evaluate(run.eval_fwd, loader, run.place.amp, run.place.device,
                     distributed=run.place.distributed,
                     tta=run.recipe.tta if final else "none")
        out[f"{name}_loss"], out[f"{name}_acc"] = m["loss"], m["acc"]
        out[f"{name}_top5"] = m["top5"]
    return out


def _checkpoint(run: _Run, ckpt_path: Path, epoch: int, progress: _Progress) -> None:
    """After every epoch: rank 0 writes the checkpoint a resume continues from; in a
    data-parallel run every rank waits until it exists."""
    place = run.place
    if place.rank == 0:
        device = place.device
        save_checkpoint(ckpt_path, {
            "version": CHECKPOINT_VERSION, "epoch": epoch + 1, "total_epochs": run.total_epochs,
            "status": progress.status, "history": progress.history,
            "wall_s": progress.history[-1]["elapsed_s"],
            "train_s": progress.train_s, "train_images": progress.train_images,
            "recipe": run.recipe.to_dict(), "seed": run.seed, "world_size": place.world,
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "loader": run.train_loader.state_dict(),
            "hooks": run.hooks.state_dict(),
            "lookahead": None if run.lookahead is None else run.lookahead.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        })
    if place.distributed:
        dist.barrier()  # the checkpoint exists on every rank's return from this epoch


def _result(progress: _Progress, params: int, wall_s: float, eval_sets: dict) -> dict:
    """``train``'s return value: the last epoch's metrics at the top level, with the
    history, sizes and times."""
    history = progress.history
    result = {"status": progress.status, "epochs": len(history), "params": params,
              "wall_s": wall_s, "history": history,
              "train_s": progress.train_s, "train_images": progress.train_images}
    last = history[-1] if history else {}
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "test_loss",
                "test_acc", "test_top5"):
        if key in last:
            result[key] = last[key]
        elif key.startswith("val") and "val" in eval_sets or \
                key.startswith("test") and "test" in eval_sets:
            result[key] = None  # diverged before this split was evaluated
    return result
