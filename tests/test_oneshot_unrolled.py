"""Second-order DARTS (issue 12): the finite-difference architecture gradient against the
exact one (autograd double backward through the virtual step), the virtual step against
torch's SGD, and an architecture step that leaves the weights and BN buffers as it found
them."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nasforge.oneshot import ArchitectureParameters, Supernet
from nasforge.compiler import buffers_restored
from nasforge.oneshot.unrolled import sgd_step, unrolled_gradient
from nasforge.search_spaces import NasNetSpace
from nasforge.zoo import SETTINGS

SPACE = NasNetSpace(num_blocks=2, ops=("sep_conv_3x3", "max_pool_3x3", "identity"),
                    combines=("add",))
# eq. 8's finite difference approximates a Hessian, which a ReLU / max-pool network only has
# between its kinks; with DARTS' eps a weight shift of norm 0.01 crosses many of a tiny
# network's kinks (measured: the difference quotient did not converge), so the comparison with
# the exact gradient runs on a twice-differentiable version of the same supernet: average pool
# for max pool, softplus for every ReLU
SMOOTH_SPACE = NasNetSpace(num_blocks=2, ops=("sep_conv_3x3", "avg_pool_3x3", "identity"),
                           combines=("add",))
MACRO = replace(SETTINGS["cifar"], N=1, filters=4, drop_path_keep_prob=1.0, input_size=16)


@pytest.fixture
def smooth(monkeypatch):
    """Every ReLU of the supernet (nn.ReLU calls F.relu too) becomes a softplus."""
    softplus = F.softplus
    monkeypatch.setattr(F, "relu", lambda x, inplace=False: softplus(x, beta=2.0))


def tiny(dtype=torch.float64, seed=0, space=SMOOTH_SPACE, wrap=lambda m: m):
    """(supernet, alphas, optimiser with momentum buffers, train batch, val batch)."""
    torch.manual_seed(seed)
    supernet = wrap(Supernet(space, MACRO)).to(dtype).train()
    alphas = ArchitectureParameters(space, torch.Generator().manual_seed(seed),
                                    init_scale=0.5).to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randn(8, 3, 16, 16, generator=g, dtype=dtype),
                torch.randint(10, (8,), generator=g)) for _ in range(3)]
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.05, momentum=0.9,
                                weight_decay=3e-4)
    x, y = batches[2]  # one real step: every weight has a momentum buffer
    F.cross_entropy(supernet(x, mix=alphas.probabilities()), y).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return supernet, alphas, optimizer, batches[0], batches[1]


def losses(supernet, alphas, train, val):
    def run(w, batch):
        x, y = batch
        return F.cross_entropy(functional_call(supernet, w, (x,),
                                               {"mix": alphas.probabilities()}), y)

    return (lambda w: run(w, train)), (lambda w: run(w, val))


def exact_second_order(supernet, alphas, optimizer, train, val, xi):
    """d L_val(w'(a), a) / d a with w'(a) = the SGD step from grad_w L_train(w, a), by
    autograd through the step (create_graph=True): no finite difference, no approximation."""
    train_loss, val_loss = losses(supernet, alphas, train, val)
    params = dict(supernet.named_parameters())
    w = {k: p.detach() for k, p in params.items()}
    names = list(w)
    wr = {k: v.clone().requires_grad_() for k, v in w.items()}
    g = torch.autograd.grad(train_loss(wr), [wr[k] for k in names], create_graph=True,
                            allow_unused=True)
    unrolled = sgd_step(optimizer, params, w, dict(zip(names, g)), xi)
    return torch.autograd.grad(val_loss(unrolled), list(alphas.parameters()))


@pytest.mark.parametrize("xi", [0.05, 0.5])
def test_the_finite_difference_gradient_is_the_exact_second_order_gradient(xi, smooth,
                                                                           one_thread):
    supernet, alphas, optimizer, train, val = tiny()
    train_loss, val_loss = losses(supernet, alphas, train, val)
    params = dict(supernet.named_parameters())
    a = list(alphas.parameters())
    with buffers_restored(supernet):
        got = unrolled_gradient(train_loss, val_loss, {k: p.detach() for k, p in params.items()},
                                a, lambda w, g: sgd_step(optimizer, params, w, g, xi), xi)
        expected = exact_second_order(supernet, alphas, optimizer, train, val, xi)
        # the first-order part alone: grad_a L_val(w', a) with w' held fixed
        first = unrolled_gradient(train_loss, val_loss,
                                  {k: p.detach() for k, p in params.items()}, a,
                                  lambda w, g: sgd_step(optimizer, params, w, g, xi), 0.0)
    got, expected, first = (torch.cat([t.flatten() for t in ts])
                            for ts in (got, expected, first))
    second_term = (expected - first).norm()
    assert second_term > 0.01 * expected.norm()  # the Hessian term matters here
    # central difference: O(eps^2) truncation error; float64 makes round-off negligible
    print(f"xi {xi}: |second-order term| / |gradient| {second_term / expected.norm():.3g}, "
          f"|finite difference - exact| / |second-order term| "
          f"{(got - expected).norm() / second_term:.3g}")
    assert (got - expected).norm() < 1e-3 * second_term


def test_the_float32_finite_difference_is_close_to_the_exact_gradient(smooth, one_thread):
    supernet, alphas, optimizer, train, val = tiny(torch.float32)
    train_loss, val_loss = losses(supernet, alphas, train, val)
    params = dict(supernet.named_parameters())
    with buffers_restored(supernet):
        got = unrolled_gradient(train_loss, val_loss, {k: p.detach() for k, p in params.items()},
                                list(alphas.parameters()),
                                lambda w, g: sgd_step(optimizer, params, w, g, 0.5), 0.5)
        expected = exact_second_order(supernet, alphas, optimizer, train, val, 0.5)
    got, expected = (torch.cat([t.flatten() for t in ts]) for ts in (got, expected))
    print(f"float32: |finite difference - exact| / |gradient| "
          f"{(got - expected).norm() / expected.norm():.3g}")
    assert (got - expected).norm() < 1e-3 * expected.norm()


@pytest.mark.parametrize("momentum, nesterov, weight_decay, dampening", [
    (0.0, False, 0.0, 0.0), (0.9, False, 3e-4, 0.0), (0.9, True, 1e-3, 0.0),
    (0.8, False, 0.0, 0.1)])
def test_the_virtual_step_is_the_step_torchs_sgd_takes(momentum, nesterov, weight_decay,
                                                        dampening):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum,
                                nesterov=nesterov, weight_decay=weight_decay,
                                dampening=dampening)
    x = torch.randn(6, 5)
    for _ in range(2):  # the second step reads the momentum buffers of the first
        params = dict(model.named_parameters())
        optimizer.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        params["1.bias"].grad = None  # a parameter without a gradient is left alone
        grads = {k: p.grad for k, p in params.items()}
        virtual = sgd_step(optimizer, params, {k: p.detach().clone() for k, p in params.items()},
                           grads, 0.1)
        before = {k: p.detach().clone() for k, p in params.items()}
        optimizer.step()
        for k, p in params.items():
            # torch fuses w + (-lr) * d (one rounding less): equal to float32 precision
            torch.testing.assert_close(virtual[k], p.detach(), rtol=1e-6, atol=1e-7)
        assert torch.equal(before["1.bias"], params["1.bias"].detach())


def test_the_virtual_step_refuses_an_optimiser_it_cannot_simulate():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.RMSprop(model.parameters())
    params = dict(model.named_parameters())
    with pytest.raises(TypeError, match="needs torch.optim.SGD"):
        sgd_step(opt, params, {k: p.detach() for k, p in params.items()}, {}, 0.1)


def test_an_unrolled_architecture_step_restores_every_weight_and_bn_buffer(one_thread):
    """Darts.before_step with unrolled=true moves the logits only: the supernet's state dict
    (weights, BN running statistics, batch counters) and the weight optimiser's state are
    bitwise what they were."""
    from nasforge.data import load_data
    from nasforge.oneshot.global_bn import use_global_batch_norm
    from nasforge.oneshot.methods import Darts, DartsConfig, OneShotModel
    from nasforge.train import get_recipe
    from nasforge.train.trainer import training_loss

    supernet, _, optimizer, train, _ = tiny(torch.float32, space=SPACE,
                                            wrap=use_global_batch_norm)
    model = OneShotModel(supernet)
    data = load_data("synthetic", split="search", val_size=16, seed=0)
    method = Darts(SPACE, model, data, epochs=1, seed=0,
                   config=DartsConfig(unrolled=True, val_batch_size=8))
    method.bind("cpu", 0, 1)
    method.bind_optimizer(optimizer, lambda out, y: training_loss(get_recipe("oneshot-smoke"),
                                                                  out, y))
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    opt_before = {id(p): {k: v.clone() for k, v in s.items()}
                  for p, s in optimizer.state.items()}
    logits_before = [p.detach().clone() for p in method.alphas.parameters()]
    method.before_step(0, 0, train)
    after = supernet.state_dict()
    assert any("running_mean" in k for k in before) and any("num_batches" in k for k in before)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    for p, s in optimizer.state.items():
        assert all(torch.equal(v, opt_before[id(p)][k]) for k, v in s.items())
    assert all(p.grad is None for p in supernet.parameters())
    assert not all(torch.equal(a, b.detach())
                   for a, b in zip(logits_before, method.alphas.parameters()))


def test_the_memory_check_counts_the_unrolled_steps_weight_copies(monkeypatch):
    """unrolled_gradient holds the weights' size twice more at once (gradient + virtual
    weights, then those + the validation gradient): with free memory between the two
    estimates, a first-order search fits and a second-order one is refused."""
    from nasforge.oneshot import SupernetError, memory

    space = SPACE
    first = memory.estimate(space, MACRO, 8, mixed=True)
    second = memory.estimate(space, MACRO, 8, mixed=True, unrolled=True)
    params = first.params
    assert params == sum(p.numel() for p in Supernet(space, MACRO).parameters())
    # 2 more float32 copies of the weights, times the check's safety factor
    assert second.total_bytes - first.total_bytes == pytest.approx(
        memory.SAFETY * 2 * 4 * params, abs=1)
    monkeypatch.setattr(memory, "available_bytes",
                        lambda device: (first.total_bytes + second.total_bytes) // 2)
    memory.check_fits(space, MACRO, 8, True, torch.device("cpu"))
    with pytest.raises(SupernetError, match="does not fit"):
        memory.check_fits(space, MACRO, 8, True, torch.device("cpu"), unrolled=True)
