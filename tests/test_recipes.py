"""Recipe's groups: the flat JSON of run folders written before them, ``recipe.replace`` by flat
field name, and the grouped form ``to_dict`` writes."""
from __future__ import annotations

import json

import pytest

from nasforge.train import Recipe, get_recipe

# the "smoke" recipe as Recipe.to_dict wrote it into config.json / checkpoints before the
# groups (flat, model_overrides as a dict), copied from such a file
FLAT_SMOKE = json.loads("""{"name": "smoke", "model": "nasnet_a", "setting": "cifar",
 "model_overrides": {"N": 1, "filters": 8}, "data": "synthetic", "split": "final",
 "val_size": 1000, "train_subset": 2000, "epochs": 2, "batch_size": 32, "eval_batch_size": 100,
 "lr": 0.05, "min_lr": 0.0, "warmup_epochs": 0.2, "restart_epochs": 0.0, "restart_mult": 2.0,
 "lr_shape": "cosine", "warmup_start_ratio": 0.0, "bn_bias_lr_mult": 1.0, "bn_scale": true,
 "data_init_images": 0, "lookahead_every": 0, "lookahead_decay": 0.7737809374999998,
 "optimizer": "sgd", "momentum": 0.9, "rmsprop_decay": 0.9, "rmsprop_eps": 1.0,
 "nesterov": false, "weight_decay": 0.0005, "label_smoothing": 0.0, "grad_clip": 5.0,
 "drop_path_keep_prob": 0.8, "aux_weight": 0.4, "stochastic_depth": 1.0, "crop_padding": 4,
 "pad_mode": "zero", "flip": true, "flip_mode": "random", "cutout": 8, "image_size": 224,
 "eval_crop_ratio": 0.875, "min_crop_scale": 0.08, "data_workers": 4, "eval_subset": null,
 "tta": "none", "bf16": true, "channels_last": true, "device_flags_on_cpu": false,
 "cpu_channels_last": true, "cpu_bf16": false, "compile": false, "share_relu": true,
 "recompute_cells": false, "divergence_check_every": 1,
 "notes": "A CPU run of a minute or two"}""")


def test_a_flat_recipe_from_before_the_groups_reads_into_its_groups():
    recipe = Recipe.from_dict(FLAT_SMOKE)
    assert recipe == get_recipe("smoke")
    assert recipe.defaults.model_overrides == (("N", 1), ("filters", 8))
    assert (recipe.schedule.lr, recipe.schedule.warmup_epochs, recipe.optim.kind) == \
        (0.05, 0.2, "sgd")
    assert (recipe.regularisation.drop_path_keep_prob, recipe.augmentation.cutout,
            recipe.speed.eval_batch_size, recipe.inputs.train_subset) == (0.8, 8, 100, 2000)


def test_to_dict_writes_the_grouped_form_and_reads_it_back():
    d = json.loads(json.dumps(get_recipe("smoke").to_dict()))
    assert set(d) == {"name", "notes", "defaults", "inputs", "schedule", "optim",
                      "regularisation", "augmentation", "speed"}
    assert d["schedule"]["lr"] == 0.05 and d["optim"]["kind"] == "sgd"
    assert d["defaults"]["model_overrides"] == {"N": 1, "filters": 8}
    assert Recipe.from_dict(d) == get_recipe("smoke")


def test_a_flat_key_over_a_group_key_wins_and_an_unknown_key_is_refused():
    d = {**get_recipe("smoke").to_dict(), "lr": 0.2}
    assert Recipe.from_dict(d).schedule.lr == 0.2
    with pytest.raises(ValueError, match=r"recipe schedule: unknown key 'peak_lr'"):
        Recipe.from_dict({**d, "schedule": {"peak_lr": 0.1}})
    with pytest.raises(ValueError, match=r"recipe smoke: epochs must be >= 1, got 0"):
        Recipe.from_dict({**FLAT_SMOKE, "epochs": 0})


def test_replace_routes_flat_names_to_their_groups():
    smoke = get_recipe("smoke")
    r = smoke.replace(name="v", lr=0.1, optimizer="rmsprop", cutout=0, epochs=5)
    assert (r.name, r.schedule.lr, r.schedule.epochs, r.optim.kind, r.augmentation.cutout) == \
        ("v", 0.1, 5, "rmsprop", 0)
    assert r.schedule.warmup_epochs == 0.2 and r.optim.momentum == 0.9  # the rest kept
    assert (r.defaults, r.inputs, r.regularisation, r.speed) == \
        (smoke.defaults, smoke.inputs, smoke.regularisation, smoke.speed)
    with pytest.raises(ValueError, match=r"recipe smoke: epochs must be >= 1, got 0"):
        smoke.replace(epochs=0)
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'rmsprop'"):
        smoke.replace(optimizer="adam")
    with pytest.raises(TypeError, match="unknown field"):
        smoke.replace(peak_lr=0.1)


def test_a_flat_field_read_says_which_group_holds_it():
    with pytest.raises(AttributeError, match=r"Recipe\.lr is Recipe\.schedule\.lr"):
        get_recipe("smoke").lr  # noqa: B018
    with pytest.raises(AttributeError, match=r"Recipe\.optimizer is Recipe\.optim\.kind"):
        get_recipe("smoke").optimizer  # noqa: B018
