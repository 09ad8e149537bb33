"""nasforge.train: recipes, the training loop (aux loss, drop-path schedule, divergence, bf16 /
channels_last path), checkpoints and exact resume."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.data import make_splits
from nasforge.data import synthetic
from nasforge.train import RECIPES, Recipe, cosine_warmup, get_recipe, train
from nasforge.train.trainer import CHECKPOINT_NAME

SIZE = 12


pytestmark = pytest.mark.usefixtures("one_thread")


class Stop(Exception):
    """Stands for a kill: raised from a report callback or in the middle of an epoch."""


class Tiny(nn.Module):
    """A small conv net with dropout (uses torch's global RNG), an auxiliary head and a
    drop-path hook, so every trainer feature is exercised in milliseconds."""

    def __init__(self, num_classes=10, aux=True):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8, num_classes)
        self.aux = nn.Linear(8, num_classes) if aux else None
        self.progress = []

    def set_drop_path_progress(self, p):
        self.progress.append(p)
        if len(self.progress) == getattr(self, "die_at_step", None):
            raise Stop  # a kill in the middle of an epoch


    def forward(self, x):
        h = self.features(x).mean((2, 3))
        logits = self.fc(self.drop(h))
        if self.training and self.aux is not None:
            return logits, self.aux(h)
        return logits


def _data(split="search", n=240, n_test=60):
    train = synthetic.make_images(n, size=SIZE, seed=1)
    test = synthetic.make_images(n_test, size=SIZE, seed=2)
    return make_splits(train, test, synthetic.CLASSES, split=split, val_size=40, seed=0)


RECIPE = Recipe(name="test").replace(epochs=3, batch_size=32, lr=0.05, warmup_epochs=0.5,
                                     label_smoothing=0.1, grad_clip=1.0, aux_weight=0.4,
                                     cutout=4, crop_padding=2, nesterov=True)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return Tiny(**kw)


def _strip(history):
    return [{k: v for k, v in e.items() if k not in ("epoch_s", "elapsed_s")} for e in history]


def test_recipes_registry():
    assert {"search", "final-cifar", "cifar-fast", "smoke"} <= set(RECIPES)
    final = get_recipe("final-cifar")
    reg = final.regularisation
    assert (final.schedule.epochs, final.augmentation.cutout, reg.drop_path_keep_prob,
            reg.aux_weight) == (600, 16, 0.6, 0.4)
    assert (final.schedule.lr, final.optim.momentum, final.optim.weight_decay,
            reg.grad_clip) == (0.025, 0.9, 5e-4, 5.0)
    assert dict(final.defaults.model_overrides) == {"N": 6, "filters": 32}
    assert final.overrides == {"N": 6, "filters": 32, "drop_path_keep_prob": 0.6,
                               "aux_head": True}
    assert get_recipe("search").schedule.epochs == 20
    assert dict(get_recipe("search").defaults.model_overrides) == {"N": 2}
    assert get_recipe("smoke").defaults.data == "synthetic"
    with pytest.raises(dataclasses.FrozenInstanceError):
        final.schedule.epochs = 1
    with pytest.raises(KeyError, match="unknown recipe"):
        get_recipe("nope")
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        Recipe(name="bad").replace(epochs=0)


def test_one_rule_says_which_recipe_overrides_a_model_gets():
    final = get_recipe("final-cifar")  # nasnet_a N=6 F=32; drop-path keep 0.6, aux head
    training = {"drop_path_keep_prob": 0.6, "aux_head": True}
    assert final.build_overrides("nasnet_a") == final.build_overrides() == \
        {"N": 6, "filters": 32, **training}  # its own model (search children: None)
    assert final.build_overrides("pnasnet") == training  # another cell network
    assert final.build_overrides("runs/x/best_cell.json") == training
    # a supernet has neither drop-path nor an auxiliary head
    assert final.build_overrides(network="supernet") == \
        {"N": 6, "filters": 32, "drop_path_keep_prob": 1.0, "aux_head": False}
    depth = get_recipe("cifar-stochastic-depth")  # resnet110, p_L = 0.5
    assert depth.build_overrides("resnet110", network="chain") == {"stochastic_depth": 0.5}
    assert depth.build_overrides("resnet56", network="chain") == {"stochastic_depth": 0.5}
    assert depth.build_overrides("chain.json", network="chain_file") == {}
    assert get_recipe("cifar-fast").build_overrides("airbench", network="chain") == \
        {"widths": (32, 128, 128)}
    with pytest.raises(ValueError, match="unknown network kind 'graph'"):
        final.build_overrides(network="graph")


def test_cosine_warmup_schedule():
    total, warm = 100, 10
    f = [cosine_warmup(s, total, warm, 0.0) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert cosine_warmup(total, total, warm, 0.1) == pytest.approx(0.1)


def test_train_search_split_metrics_and_report():
    data = _data("search")
    model = _model()
    seen = []
    res = train(model, data, RECIPE, report=lambda e, m: seen.append((e, m)), device="cpu")
    assert res["status"] == "ok" and res["epochs"] == 3
    assert [e for e, _ in seen] == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_acc", "val_loss", "lr"} <= set(seen[0][1])
    assert "test_acc" not in res
    # the synthetic classes are learnable: 3 epochs beat chance (0.1, 10 balanced classes) by
    # at least 0.1 on the 40 validation images (0.30 measured)
    assert res["val_acc"] >= 0.1 + 0.1
    assert res["params"] == sum(p.numel() for p in model.parameters())
    assert len(res["history"]) == 3 and res["wall_s"] > 0
    # drop-path progress: epoch fraction, from 0 towards 1, per iteration
    prog = model.progress
    assert prog[0] == 0 and all(a < b for a, b in zip(prog, prog[1:])) and prog[-1] < 1
    steps = (len(data.train) // 32) * 3
    assert len(prog) == steps and prog[-1] == pytest.approx((steps - 1) / steps)
    assert res["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to min_lr


def test_final_split_evaluates_test_and_learns():
    data = _data("final", n=400, n_test=100)
    r = RECIPE.replace(epochs=6, cutout=0, aux_weight=0.0)
    res = train(_model(aux=False), data, r, device="cpu")
    assert "val_acc" not in res and res["test_acc"] is not None
    assert res["train_loss"] < res["history"][0]["train_loss"]
    assert res["test_acc"] > 0.2  # chance is 0.1


def test_divergence_is_a_status_not_an_exception():
    data = _data("search")
    r = RECIPE.replace(lr=1e30, grad_clip=None, label_smoothing=0.0)
    res = train(_model(), data, r, device="cpu")
    assert res["status"] == "diverged"
    assert res["epochs"] == 1 and math.isnan(res["train_loss"]) and res["val_acc"] is None


def test_bf16_autocast_and_channels_last_path_on_cpu():
    data = _data("search", n=120)
    r = RECIPE.replace(epochs=1, device_flags_on_cpu=True)
    model = _model()
    res = train(model, data, r, device="cpu")
    assert res["status"] == "ok" and math.isfinite(res["train_loss"])
    w = model.features[0].weight
    assert w.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("has_units", [True, False])
def test_cpu_bf16_autocasts_on_cpu_only_where_the_cpu_has_bf16_units(has_units, monkeypatch):
    from nasforge.train import placement

    monkeypatch.setattr(placement, "cpu_has_bf16_units", lambda: has_units)
    model = _model()
    dtypes = set()
    model.features[0].register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    r = RECIPE.replace(epochs=1, cpu_bf16=True)
    res = train(model, _data("search", n=120), r, device="cpu")
    assert res["status"] == "ok" and math.isfinite(res["train_loss"])
    assert dtypes == ({torch.bfloat16} if has_units else {torch.float32})
    assert model.features[0].weight.dtype == torch.float32  # master weights stay fp32


def test_resume_gives_identical_metrics_and_weights(tmp_path):
    data = _data("search")
    ref_model = _model()
    ref = train(ref_model, data, RECIPE, device="cpu", seed=3, checkpoint_dir=tmp_path / "a")

    def stop_after_first(epoch, m):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(_model(), data, RECIPE, device="cpu", seed=3, checkpoint_dir=tmp_path / "b",
              report=stop_after_first)
    state = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    assert state["epoch"] == 1 and not list((tmp_path / "b").glob("*.tmp"))
    model = _model(seed=99)  # a different init: everything must come from the checkpoint
    epochs_seen = []
    res = train(model, data, RECIPE, device="cpu", seed=3, checkpoint_dir=tmp_path / "b",
                report=lambda e, m: epochs_seen.append(e))
    assert epochs_seen == [2, 3]
    assert _strip(res["history"]) == _strip(ref["history"])
    for k in ("train_loss", "train_acc", "val_acc", "val_loss", "status", "epochs"):
        assert res[k] == ref[k], k
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)
    # a finished run resumes to the same result without training again
    again = train(_model(), data, RECIPE, device="cpu", seed=3, checkpoint_dir=tmp_path / "b",
                  report=lambda e, m: pytest.fail("no epoch should run"))
    assert _strip(again["history"]) == _strip(ref["history"])


def test_kill_during_an_epoch_resumes_from_the_last_checkpoint(tmp_path):
    data = _data("search")
    ref_model = _model()
    ref = train(ref_model, data, RECIPE, device="cpu", seed=5)
    steps = len(data.train) // 32
    model = _model()
    model.die_at_step = steps + 2  # inside epoch 2
    with pytest.raises(Stop):
        train(model, data, RECIPE, device="cpu", seed=5, checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["epoch"] == 1
    model = _model(seed=7)
    res = train(model, data, RECIPE, device="cpu", seed=5, checkpoint_dir=tmp_path)
    assert _strip(res["history"]) == _strip(ref["history"])
    assert res["val_acc"] == ref["val_acc"] and res["train_loss"] == ref["train_loss"]
    for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)


def test_seed_changes_the_run():
    data = _data("search", n=120)
    r = RECIPE.replace(epochs=1)
    a = train(_model(), data, r, device="cpu", seed=0)
    b = train(_model(), data, r, device="cpu", seed=0)
    c = train(_model(), data, r, device="cpu", seed=1)
    assert a["train_loss"] == b["train_loss"] != c["train_loss"]


def test_cell_network_with_aux_head_and_drop_path():
    from nasforge import build_model

    torch.manual_seed(0)
    data = _data("search", n=96)
    model = build_model("nasnet_a", "cifar", num_classes=10, N=1, filters=4, aux_head=True,
                        drop_path_keep_prob=0.6, input_size=SIZE)
    r = RECIPE.replace(epochs=1, batch_size=28, cutout=0)
    res = train(model, data, r, device="cpu")
    assert res["status"] == "ok" and np.isfinite(res["train_loss"])


def test_cosine_restarts_follow_torchs_sgdr_schedule():
    """ENAS' schedule (SGDR, T0 then doubling periods) against torch's
    CosineAnnealingWarmRestarts."""
    from nasforge.train.trainer import cosine_restarts

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.05)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2,
                                                               eta_min=0.0005)
    for step in range(150):
        assert 0.05 * cosine_restarts(step, 10, 2.0, 0.0005 / 0.05) == \
            pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12)
        opt.step()
        ref.step()
