"""``train``: the one training loop for search trials, final runs, baselines and smoke runs.

Its parts live in their own modules: ``placement`` (device, rank, bf16, channels-last, DDP),
``loaders`` (the run's loaders and data-parallel shards), ``data_init`` (data-initialised
layers), ``optimizers`` (parameter groups, SGD/RMSProp), ``schedules`` (learning-rate curves),
``lookahead`` (the weight EMA) and ``evaluation`` (plain and test-time-augmented); this module
is the loop over epochs, the checkpoint it writes and the resume from it.
"""
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
from nasforge.train.checkpoint import (CHECKPOINT_NAME, CHECKPOINT_VERSION, load_checkpoint,
                                       save_checkpoint)
from nasforge.train.data_init import fit_data_initialised, init_batches
from nasforge.train.evaluation import (all_reduce_sum, evaluate, evaluate_splits, split_output,
                                       tta_logits)
from nasforge.train.hooks import TrainHooks
from nasforge.train.loaders import local_batch, make_loaders
from nasforge.train.lookahead import Lookahead, lookahead_decay, lookahead_step
from nasforge.train.optimizers import BATCH_NORMS, freeze_bn_scales, make_optimizer
from nasforge.train.placement import (Placement, cpu_has_bf16_units, decide_placement,
                                      forwards)
from nasforge.train.recipes import Recipe, get_recipe
from nasforge.trials import Status
from nasforge.train.schedules import (cosine_restarts, cosine_warmup, linear_warmup_decay,
                                      lr_scheduler)

# the names this module held before its parts moved out, still importable from here
__all__ = ["train", "training_loss", "evaluate", "tta_logits", "cosine_warmup",
           "cosine_restarts", "linear_warmup_decay", "lookahead_decay", "Lookahead",
           "local_batch", "BATCH_NORMS", "freeze_bn_scales", "fit_data_initialised",
           "cpu_has_bf16_units", "CHECKPOINT_NAME"]

log = logging.getLogger(__name__)


class _Diverged(Exception):
    pass


def training_loss(recipe: Recipe, output, y: torch.Tensor) -> torch.Tensor:
    """The loss ``train`` minimises for a model ``output`` (logits, or (logits, auxiliary
    logits)): label-smoothed cross-entropy plus ``aux_weight`` x the auxiliary head's."""
    reg = recipe.regularisation
    logits, aux = split_output(output)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=reg.label_smoothing)
    if aux is not None and reg.aux_weight > 0:
        loss = loss + reg.aux_weight * F.cross_entropy(
            aux.float(), y, label_smoothing=reg.label_smoothing)
    return loss


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
    SGD (momentum, optional Nesterov, weight decay; or RMSProp with ``recipe.optim.kind``)
    (cell networks share their ops' ReLUs unless ``recipe.speed.share_relu`` is False, and
    recompute their cells in the backward pass when ``recipe.speed.recompute_cells`` is
    True) with a per-iteration cosine schedule after
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
    is wrapped in ``DistributedDataParallel``; ``recipe.schedule.batch_size`` stays the *global*
    batch
    and each rank trains on its ``1 / world`` share of every global batch, so the same
    recipe gives the same steps on any number of workers; training and evaluation sums are
    all-reduced (every rank returns the same metrics), BN buffers are taken from rank 0
    before evaluation, and only rank 0 writes the checkpoint (``checkpoint_dir`` must be
    readable by every rank for a resume: one machine or a shared file system).

    ``seed`` seeds torch's global RNG (drop-path, dropout) and the loader's generator; build
    the model under your own seed before calling. With a checkpoint in ``checkpoint_dir``, the
    run resumes after its last epoch (model, optimiser, schedule, loader and RNG states) and
    ends with the same metrics and weights as an uninterrupted run. A non-finite training loss
    ends the run with status ``diverged``. ``epochs`` overrides ``recipe.schedule.epochs``.

    The fast-training ingredients are recipe fields, applied to any model:
    ``optim.bn_scale=False`` fixes every BatchNorm scale at 1 (``freeze_bn_scales``) and
    ``optim.bn_bias_lr_mult`` gives BN shifts their own lr; ``inputs.data_init_images`` fits
    data-initialised layers (modules with ``fit_to_inputs``, e.g. the patch-whitening conv) to
    the first training images before the first step (``fit_data_initialised``);
    ``schedule.lr_shape="linear"`` is airbench's triangle; ``optim.lookahead_every`` keeps a
    :class:`Lookahead` EMA (saved in the checkpoint); ``augmentation.tta`` evaluates the last
    epoch with test-time augmentation (``tta_logits``); ``augmentation.flip_mode`` goes to the
    loader.

    ``hooks``: a :class:`~nasforge.train.hooks.TrainHooks` called around the steps and epochs
    (one-shot search steers a supernet through it); its state is saved in the checkpoint and
    restored on resume, and ``end_epoch``'s metrics join the epoch's history entry.

    Returns ``{"status", "epochs", "train_loss", "train_acc", "val_acc"/"val_loss"/"val_top5"
    (with a validation split), "test_acc"/"test_loss"/"test_top5" (final split), "wall_s",
    "train_s", "train_images", "params", "history"}``.
    """
    recipe = get_recipe(recipe)
    total_epochs = int(recipe.schedule.epochs if epochs is None else epochs)
    if total_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {total_epochs}")
    place = decide_placement(recipe, device, distributed)
    model = _on_device(model, recipe, place)
    hooks = hooks if hooks is not None else TrainHooks()
    hooks.bind(place.device, place.rank, place.world)
    params = sum(p.numel() for p in model.parameters())

    torch.manual_seed(seed)
    train_loader, eval_sets = make_loaders(data, recipe, place, seed)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch < 1:
        raise ValueError("the training split is smaller than one batch")
    _prepare_weights(model, data, recipe, place)
    optimizer = make_optimizer(model, recipe)
    scheduler = lr_scheduler(optimizer, recipe, steps_per_epoch, total_epochs)
    hooks.bind_optimizer(optimizer, functools.partial(training_loss, recipe))
    lookahead = Lookahead(model) if recipe.optim.lookahead_every else None

    progress = _Progress()
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        progress = _resume(ckpt_path, total_epochs, place, model, optimizer, scheduler,
                           train_loader, hooks, lookahead)
    fwd, eval_fwd = forwards(model, recipe, place, hooks.find_unused_parameters)
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


def _on_device(model: torch.nn.Module, recipe: Recipe, place: Placement) -> torch.nn.Module:
    """Called first on the model: moved to the device, its ReLU sharing and cell
    recomputation set as the recipe says, channels-last where the placement uses it."""
    speed = recipe.speed
    model = set_cell_recompute(set_relu_sharing(model.to(place.device), speed.share_relu),
                               speed.recompute_cells)
    if place.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _prepare_weights(model: torch.nn.Module, data, recipe: Recipe, place: Placement) -> None:
    """Called before the optimizer is built: BatchNorm scales fixed at 1 when
    ``optim.bn_scale`` is False, data-initialised layers fitted to the first
    ``inputs.data_init_images`` training images."""
    if not recipe.optim.bn_scale:
        freeze_bn_scales(model)
    if recipe.inputs.data_init_images:
        fit_data_initialised(model, init_batches(data, recipe, place))


@dataclass
class _Progress:
    """What a run has done so far; the checkpoint carries it from one process to the next."""

    epochs_done: int = 0
    history: list = field(default_factory=list)  # one metrics dict per finished epoch
    status: str = Status.OK.value  # Status.DIVERGED ends the run (plain text: checkpointed)
    wall_s_before: float = 0.0  # seconds of wall time spent by earlier processes
    train_s: float = 0.0  # seconds inside training passes, all processes
    train_images: int = 0  # images trained on, all processes


def _resume(ckpt_path: Path, total_epochs: int, place: Placement, model, optimizer,
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


@dataclass(frozen=True)
class _Run:
    """Everything an epoch of ``train`` works with, built once before the first epoch."""

    recipe: Recipe
    place: Placement
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
    lookahead: Lookahead | None = None  # recipe.optim.lookahead_every > 0


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
        final = epoch + 1 == run.total_epochs  # the last epoch: with test-time augmentation
        entry.update(evaluate_splits(run.model, run.eval_fwd, run.eval_sets, place,
                                     run.recipe.augmentation.tta if final else "none"))
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
    grad_clip = recipe.regularisation.grad_clip
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
            logits, _ = split_output(output)
            if (i + 1) % place.check_every == 0:
                check = loss.detach().float()
                if place.distributed:  # every rank must agree, or the collectives hang
                    check = check.clone()
                    dist.all_reduce(check)
                if not torch.isfinite(check):
                    raise _Diverged
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            run.optimizer.step()
            run.scheduler.step()
            if run.lookahead is not None:
                lookahead_step(run.lookahead, model, epoch * steps_per_epoch + i + 1,
                               steps_per_epoch * run.total_epochs,
                               recipe.optim.lookahead_every, recipe.optim.lookahead_decay)
            tally.loss_sum += loss.detach().double() * len(y)
            tally.correct += (logits.detach().argmax(1) == y).sum()
            tally.seen += len(y)
        if place.distributed:
            loss_f, correct_f, seen = all_reduce_sum(
                [tally.loss_sum, tally.correct, torch.tensor(float(tally.seen))], device)
            tally.loss_sum = torch.tensor(loss_f, dtype=torch.float64)
            tally.correct, tally.seen = torch.tensor(int(correct_f)), int(seen)
        if not math.isfinite(float(tally.loss_sum)):
            raise _Diverged
    except _Diverged:
        tally.diverged = True
    return tally


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
