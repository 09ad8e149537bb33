"""The fast-training ingredients of ``cifar-fast`` (airbench94's, in the one trainer): the
patch-whitening layer and its data initialisation, BatchNorm without scales and with faster
shifts, lookahead, test-time augmentation, alternating flips and the linear lr shape; and the
``airbench`` zoo model against airbench94's layer list. Each is checked against an
independent expectation (a property, a hand computation or a hand-written reference)."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.api import build_model
from nasforge.data import DeviceLoader, ImageData, make_splits, synthetic
from nasforge.flops import count_params
from nasforge.ops.whitening import PatchWhitening, image_patches
from nasforge.train import Recipe, get_recipe, train
from nasforge.train.trainer import (Lookahead, fit_data_initialised, linear_warmup_decay,
                                    tta_logits)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from gpu_check import hand_airbench  # noqa: E402  airbench94's make_net, written out by hand

pytestmark = pytest.mark.usefixtures("one_thread")


def _correlated_images(n=64, size=12, seed=0):
    """Images whose neighbouring pixels and channels are strongly correlated (smoothed noise
    mixed across channels), so whitening has something to undo."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size + 2, size + 2, generator=g)
    x = F.avg_pool2d(x, 3, 1)  # spatial correlation
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.6, 0.5], [0.0, 0.0, 0.3]])
    return torch.einsum("dc,nchw->ndhw", mix, x) + 0.5


# ------------------------------------------------------------------------- patch whitening
def test_image_patches_are_the_k_by_k_windows_in_conv_weight_order():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    rows = image_patches(x, 2)
    assert rows.shape == (2 * 3 * 4, 3 * 2 * 2)
    expected = [x[n, :, i:i + 2, j:j + 2].reshape(-1) for n in range(2) for i in range(3)
                for j in range(4)]
    assert torch.equal(rows, torch.stack(expected))


def test_whitened_patches_have_identity_covariance():
    x = _correlated_images()
    layer = PatchWhitening(3, kernel=2, eps=1e-9).double()
    layer.fit_to_inputs(x)
    with torch.no_grad():
        layer.bias.zero_()
        out = layer(x.double())  # (N, 24, H-1, W-1)
    d = 12
    white = out[:, :d].permute(0, 2, 3, 1).reshape(-1, d)
    cov = white.T @ white / len(white)
    # the input patches are far from white: the property is not trivially true
    patches = image_patches(x, 2).double()
    raw = patches.T @ patches / len(patches)
    assert (raw - torch.eye(d, dtype=torch.float64)).abs().max() > 0.5
    assert torch.allclose(cov, torch.eye(d, dtype=torch.float64), atol=1e-6)
    assert torch.equal(out[:, d:], -out[:, :d])  # the negated copies


def test_whitening_eps_shrinks_each_direction_by_lambda_over_lambda_plus_eps():
    x = _correlated_images(seed=3)
    eps = 0.05
    layer = PatchWhitening(3, kernel=2, eps=eps).double()
    layer.fit_to_inputs(x)
    patches = image_patches(x, 2).double()
    lam = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)
    w = layer.weight[:12].reshape(12, -1)
    proj = patches @ w.T
    var = (proj * proj).mean(0)  # variance of each filter's output, largest eigenvalue first
    assert torch.allclose(var, lam / (lam + eps), rtol=1e-6)


def test_patch_whiten_op_checks_its_channel_count():
    with pytest.raises(ValueError, match="24 outputs"):
        build_model_of_op = __import__("nasforge.ops", fromlist=["create_op"]).create_op
        build_model_of_op("patch_whiten", 3, 16, 1, kernel=2)


def test_data_initialisation_fits_each_layer_to_the_inputs_that_reach_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), PatchWhitening(3, 2, eps=1e-9), nn.BatchNorm2d(24))
    x = _correlated_images(n=40)
    batches = [(x[:25], None), (x[25:], None)]  # two batches: the inputs are concatenated
    fitted = fit_data_initialised(model, batches)
    reference = PatchWhitening(3, 2, eps=1e-9)
    with torch.no_grad():
        reference.fit_to_inputs(model[0](x))
    assert fitted == 1
    assert torch.allclose(model[1].weight, reference.weight, atol=1e-5)
    # the forward stopped at the whitening layer: later BN statistics are untouched
    assert int(model[2].num_batches_tracked) == 0
    assert torch.equal(model[2].running_mean, torch.zeros(24))
    assert model.training


# ---------------------------------------------------------------------------------- zoo
def airbench94_param_count(widths, classes=10):
    """airbench94's layer list counted by hand: the whitening conv (2x2, 3 -> 24) has 288
    frozen filter weights (a buffer in nasforge, so not counted) and 24 biases; each group
    two bias-free 3x3 convs and two BNs (scale + shift); a bias-free linear."""
    total, c_in = 24, 24
    for w in widths:
        total += 9 * c_in * w + 2 * w + 9 * w * w + 2 * w
        c_in = w
    return total + c_in * classes


@pytest.mark.parametrize("widths", [(32, 128, 128), (64, 256, 256)])
def test_airbench_parameter_count_matches_the_layer_list(widths):
    with torch.device("meta"):
        model = build_model("airbench", "cifar", widths=widths)
    assert count_params(model) == airbench94_param_count(widths)


def test_airbench_computes_the_reference_network():
    widths = (8, 16, 16)
    torch.manual_seed(0)
    model = build_model("airbench", "cifar", widths=widths).eval()
    ref = hand_airbench(widths).eval()
    state = model.state_dict()
    whiten = {"whiten.weight": state.pop("blocks.0.ops.whiten.weight"),
              "whiten.bias": state.pop("blocks.0.ops.whiten.bias")}
    rest = [k for k in ref.state_dict() if not k.startswith("whiten.")]
    assert [t.shape for t in state.values()] == [ref.state_dict()[k].shape for k in rest]
    ref.load_state_dict({**whiten, **dict(zip(rest, state.values()))})
    with torch.no_grad():  # non-trivial whitening filters and biases
        model.blocks[0].ops["whiten"].fit_to_inputs(_correlated_images(size=32))
        model.blocks[0].ops["whiten"].bias.normal_()
        ref.whiten.weight.copy_(model.blocks[0].ops["whiten"].weight)
        ref.whiten.bias.copy_(model.blocks[0].ops["whiten"].bias)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)


def test_airbench_convs_start_with_a_partial_identity():
    model = build_model("airbench", "cifar", widths=(32, 128, 128))
    conv = model.blocks[2].ops["conv1"][0]  # 32 -> 128
    w = conv.weight.detach()
    ident = torch.zeros(3, 3)
    ident[1, 1] = 1
    assert all(torch.equal(w[i, j], ident if i == j else torch.zeros(3, 3))
               for i in range(32) for j in range(32))
    assert w[32:].abs().sum() > 0  # the rest keeps the default init


# --------------------------------------------------------------------- training pieces
def test_lookahead_is_the_hand_computed_ema():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    la = Lookahead(model)
    ema = np.array([1.0, -2.0])
    steps = [(np.array([3.0, 0.0]), 0.5), (np.array([-1.0, 4.0]), 0.25),
             (np.array([0.5, 0.5]), 0.9)]
    for w, d in steps:
        with torch.no_grad():
            model.weight.copy_(torch.from_numpy(w).float()[None])
        la.update(model, d)
        ema = d * ema + (1 - d) * w
        np.testing.assert_allclose(model.weight.detach().numpy()[0], ema, rtol=1e-6)
    # decay 1: the model takes the average and the average does not move
    with torch.no_grad():
        model.weight.fill_(100.0)
    la.update(model, 1.0)
    np.testing.assert_allclose(model.weight.detach().numpy()[0], ema, rtol=1e-6)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def _data(n=128, n_test=40, size=12):
    train_set = synthetic.make_images(n, size=size, seed=1)
    test_set = synthetic.make_images(n_test, size=size, seed=2)
    return make_splits(train_set, test_set, synthetic.CLASSES, split="final", seed=0)


BASE = Recipe(name="t").replace(epochs=2, batch_size=32, lr=0.05, weight_decay=0.0,
                                momentum=0.9, grad_clip=None, crop_padding=0, flip=False,
                                eval_batch_size=64)


def _trained(recipe, seed=0):
    torch.manual_seed(seed)
    model = Small()
    result = train(model, _data(), recipe, seed=0)
    return model, result


def test_lookahead_with_zero_decay_changes_nothing():
    plain, r1 = _trained(BASE)
    averaged, r2 = _trained(BASE.replace(lookahead_every=1, lookahead_decay=0.0))
    for a, b in zip(plain.state_dict().values(), averaged.state_dict().values()):
        assert torch.equal(a, b)
    assert r1["test_acc"] == r2["test_acc"]


def test_lookahead_moves_the_weights_of_a_run():
    plain, _ = _trained(BASE)
    averaged, _ = _trained(BASE.replace(lookahead_every=2))
    assert not torch.equal(plain.conv.weight, averaged.conv.weight)


def test_bn_without_scale_keeps_scales_at_one_and_shifts_get_the_lr_multiple():
    """One full-batch step, no momentum, no weight decay, constant lr: the BN shift moves
    by mult x lr x its gradient, everything else by lr x its gradient (computed by hand on
    the same batch: the whole training set, order does not matter for a mean loss and BN)."""
    data = _data(n=64)
    recipe = BASE.replace(epochs=1, batch_size=64, momentum=0.0, lr=0.1,
                          bn_scale=False, bn_bias_lr_mult=8.0)
    torch.manual_seed(0)
    model = Small()
    start = copy.deepcopy(model)
    train(model, data, recipe, seed=0)
    # hand computation of the gradient on the whole (normalised) training set
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    x = (data.train.images.float() / 255 - mean) / std
    with torch.no_grad():
        start.bn.weight.fill_(1.0)
    F.cross_entropy(start(x), data.train.labels).backward()
    assert torch.equal(model.bn.weight, torch.ones(6))
    expected_shift = start.bn.bias - 8.0 * 0.1 * start.bn.bias.grad
    expected_conv = start.conv.weight - 0.1 * start.conv.weight.grad
    assert torch.allclose(model.bn.bias, expected_shift, atol=1e-5)
    assert torch.allclose(model.conv.weight, expected_conv, atol=1e-5)


def test_linear_lr_shape_is_airbenchs_triangle():
    def airbench_get_lr(step, total):  # airbench94's get_lr, warm-up 23% from 0.2, end 0.07
        warmup = int(total * 0.23)
        if step < warmup:
            frac = step / warmup
            return 0.2 * (1 - frac) + 1.0 * frac
        frac = (step - warmup) / (total - warmup)
        return 1.0 * (1 - frac) + 0.07 * frac

    total = 97
    for step in [0, 1, 10, 21, 22, 23, 50, 96, 97]:
        assert linear_warmup_decay(step, total, int(total * 0.23), 0.2, 0.07) == \
            pytest.approx(airbench_get_lr(step, total))


def test_trainer_follows_the_linear_shape():
    recipe = BASE.replace(epochs=4, lr=0.1, min_lr=0.01, lr_shape="linear",
                          warmup_epochs=1.0, warmup_start_ratio=0.2)
    _, result = _trained(recipe)
    steps = 4  # 128 images / 32 per epoch
    # lr after epoch e = the multiplier at iteration e * steps (the scheduler has stepped)
    for entry in result["history"]:
        s = entry["epoch"] * steps
        if s < steps:
            want = 0.2 + 0.8 * s / steps
        else:
            want = 1.0 + (0.1 - 1.0) * min(1.0, (s - steps) / (4 * steps - steps))
        assert entry["lr"] == pytest.approx(0.1 * want)


def test_tta_flip_averages_the_logits_of_x_and_its_mirror():
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        mirror = torch.from_numpy(x.numpy()[..., ::-1].copy())
        want = (model(x) + model(mirror)) / 2
        assert torch.allclose(tta_logits(model, x, "flip"), want, atol=1e-6)
        assert torch.allclose(tta_logits(model, x, "none"), model(x))


def test_tta_flip_translate_adds_the_one_pixel_shifts():
    torch.manual_seed(0)
    model = Small().eval()
    x = torch.randn(2, 3, 8, 8)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    up_left = torch.from_numpy(padded[:, :, 0:8, 0:8].copy())
    down_right = torch.from_numpy(padded[:, :, 2:10, 2:10].copy())

    def both(v):
        return (model(v) + model(torch.from_numpy(v.numpy()[..., ::-1].copy()))) / 2

    with torch.no_grad():
        want = 0.5 * both(x) + 0.25 * both(up_left) + 0.25 * both(down_right)
        assert torch.allclose(tta_logits(model, x, "flip_translate"), want, atol=1e-6)


def test_only_the_last_epoch_is_evaluated_with_tta(monkeypatch):
    from nasforge.train import evaluation

    seen = []
    real = evaluation.tta_logits
    monkeypatch.setattr(evaluation, "tta_logits",
                        lambda m, x, tta="none": (seen.append(tta), real(m, x, tta))[1])
    _trained(BASE.replace(epochs=2, tta="flip"))
    assert set(seen[:len(seen) // 2]) == {"none"} and set(seen[len(seen) // 2:]) == {"flip"}


# -------------------------------------------------------------------------- alternate flip
def _orientations(loader, images, epochs):
    """Per epoch, {image index: flipped?}, identified by comparing each batch image with the
    normalised original and its mirror."""
    out = []
    ref = images.float()
    for _ in range(epochs):
        seen = {}
        for x, _y in loader:
            u8 = (x * torch.tensor(loader_std).view(1, 3, 1, 1) +
                  torch.tensor(loader_mean).view(1, 3, 1, 1)) * 255
            for img in u8.round():
                hit = [(j, False) for j in range(len(ref)) if torch.equal(img, ref[j])] + \
                      [(j, True) for j in range(len(ref)) if torch.equal(img, ref[j].flip(-1))]
                assert len(hit) == 1
                seen[hit[0][0]] = hit[0][1]
        out.append(seen)
    return out


loader_mean, loader_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _flip_loader(images, mode, seed=0):
    return DeviceLoader(ImageData(images, torch.zeros(len(images), dtype=torch.int64)), 5,
                        train=True, mean=loader_mean, std=loader_std, crop_padding=0,
                        flip=True, flip_mode=mode, generator=torch.Generator().manual_seed(seed))


def test_alternate_flip_flips_each_image_on_every_other_epoch():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 6, 6), generator=g, dtype=torch.uint8)
    epochs = _orientations(_flip_loader(images, "alternate"), images, 5)
    assert all(len(e) == 20 for e in epochs)
    for a, b in zip(epochs, epochs[1:]):
        assert all(a[j] != b[j] for j in range(20))
    assert 0 < sum(epochs[0].values()) < 20  # the first epoch's flips are random
    # random mode does not alternate (some image keeps its orientation between epochs)
    rand = _orientations(_flip_loader(images, "random"), images, 2)
    assert any(rand[0][j] == rand[1][j] for j in range(20))


def test_alternate_flip_resumes_with_its_per_image_draw():
    images = torch.randint(0, 256, (20, 3, 6, 6), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    first = _flip_loader(images, "alternate")
    list(first)
    state = first.state_dict()
    again = _flip_loader(images, "alternate", seed=99)
    again.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(first, again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ------------------------------------------------------------------------------- recipes
def test_cifar_fast_uses_the_ingredients_and_the_old_recipe_stays():
    fast = get_recipe("cifar-fast")
    assert fast.defaults.model == "airbench" and fast.augmentation.tta == "flip_translate"
    assert fast.augmentation.flip_mode == "alternate" and fast.schedule.lr_shape == "linear"
    assert not fast.optim.bn_scale and fast.inputs.data_init_images > 0
    assert fast.optim.lookahead_every > 0
    old = get_recipe("cifar-fast-resnet9")
    assert old.defaults.model == "resnet9"
    assert old.schedule.epochs == 16 and old.schedule.batch_size == 512
    assert old.augmentation.tta == "none" and old.augmentation.flip_mode == "random"
    assert old.schedule.lr_shape == "cosine"


def test_nasforge_train_builds_cifar_fast_at_the_recipes_widths(tmp_path, capsys,
                                                                 monkeypatch):
    """The recipe's ``model_overrides`` reach its default model when that is a chain (they
    were dropped for chains: ``nasforge train --recipe cifar-fast`` built airbench at the
    zoo setting's widths)."""
    from data_fixtures import make_images, write_cifar_folder

    from nasforge.cli import main
    from nasforge.train.recipes import RECIPES

    widths = (16, 96, 96)  # not the zoo's cifar setting (32/128/128): the case that failed
    monkeypatch.setitem(RECIPES, "cifar-fast", get_recipe("cifar-fast").replace(
        model_overrides=(("widths", widths),), cpu_bf16=False))
    folder = write_cifar_folder(tmp_path / "cifar", make_images(40, seed=1),
                                make_images(10, seed=2))
    rc = main(["train", "--recipe", "cifar-fast", "--data", str(folder.parent), "--epochs",
               "1", "--runs-dir", str(tmp_path / "runs"), "--name", "r", "--json",
               "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["params"] == airbench94_param_count(widths)


@pytest.mark.parametrize("field,value", [("lr_shape", "step"), ("flip_mode", "always"),
                                         ("tta", "crops"), ("bn_bias_lr_mult", 0.0),
                                         ("lookahead_decay", 1.5), ("data_init_images", -1)])
def test_recipe_rejects_bad_ingredient_values(field, value):
    with pytest.raises(ValueError, match=f"recipe bad: .*{field}"):
        Recipe(name="bad").replace(**{field: value})


# ------------------------------------------------------------------------------- resume
class _Stop(Exception):
    pass


def test_a_resumed_run_with_every_ingredient_equals_an_uninterrupted_one(tmp_path):
    recipe = BASE.replace(
        epochs=3, crop_padding=2, flip=True, flip_mode="alternate", bn_scale=False,
        bn_bias_lr_mult=4.0, lr_shape="linear", warmup_epochs=1.0, warmup_start_ratio=0.2,
        lookahead_every=3, tta="flip_translate", weight_decay=1e-3)
    torch.manual_seed(0)
    whole = nn.Sequential(nn.Identity(), Small())
    torch.manual_seed(0)
    first = copy.deepcopy(whole)
    r_whole = train(whole, _data(), recipe, seed=0, checkpoint_dir=tmp_path / "a")

    def stop_after_one(epoch, _metrics):
        if epoch == 1:
            raise _Stop

    with pytest.raises(_Stop):
        train(first, _data(), recipe, seed=0, checkpoint_dir=tmp_path / "b",
              report=stop_after_one)
    torch.manual_seed(123)  # a fresh process: other weights, restored from the checkpoint
    again = nn.Sequential(nn.Identity(), Small())
    r_again = train(again, _data(), recipe, seed=0, checkpoint_dir=tmp_path / "b")
    for a, b in zip(whole.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert r_whole["test_acc"] == r_again["test_acc"]
