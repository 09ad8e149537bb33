"""Data-initialised layers (``recipe.inputs.data_init_images``): modules with a
``fit_to_inputs`` method, such as the patch-whitening conv, set themselves from the first
training images before the first step."""
from __future__ import annotations

import logging

import torch

from nasforge.data import DeviceLoader, ImageData
from nasforge.train.loaders import image_subset
from nasforge.train.placement import Placement
from nasforge.train.recipes import Recipe

log = logging.getLogger(__name__)


def init_batches(data, recipe: Recipe, place: Placement):
    """The unaugmented, normalised batches of the first ``recipe.inputs.data_init_images``
    training images (of the training subset) that data-initialised layers are fitted to."""
    if hasattr(data, "make_loaders"):
        raise ValueError("data_init_images needs a small-image (device-resident) data set")
    train_data = image_subset(data.train, recipe.inputs.train_subset)
    n = min(recipe.inputs.data_init_images, len(train_data))
    first = ImageData(train_data.images[:n], train_data.labels[:n])
    return DeviceLoader(first, recipe.speed.eval_batch_size, train=False, device=place.device,
                        mean=data.mean, std=data.std, channels_last=place.channels_last)


class _Captured(Exception):
    """Stops a forward once the module being fitted has seen its input."""


@torch.no_grad()
def fit_data_initialised(model: torch.nn.Module, batches) -> int:
    """Called before training when ``recipe.inputs.data_init_images`` > 0: every module of
    ``model`` with a ``fit_to_inputs(x)`` method (e.g. ``PatchWhitening``), in module order,
    gets the inputs that reach it from ``batches`` (an iterable of ``(x, y)``; concatenated)
    with the modules before it already fitted; the forward stops at the module, so the rest
    of the network and its BN statistics are untouched. Returns the number of modules
    fitted."""
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
