"""BANANAS' predictor: an ensemble of fully connected networks (White et al., AAAI 2021).

Settings of naszilla/bananas for NAS-Bench-101/201 (``params.py`` ``meta_neuralnet_params``):
5 networks, each 10 hidden layers of 20 ReLU units and one linear output, trained with the
mean absolute error for 150 epochs in minibatches of 32 by Adam (lr 0.01, betas 0.9 and 0.99),
Glorot-uniform weights and zero biases (Keras' defaults, which BANANAS used). The networks
differ only by their initialisation and minibatch order, as in BANANAS.

Differences, on purpose: the targets are z-scored on the training rows (BANANAS learned the
validation loss in %; z-scores make the same learning rate work for fractions and %), extra
features are z-scored and appended to the encoding, and the 5 networks are trained at once
as one batched network (``torch.bmm``) with the gradient written out by hand and Adam applied
to one flat parameter tensor: same arithmetic, about 10x fewer Python-level operations than
5 separate autograd networks (a fit is the whole cost of a ``bananas`` proposal).

Uncertainty: the standard deviation of the 5 networks' predictions (``np.std``, as BANANAS'
acquisition functions compute it), in the accuracy's units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nasforge.predictors.base import FeatureScaler, Predictor, standardize

ADAM_EPS = 1e-7  # Keras' epsilon (BANANAS trained with Keras); torch's default is 1e-8


@dataclass(frozen=True)
class MLPEnsembleConfig:
    members: int = 5          # networks in the ensemble
    layers: int = 10          # hidden layers per network
    width: int = 20           # units per hidden layer
    epochs: int = 150         # passes over the training rows
    batch_size: int = 32      # rows per Adam step
    learning_rate: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99

    def __post_init__(self):
        if min(self.members, self.layers, self.width, self.epochs, self.batch_size) < 1:
            raise ValueError("members, layers, width, epochs and batch_size must be >= 1")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be > 0")


def _views(flat: torch.Tensor, shapes) -> list[torch.Tensor]:
    out, offset = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[offset:offset + size].view(shape))
        offset += size
    return out


class MLPEnsemble(Predictor):
    """BANANAS' ensemble of MLPs on the path encoding (see the module docstring)."""

    name = "mlp_ensemble"
    encoding = "path"
    Config = MLPEnsembleConfig

    def _fit(self, x, y, features):
        cfg = self.config
        self._scaler = FeatureScaler(features) if features is not None else None
        inputs = self._inputs(x, features)
        z, self._mu, self._sd = standardize(y)
        generator = torch.Generator().manual_seed(int(self.rng.integers(2 ** 62)))
        params, flat = self._initial(inputs.shape[1], generator)
        grads_flat = torch.zeros_like(flat)
        grads = _views(grads_flat, [p.shape for p in params])
        first, second = torch.zeros_like(flat), torch.zeros_like(flat)
        xt = torch.as_tensor(inputs, dtype=torch.float32)
        yt = torch.as_tensor(z, dtype=torch.float32)
        n, step = len(xt), 0
        with torch.no_grad():
            for _ in range(cfg.epochs):
                # each network its own minibatch order (Keras' shuffle=True per epoch)
                order = torch.argsort(torch.rand(cfg.members, n, generator=generator), dim=1)
                for start in range(0, n, cfg.batch_size):
                    idx = order[:, start:start + cfg.batch_size]
                    self._gradient(params, grads, xt[idx], yt[idx])
                    step += 1
                    self._adam(flat, grads_flat, first, second, step)
        self._params = params

    def _initial(self, inputs: int, generator):
        """Glorot-uniform weights, zero biases, all in one flat float32 tensor (the optimizer
        updates it in a few whole-tensor operations); returns (per-layer views, flat)."""
        cfg = self.config
        sizes = [inputs] + [cfg.width] * cfg.layers + [1]
        shapes = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            shapes += [(cfg.members, fan_in, fan_out), (cfg.members, 1, fan_out)]
        flat = torch.zeros(sum(math.prod(s) for s in shapes), dtype=torch.float32)
        params = _views(flat, shapes)
        for k in range(0, len(params), 2):
            fan_in, fan_out = shapes[k][1], shapes[k][2]
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            params[k].copy_((torch.rand(shapes[k], generator=generator) * 2 - 1) * bound)
        return params, flat

    @staticmethod
    def _forward(params, h, keep: list | None = None):
        last = len(params) - 2
        for k in range(0, len(params), 2):
            if keep is not None:
                keep.append(h)
            h = torch.baddbmm(params[k + 1], h, params[k])
            if k < last:
                h = torch.relu(h)
        return h

    def _gradient(self, params, grads, xb, yb) -> None:
        """Writes into ``grads`` the gradient of the loss: each network's mean absolute error
        over its minibatch, summed over the networks (backpropagation by hand: 2x faster than
        autograd at this size; checked against autograd in tests/test_predictors.py)."""
        layer_inputs: list = []
        out = self._forward(params, xb, layer_inputs)
        delta = torch.sign(out - yb.unsqueeze(-1)).div_(xb.shape[1])
        for k in range(len(params) - 2, -1, -2):
            h = layer_inputs[k // 2]
            torch.bmm(h.transpose(1, 2), delta, out=grads[k])
            torch.sum(delta, dim=1, keepdim=True, out=grads[k + 1])
            if k:
                delta = torch.bmm(delta, params[k].transpose(1, 2)).mul_(h > 0)

    def _adam(self, flat, grad, first, second, step: int) -> None:
        """One Adam step (Kingma & Ba; torch's and Keras' update) on the flat parameters."""
        cfg = self.config
        first.mul_(cfg.beta1).add_(grad, alpha=1 - cfg.beta1)
        second.mul_(cfg.beta2).addcmul_(grad, grad, value=1 - cfg.beta2)
        denom = (second / (1 - cfg.beta2 ** step)).sqrt_().add_(ADAM_EPS)
        flat.addcdiv_(first, denom, value=-cfg.learning_rate / (1 - cfg.beta1 ** step))

    def _inputs(self, x, features):
        if features is None:
            return x
        return np.concatenate([x, self._scaler(features)], axis=1)

    def member_predictions(self, x, features=None) -> np.ndarray:
        """Each network's prediction (shape (members, n)), in the accuracy's units;
        PredictorError before ``fit``."""
        self.require_fitted()
        inputs = torch.as_tensor(self._inputs(np.asarray(x, np.float64), features),
                                 dtype=torch.float32)
        with torch.no_grad():
            out = self._forward(self._params, inputs.unsqueeze(0).expand(
                self.config.members, -1, -1)).squeeze(-1)
        return out.numpy().astype(np.float64) * self._sd + self._mu

    def _predict(self, x, features):
        preds = self.member_predictions(x, self._features(features, len(x)))
        return preds.mean(axis=0), preds.std(axis=0)
