"""Zero-cost proxies: rank networks at initialization from one minibatch, without training.

A proxy is a function of a network (any ``nn.Module`` nasforge compiles: a NASNet cell pair,
a NAS-Bench-201 network, a zoo chain) and one batch of real data; it returns one float, larger
meaning "predicted better". The API, for the CLI, searchers and predictors alike:

* ``score(name, model, batch, seed=0)``: one proxy's value; ``batch`` is ``(inputs, targets)``
  (normalised images N x C x H x W, integer labels N); the model is left untouched (each proxy
  works on a copy) and the value is deterministic given ``seed`` (it seeds torch's RNG around
  the computation: dropout, drop-path);
* ``score_all(names, model, batch, seed=0)``: a dict of several;
* ``PROXIES``: the registry, name -> ``Proxy`` (its function and a one-line description);
  ``check_names(names)`` raises ``ProxyError`` naming an unknown one;
* ``data_batch(splits, batch_size, seed)``: the batch, drawn from a loaded data set's
  training split (``nasforge.data.load_data``) and normalised as training does
  (``shape_batch``: zeros of a shape, for the proxies marked ``data_free``: synflow, params,
  flops);
* ``build_network(arch, config, seed)``: a resolved architecture's module with weights drawn
  from ``seed`` (``nasforge.api.resolve`` gives ``arch, config``), so a score is a function of
  the architecture, the batch and the seed.

Registered: ``synflow``, ``snip``, ``grasp``, ``fisher``, ``grad_norm``, ``jacob_cov``,
``nwot`` (NASWOT), ``params``, ``flops``. Each follows the definition of Abdelfattah et al.
(ICLR 2021, SamsungLabs/zero-cost-nas) or Mellor et al. (ICML 2021) as NASLib implements it,
which computed the reference scores of the shipped NAS-Bench-201 sample: gradients of the
cross-entropy of one batch in train mode (BN with batch statistics), summed over the weights
of every ``Conv2d`` and ``Linear`` layer (biases and BN parameters excluded); synflow in double
precision with BN bypassed and an all-ones input; details and sources per proxy in
docs/reference.md section 10.
Two conventions make every proxy "larger is better" and finite where it can be:
synflow is reported as ``log`` of the sum (NASLib's form; the sum overflows float32 on deep
networks), and a degenerate value (a network whose output does not depend on its input, a
singular NASWOT kernel) is ``-inf``. A proxy that cannot apply to a network raises
``ProxyError`` (a ``NasforgeError``) saying which and why: no ``Conv2d``/``Linear`` weights, no
``nn.ReLU`` module for ``nwot``, a batch of one for ``jacob_cov``, an output that is not
N x classes logits for the loss-based ones.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.api import compile_architecture
from nasforge.compiler import set_relu_sharing
from nasforge.data.types import DataSplits
from nasforge.errors import NasforgeError
from nasforge.flops import count_mult_adds, count_params

# images per batch: NASLib's zero-cost runner (naslib/runners/zc/zc_config.yaml), which
# computed the shipped sample's scores (its jacov values sit near -batch, as they must)
BATCH_SIZE = 32
JACOB_COV_EPS = 1e-5  # k of zero-cost-nas' eval_score: -sum(log(v + k) + 1 / (v + k))


class ProxyError(NasforgeError, ValueError):
    """An unknown proxy, or a proxy that cannot apply to this network or batch."""


@dataclass(frozen=True)
class Proxy:
    """A registered proxy: ``fn(model_copy, inputs, targets) -> float``; ``copies``: whether it
    needs its own copy of the model (it changes weights, grads, BN or hooks); ``data_free``:
    it reads only the batch's shape (``shape_batch`` serves it without a data set)."""

    name: str
    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], float]
    description: str
    copies: bool = True
    data_free: bool = False


# --------------------------------------------------------------------------- helpers
def _weighted_layers(model: nn.Module, proxy: str) -> list[nn.Module]:
    """The layers whose weights the gradient proxies sum over: every Conv2d and Linear."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ProxyError(f"proxy {proxy!r} sums over the weights of Conv2d and Linear layers; "
                         f"this network ({type(model).__name__}) has none")
    return layers


def _logits(model: nn.Module, inputs: torch.Tensor, proxy: str) -> torch.Tensor:
    out = model(inputs)
    if isinstance(out, (tuple, list)):  # (logits, auxiliary logits) of a NASNet in train mode
        out = out[0]
    if out.dim() != 2 or out.shape[0] != inputs.shape[0]:
        raise ProxyError(f"proxy {proxy!r} needs a classifier's N x classes output; this "
                         f"network gives {tuple(out.shape)}")
    return out


def _loss(model, inputs, targets, proxy: str) -> torch.Tensor:
    out = _logits(model, inputs, proxy)
    if int(targets.max()) >= out.shape[1] or int(targets.min()) < 0:
        raise ProxyError(f"proxy {proxy!r}: labels {int(targets.min())}..{int(targets.max())} "
                         f"do not fit the network's {out.shape[1]} classes")
    return F.cross_entropy(out, targets)


def _finite_or_worst(value: float) -> float:
    return float(value) if math.isfinite(value) else -math.inf


# --------------------------------------------------------------------------- the proxies
def grad_norm(model, inputs, targets) -> float:
    """Sum over Conv2d/Linear layers of the L2 norm of dLoss/dW."""
    layers = _weighted_layers(model, "grad_norm")
    _loss(model, inputs, targets, "grad_norm").backward()
    return float(sum(layer.weight.grad.norm() for layer in layers
                     if layer.weight.grad is not None))


def snip(model, inputs, targets) -> float:
    """SNIP's connection sensitivity: sum of ``|W * dLoss/dW|`` (Lee et al., ICLR 2019)."""
    layers = _weighted_layers(model, "snip")
    _loss(model, inputs, targets, "snip").backward()
    return float(sum((layer.weight.detach() * layer.weight.grad).abs().sum()
                     for layer in layers if layer.weight.grad is not None))


def grasp(model, inputs, targets) -> float:
    """GraSP: sum of ``-W * (H g)``, H the Hessian of the loss, g its gradient (Wang et al.,
    ICLR 2020; zero-cost-nas' sign, which correlates positively with accuracy)."""
    layers = _weighted_layers(model, "grasp")
    weights = [layer.weight for layer in layers]
    g = torch.autograd.grad(_loss(model, inputs, targets, "grasp"), weights, allow_unused=True)
    g_f = torch.autograd.grad(_loss(model, inputs, targets, "grasp"), weights,
                              create_graph=True, allow_unused=True)
    z = sum((a.detach() * b).sum() for a, b in zip(g, g_f) if a is not None and b is not None)
    if not torch.is_tensor(z) or not z.requires_grad:
        return -math.inf  # the loss does not depend on any weight
    hg = torch.autograd.grad(z, weights, allow_unused=True)
    return float(sum((-w.detach() * h).sum() for w, h in zip(weights, hg) if h is not None))


def fisher(model, inputs, targets) -> float:
    """Fisher pruning's channel saliency (Theis et al. 2018, as zero-cost-nas sums it): per
    output channel of each Conv2d/Linear, ``0.5 * mean_n (sum_hw a * dLoss/da)^2`` over the
    layer's output activation ``a``, times the channel's fan-in (zero-cost-nas spreads each
    channel's value over its weights before summing), summed."""
    layers = _weighted_layers(model, "fisher")
    acts: dict[nn.Module, list[torch.Tensor]] = {layer: [] for layer in layers}
    handles = []

    def keep(module, _inputs, output):
        if output.requires_grad:
            output.retain_grad()
            acts[module].append(output)

    for layer in layers:
        handles.append(layer.register_forward_hook(keep))
    try:
        _loss(model, inputs, targets, "fisher").backward()
    finally:
        for h in handles:
            h.remove()
    total = 0.0
    for layer, outputs in acts.items():
        fan_in = layer.weight[0].numel()
        for a in outputs:
            if a.grad is None:
                continue
            prod = a.detach() * a.grad
            g_nk = prod.sum(dim=tuple(range(2, prod.dim()))) if prod.dim() > 2 else prod
            total += float(g_nk.pow(2).mean(0).mul(0.5).sum()) * fan_in
    return total


def jacob_cov(model, inputs, targets) -> float:
    """Score of the correlations of the input Jacobians of the batch (Mellor et al. 2020 v1,
    as zero-cost-nas computes it): ``-sum(log(v + k) + 1/(v + k))`` over the eigenvalues v of
    the correlation matrix of ``d sum(outputs) / d x`` per image, k = 1e-5."""
    if inputs.shape[0] < 2:
        raise ProxyError(f"proxy 'jacob_cov' correlates the input gradients of the images of a "
                         f"batch: it needs at least 2 images, got {inputs.shape[0]}")
    x = inputs.clone().requires_grad_(True)
    out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    out.backward(torch.ones_like(out))
    jac = x.grad.detach().reshape(len(x), -1).double().numpy()
    if not np.all(jac.std(axis=1) > 0):
        return -math.inf  # an output that does not depend on some image: no correlation
    corr = np.corrcoef(jac)
    v = np.linalg.eigvalsh(corr)
    return _finite_or_worst(-np.sum(np.log(v + JACOB_COV_EPS) + 1.0 / (v + JACOB_COV_EPS)))


def nwot(model, inputs, targets) -> float:
    """NASWOT (Mellor et al., ICML 2021): ``log |det K|`` of the batch's kernel
    ``K[i, j] = sum over ReLU units of [c_i == c_j]``, c the binary code (input > 0) of every
    ``nn.ReLU`` module; NASLib's form: ``K += c c^T + (1 - c)(1 - c)^T`` per ReLU."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ProxyError(f"proxy 'nwot' counts the on/off patterns of ReLU units; this network "
                         f"({type(model).__name__}) has no nn.ReLU module")
    n = inputs.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def count(module, args, _output):
        c = (args[0].detach().reshape(n, -1) > 0).double()
        kernel.add_(c @ c.t() + (1 - c) @ (1 - c).t())

    handles = [m.register_forward_hook(count) for m in relus]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = np.linalg.slogdet(kernel.numpy())
    return float(logdet) if sign > 0 else -math.inf


def synflow(model, inputs, targets) -> float:
    """SynFlow (Tanaka et al., NeurIPS 2020): ``log sum |W * dR/dW|`` over Conv2d/Linear
    weights, R the sum of the outputs of the network with every parameter and buffer made
    positive (``|.|``), BN bypassed, on one all-ones input, in double precision."""
    layers = _weighted_layers(model, "synflow")
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.forward = _identity
    model.double()
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    out = model(torch.ones((1,) + tuple(inputs.shape[1:]), dtype=torch.float64))
    out = out[0] if isinstance(out, (tuple, list)) else out
    out.sum().backward()
    total = float(sum((layer.weight.detach() * layer.weight.grad).abs().sum()
                      for layer in layers if layer.weight.grad is not None))
    return math.log(total) if total > 0 and math.isfinite(total) else -math.inf


def _identity(x):
    return x


def params(model, inputs, targets) -> float:
    """Trainable parameters (``nasforge.flops.count_params``)."""
    return float(count_params(model))


def flops(model, inputs, targets) -> float:
    """Multiply-adds of one image of the batch's size (``nasforge.flops.count_mult_adds``:
    convolutions and matrix products; the NAS-Bench-201 'FLOPs' convention)."""
    if inputs.shape[-1] != inputs.shape[-2]:
        raise ProxyError(f"proxy 'flops' counts square inputs; the batch is "
                         f"{inputs.shape[-2]}x{inputs.shape[-1]}")
    return float(count_mult_adds(model, int(inputs.shape[-1]), int(inputs.shape[1]))[0])


PROXIES: dict[str, Proxy] = {p.name: p for p in (
    Proxy("synflow", synflow, "log sum |W * dR/dW| of the positive linearised network "
          "(Tanaka et al. 2020)", data_free=True),
    Proxy("snip", snip, "sum |W * dL/dW| (Lee et al. 2019)"),
    Proxy("grasp", grasp, "sum -W * Hg (Wang et al. 2020)"),
    Proxy("fisher", fisher, "channel Fisher saliency of the layer outputs (Theis et al. 2018)"),
    Proxy("grad_norm", grad_norm, "sum over layers of ||dL/dW||"),
    Proxy("jacob_cov", jacob_cov, "correlation of input Jacobians (Mellor et al. 2020 v1)"),
    Proxy("nwot", nwot, "log det of the ReLU-code kernel, NASWOT (Mellor et al. 2021)"),
    Proxy("params", params, "trainable parameters", copies=False, data_free=True),
    Proxy("flops", flops, "multiply-adds of one image", copies=False, data_free=True),
)}


# --------------------------------------------------------------------------- the API
def check_names(names: Iterable[str]) -> list[str]:
    """``names`` as a list; ProxyError naming the first unknown one."""
    names = list(names)
    for name in names:
        if name not in PROXIES:
            raise ProxyError(f"unknown proxy {name!r} (known: {', '.join(PROXIES)})",
                             options=("proxies",))
    if not names:
        raise ProxyError("no proxy named", options=("proxies",))
    return names


def _check_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        inputs, targets = batch
    except (TypeError, ValueError):
        raise ProxyError("a proxy's batch is (inputs, targets)") from None
    if not torch.is_tensor(inputs) or inputs.dim() != 4 or len(inputs) == 0:
        raise ProxyError(f"a proxy's inputs are a non-empty N x C x H x W tensor, got "
                         f"{tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs)}")
    if not torch.is_tensor(targets) or targets.shape != (len(inputs),):
        raise ProxyError("a proxy's targets are N integer labels, one per image")
    return inputs.float(), targets.long()


def score(name: str, model: nn.Module, batch: Sequence[torch.Tensor], seed: int = 0) -> float:
    """The value of proxy ``name`` for ``model`` on ``batch`` (``(inputs, targets)``); larger
    predicts better. ``model`` is not changed; deterministic given ``seed``."""
    proxy = PROXIES[check_names([name])[0]]
    inputs, targets = _check_batch(batch)
    net = model
    if proxy.copies:
        # every op runs its own ReLU module (shared ReLUs would hide units from nwot's hooks)
        net = set_relu_sharing(copy.deepcopy(model), False)
    net.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return float(proxy.fn(net, inputs, targets))


def score_all(names: Iterable[str], model: nn.Module, batch, seed: int = 0) -> dict[str, float]:
    """``{name: score(name, model, batch, seed)}`` for each of ``names``, in order."""
    return {name: score(name, model, batch, seed) for name in check_names(names)}


def data_batch(splits: DataSplits, batch_size: int = BATCH_SIZE,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` training images of ``splits`` drawn by ``seed`` (without replacement),
    normalised by the split's mean and std as training normalises them (no augmentation),
    and their labels: the batch the proxies score a network on."""
    train = splits.train
    if not 1 <= batch_size <= len(train):
        raise ProxyError(f"batch_size {batch_size} must be between 1 and {len(train)} (the "
                         f"training images of {splits.source})", options=("batch_size",))
    index = np.sort(np.random.default_rng(seed).choice(len(train), batch_size, replace=False))
    index = torch.from_numpy(index)
    mean = torch.tensor(splits.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(splits.std, dtype=torch.float32).view(1, -1, 1, 1)
    images = (train.images[index].float() / 255 - mean) / std
    return images, train.labels[index].clone()


def shape_batch(input_size: int, in_channels: int = 3,
                batch_size: int = BATCH_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of zeros of the given shape: enough for the ``data_free`` proxies."""
    return (torch.zeros(batch_size, in_channels, input_size, input_size),
            torch.zeros(batch_size, dtype=torch.long))


def build_network(arch, config, seed: int = 0) -> nn.Module:
    """The module of a resolved architecture (``nasforge.api.resolve``) with its weights
    drawn from ``seed``: the network a proxy scores at initialization."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return compile_architecture(arch, config)


__all__ = ["BATCH_SIZE", "PROXIES", "Proxy", "ProxyError", "build_network", "check_names",
           "data_batch", "score", "score_all", "shape_batch"]
