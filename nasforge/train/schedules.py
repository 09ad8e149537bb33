"""Learning-rate schedules: per-iteration multipliers of a recipe's peak ``lr`` (linear warm-up
then cosine, airbench's linear triangle, SGDR warm restarts) and the ``LambdaLR`` a run steps
after every optimizer step."""
from __future__ import annotations

import math

import torch

from nasforge.train.recipes import LR_SHAPES, Recipe


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


def _cosine_curve(schedule, total_steps: int, warmup_steps: int, min_ratio: float):
    return lambda s: cosine_warmup(s, total_steps, warmup_steps, min_ratio)


def _linear_curve(schedule, total_steps: int, warmup_steps: int, min_ratio: float):
    start = schedule.warmup_start_ratio
    return lambda s: linear_warmup_decay(s, total_steps, warmup_steps, start, min_ratio)


#: ``recipe.schedule.lr_shape`` -> the multiplier of step ``s`` over a run without restarts
LR_CURVES = {"cosine": _cosine_curve, "linear": _linear_curve}
assert set(LR_CURVES) == set(LR_SHAPES), "a recipe's lr shapes and curves differ"


def lr_scheduler(optimizer, recipe: Recipe, steps_per_epoch: int, total_epochs: int):
    """Called once the optimizer exists: the ``LambdaLR`` of ``recipe.schedule`` over
    ``total_epochs`` of ``steps_per_epoch`` (stepped after every optimizer step): SGDR when
    ``restart_epochs > 0``, else the ``lr_shape`` curve after its warm-up."""
    schedule = recipe.schedule
    total_steps = steps_per_epoch * total_epochs
    warmup_steps = int(round(schedule.warmup_epochs * steps_per_epoch))
    min_ratio = schedule.min_lr / schedule.lr
    if schedule.restart_epochs > 0:
        first = int(round(schedule.restart_epochs * steps_per_epoch))
        mult = schedule.restart_mult
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: cosine_restarts(s, first, mult, min_ratio))
    curve = LR_CURVES[schedule.lr_shape](schedule, total_steps, warmup_steps, min_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, curve)
