"""Child-model training: :func:`train`, the one loop for every use, and named :class:`Recipe`s.

``train(model, data, recipe, report=callback, checkpoint_dir=...)`` trains a model on a
:class:`nasforge.data.DataSplits` and returns its metrics; ``RECIPES`` holds the named
configurations (``search``, ``final-cifar``, ``cifar-fast``, ``smoke``).
"""
from nasforge.train.checkpoint import (CHECKPOINT_NAME, load_checkpoint, save_checkpoint,
                                       sync_metrics)
from nasforge.train.recipes import RECIPES, Recipe, get_recipe, register_recipe
from nasforge.train.trainer import cosine_warmup, evaluate, train

__all__ = ["train", "Recipe", "RECIPES", "get_recipe", "register_recipe", "evaluate",
           "cosine_warmup", "save_checkpoint", "load_checkpoint", "sync_metrics",
           "CHECKPOINT_NAME"]
