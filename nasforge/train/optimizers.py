"""The weight optimizer of a recipe (``recipe.optim``): which parameters learn (BN scales
frozen or not), their groups (BN shifts at their own lr) and the update rule."""
from __future__ import annotations

import torch

from nasforge.train.recipes import OPTIMIZERS, Recipe

BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d,
               torch.nn.SyncBatchNorm)


def freeze_bn_scales(model: torch.nn.Module) -> None:
    """Called before the optimiser is built when ``recipe.optim.bn_scale`` is False: every
    BatchNorm scale is set to 1 and left out of training."""
    for m in model.modules():
        if isinstance(m, BATCH_NORMS) and m.weight is not None:
            with torch.no_grad():
                m.weight.fill_(1.0)
            m.weight.requires_grad_(False)


def param_groups(model, recipe: Recipe) -> list[dict]:
    """The trained parameters (``requires_grad``), BN shifts in their own group with
    ``bn_bias_lr_mult`` x the lr and weight decay / that (one group when it is 1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    mult = recipe.optim.bn_bias_lr_mult
    if mult == 1.0:
        return [{"params": params}]
    shifts = {id(m.bias) for m in model.modules()
              if isinstance(m, BATCH_NORMS) and m.bias is not None and m.bias.requires_grad}
    return [{"params": [p for p in params if id(p) not in shifts]},
            {"params": [p for p in params if id(p) in shifts], "lr": recipe.schedule.lr * mult,
             "weight_decay": recipe.optim.weight_decay / mult}]


def _sgd(groups: list[dict], recipe: Recipe) -> torch.optim.Optimizer:
    optim = recipe.optim
    return torch.optim.SGD(groups, lr=recipe.schedule.lr, momentum=optim.momentum,
                           nesterov=optim.nesterov and optim.momentum > 0,
                           weight_decay=optim.weight_decay)


def _rmsprop(groups: list[dict], recipe: Recipe) -> torch.optim.Optimizer:
    # TF-style RMSProp as used for NASNet on ImageNet: decay (alpha) 0.9, momentum 0.9,
    # epsilon 1.0 (torch adds eps outside the square root, TF inside; with eps = 1 both
    # denominators are ~1 for small second moments)
    optim = recipe.optim
    return torch.optim.RMSprop(groups, lr=recipe.schedule.lr, alpha=optim.rmsprop_decay,
                               eps=optim.rmsprop_eps, momentum=optim.momentum,
                               weight_decay=optim.weight_decay)


#: ``recipe.optim.kind`` -> builder of the optimizer over the parameter groups
OPTIMIZER_BUILDERS = {"sgd": _sgd, "rmsprop": _rmsprop}
assert set(OPTIMIZER_BUILDERS) == set(OPTIMIZERS), "a recipe's optimizer names and builders differ"


def make_optimizer(model, recipe: Recipe) -> torch.optim.Optimizer:
    """Called once per run, after BN scales are frozen and data-initialised layers fitted:
    the recipe's optimizer over ``param_groups``."""
    return OPTIMIZER_BUILDERS[recipe.optim.kind](param_groups(model, recipe), recipe)
