"""Recomputed cells (``Recipe.speed.recompute_cells``, ``nasforge.compiler.set_cell_recompute``):
training steps of a cell network with each cell under ``torch.utils.checkpoint`` give the
loss, gradients and BatchNorm statistics of the plain network, with the same drop-path masks,
and keep far fewer bytes for the backward pass."""
import copy

import pytest
import torch
import torch.nn.functional as F

from nasforge.api import build_model
from nasforge.compiler import set_cell_recompute, set_relu_sharing
from nasforge.flops import saved_activation_bytes
from nasforge.train import get_recipe
from nasforge.train.recipes import Recipe


def _child():
    """A tiny NASNet-A child (N=1, F=8) with drop-path (masks drawn in every op output) and
    the auxiliary head."""
    torch.manual_seed(0)
    model = build_model("nasnet_a", "cifar", N=1, filters=8, aux_head=True,
                        drop_path_keep_prob=0.6).train()
    model.set_drop_path_progress(1.0)
    return model


def _train(model, steps: int, batch: int = 8):
    """``steps`` SGD steps on random data (drop-path masks from seed 1); the losses and the
    first step's parameter gradients."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(1)
    losses, first_grads = [], None
    for _ in range(steps):
        x = torch.randn(batch, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)
        logits, aux = model(x)
        loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if first_grads is None:
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        losses.append(loss.detach())
    return losses, first_grads


@pytest.mark.parametrize("share_relu", [True, False])
def test_recomputed_cells_give_the_plain_losses_gradients_and_bn_statistics(share_relu):
    plain = set_relu_sharing(_child(), share_relu)
    recomputed = set_cell_recompute(copy.deepcopy(plain), True)
    assert recomputed.recompute_cells and not plain.recompute_cells
    steps = 3
    losses, grads = _train(recomputed, steps)
    ref_losses, ref_grads = _train(plain, steps)
    # the first step's forward is the same computation; later steps start from weights
    # whose gradients may differ in the last bits
    assert torch.equal(losses[0], ref_losses[0])
    torch.testing.assert_close(torch.stack(losses), torch.stack(ref_losses),
                               rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for key, g in grads.items():
        torch.testing.assert_close(g, ref_grads[key], rtol=1e-5, atol=1e-7, msg=key)
    buffers, ref_buffers = dict(recomputed.named_buffers()), dict(plain.named_buffers())
    tracked = [k for k in buffers if k.endswith("num_batches_tracked")]
    assert tracked and all(int(buffers[k]) == steps for k in tracked)  # once per step
    for key, b in buffers.items():  # running means and variances updated once per step
        torch.testing.assert_close(b, ref_buffers[key], rtol=1e-5, atol=1e-6, msg=key)


def test_the_gradient_comparison_sees_drop_path_masks():
    """The comparison above can fail on masks: with drop-path at keep 0.6, the same step
    under another seed (other masks, as a recomputation with a fresh RNG state would draw)
    gives other gradients."""
    model = _child()
    grads = []
    for seed in (1, 7):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        logits, _ = model(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
        logits.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.cells[0].body.parameters()
                                if p.grad is not None]))
    assert not torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-6)


def test_recomputed_cells_keep_at_most_half_the_bytes_and_eval_is_unchanged():
    model = build_model("nasnet_a", "cifar", N=1, filters=8).train()
    x = torch.randn(4, 3, 32, 32)
    plain = saved_activation_bytes(model, x)
    recomputed = saved_activation_bytes(set_cell_recompute(copy.deepcopy(model), True), x)
    assert 0 < recomputed <= 0.5 * plain
    model.eval()
    with torch.no_grad():
        expected = model(x)
        got = set_cell_recompute(copy.deepcopy(model), True)(x)
    assert torch.equal(got, expected)


def test_recipe_field_round_trips_and_reaches_the_model():
    recipe = get_recipe("search").replace(name="search-recompute", recompute_cells=True)
    assert not get_recipe("search").speed.recompute_cells  # off by default
    again = Recipe.from_dict(recipe.to_dict())
    assert again.speed.recompute_cells is True and again == recipe

    from nasforge.data import make_splits, synthetic
    from nasforge.train import train

    data = make_splits(synthetic.make_images(48, size=32, seed=1),
                       synthetic.make_images(16, size=32, seed=2), synthetic.CLASSES,
                       split="search", val_size=16, seed=0)
    small = get_recipe("smoke").replace(train_subset=None, epochs=1, batch_size=16,
                                        recompute_cells=True)
    model = build_model("nasnet_a", "cifar", N=1, filters=8)
    result = train(model, data, small, device="cpu", seed=0)
    assert result["status"] == "ok" and model.recompute_cells
