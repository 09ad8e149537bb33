"""Second-order DARTS: the architecture gradient through one virtual weight step.

Liu et al. 2019 (DARTS, eq. 6-8) approximate ``w*(a)`` by one step of the weight optimiser,
``w' = w - xi * grad_w L_train(w, a)``, and descend

    grad_a L_val(w', a) - xi * grad2_{a,w} L_train(w, a) . grad_w' L_val(w', a)

whose Hessian-vector product is the central finite difference

    (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps),
    w+- = w +- eps * grad_w' L_val(w', a),  eps = r / ||grad_w' L_val(w', a)||  (r = 0.01).

The virtual step is the step the trainer's SGD would take with step size ``xi`` (its weight
decay and momentum buffer included, as DARTS' ``_compute_unrolled_model`` does), except for
gradient clipping, which DARTS' virtual step also leaves out (a clipped step is not
differentiable where the norm crosses the threshold). Weights are never changed in place:
every forward at ``w'`` and ``w+-`` runs the module with a dict of tensors
(``torch.func.functional_call``); the forwards' BN running-statistic updates are undone by
``nasforge.compiler.buffers_restored``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Weights = dict[str, torch.Tensor]
FD_SCALE = 0.01  # DARTS' r in eps = r / ||grad_w' L_val|| (architect.py)


def sgd_step(optimizer: torch.optim.Optimizer, params: dict[str, nn.Parameter],
             weights: Weights, grads: dict[str, torch.Tensor | None], lr: float) -> Weights:
    """The weights one ``torch.optim.SGD`` step of ``optimizer`` would leave, with step
    size ``lr``, from ``weights`` and ``grads`` (keyed like ``params``, the optimiser's
    parameters), without changing the optimiser or the parameters: weight decay, momentum
    (from the optimiser's momentum buffers, dampening and Nesterov as torch's SGD), per
    parameter group. A parameter without a gradient stays where it is (SGD skips it).
    Differentiable in ``grads`` and ``weights``."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise TypeError(f"a virtual step needs torch.optim.SGD, not {type(optimizer).__name__}")
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    out = {}
    for name, w in weights.items():
        g = grads.get(name)
        if g is None:
            out[name] = w
            continue
        group = group_of[id(params[name])]
        d = g + group["weight_decay"] * w if group["weight_decay"] else g
        momentum = group["momentum"]
        if momentum:
            buf = optimizer.state.get(params[name], {}).get("momentum_buffer")
            buf = d if buf is None else momentum * buf + (1 - group["dampening"]) * d
            d = d + momentum * buf if group["nesterov"] else buf
        out[name] = w - lr * d
    return out


def unrolled_gradient(train_loss: Callable[[Weights], torch.Tensor],
                      val_loss: Callable[[Weights], torch.Tensor],
                      weights: Weights, alphas: list[torch.Tensor],
                      step: Callable[[Weights, dict], Weights], xi: float, *,
                      reduce: Callable[[list[torch.Tensor]], None] = lambda tensors: None,
                      r: float = FD_SCALE) -> list[torch.Tensor]:
    """The second-order DARTS gradient of ``alphas`` (one tensor per alpha).

    ``train_loss(w)`` / ``val_loss(w)``: the loss of the model run with weights ``w`` on the
    step's training / validation batch, differentiable in ``w`` and in ``alphas``;
    ``weights``: the current weights (not modified); ``step(w, grads)``: the virtual weight
    step (``sgd_step`` with step size ``xi``); ``reduce``: averages gradients in place over
    data-parallel ranks (each rank's losses are of its share of the global batch), called on
    every gradient before it is used so all ranks take the same virtual step and ``eps``."""
    w = {k: v.detach().requires_grad_() for k, v in weights.items()}
    names = list(w)
    g_train = torch.autograd.grad(train_loss(w), [w[k] for k in names], allow_unused=True)
    reduce([g for g in g_train if g is not None])
    with torch.no_grad():
        unrolled = step({k: weights[k].detach() for k in names}, dict(zip(names, g_train)))
    del g_train
    unrolled = {k: v.detach().requires_grad_() for k, v in unrolled.items()}
    grads = torch.autograd.grad(val_loss(unrolled), [*alphas, *unrolled.values()],
                                allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g
             for t, g in zip([*alphas, *unrolled.values()], grads)]
    reduce(grads)
    d_alpha, v = grads[:len(alphas)], dict(zip(names, grads[len(alphas):]))
    del unrolled
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t)
                                                 for t in v.values()]))
    if float(norm) == 0.0:  # the validation loss does not depend on the weights
        return d_alpha
    eps = r / norm
    sides = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            shifted = {k: weights[k].detach() + sign * eps * v[k] for k in names}
        g = torch.autograd.grad(train_loss(shifted), alphas, allow_unused=True)
        sides.append([torch.zeros_like(a) if x is None else x for a, x in zip(alphas, g)])
    hessian_v = [(p - m) / (2 * eps) for p, m in zip(*sides)]
    reduce(hessian_v)
    return [d - xi * h for d, h in zip(d_alpha, hessian_v)]
