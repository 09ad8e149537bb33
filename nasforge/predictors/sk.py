"""Predictors built on scikit-learn: gradient-boosted trees and a Gaussian process.

Why a library: both models are decades old, numerically delicate (histogram binning, split
finding, kernel hyperparameters by marginal likelihood with restarts, Cholesky with jitter)
and beside the point of a NAS framework; scikit-learn implements them well, is already a
dependency of half the scientific Python stack, and ships wheels for every platform.
Why scikit-learn and not xgboost/lightgbm: one library gives both models, its
``HistGradientBoostingRegressor`` is LightGBM's algorithm (histogram-based boosting) and is
fast enough at the sizes a NAS predictor sees (10 to a few thousand trained architectures),
and its ``GaussianProcessRegressor`` has no counterpart in the boosting libraries.
scikit-learn is imported when a model is fitted, not when nasforge is imported.

Extra features (proxy scores) are appended to the encoding as columns: as they are for the
trees (which are invariant to any monotone rescaling of a column), z-scored for the GP.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from nasforge.predictors.base import FeatureScaler, Predictor

# a Gaussian's 15.9% and 84.1% quantiles are mean -+ 1 std
LOWER_QUANTILE, UPPER_QUANTILE = 0.158655, 0.841345


@dataclass(frozen=True)
class BoostedTreesConfig:
    max_iter: int = 200          # boosting rounds (trees)
    learning_rate: float = 0.1   # shrinkage per tree
    max_leaf_nodes: int = 15     # leaves per tree
    min_samples_leaf: int = 2    # rows per leaf (sklearn's default 20 cannot split 10 rows)
    l2_regularization: float = 0.0
    uncertainty: bool = True     # fit the two quantile models (3 fits instead of 1)


class BoostedTrees(Predictor):
    """Gradient-boosted regression trees (``sklearn.ensemble.HistGradientBoostingRegressor``,
    squared error) on the one-hot encoding plus the extra features (NAS-Bench-Suite-Zero's
    "XGBoost on all proxies": here the same model family from scikit-learn).

    Uncertainty: two more boosted models fitted with the quantile loss at 15.9% and 84.1%;
    std = half the distance between them (a Gaussian's +-1 std), 0 with
    ``uncertainty=False``."""

    name = "boosted_trees"
    encoding = "onehot"
    Config = BoostedTreesConfig

    def _model(self, **loss):
        from sklearn.ensemble import HistGradientBoostingRegressor

        cfg = self.config
        return HistGradientBoostingRegressor(
            max_iter=cfg.max_iter, learning_rate=cfg.learning_rate,
            max_leaf_nodes=cfg.max_leaf_nodes, min_samples_leaf=cfg.min_samples_leaf,
            l2_regularization=cfg.l2_regularization, early_stopping=False,
            random_state=int(self.rng.integers(2 ** 31)), **loss)

    def _fit(self, x, y, features):
        inputs = x if features is None else np.concatenate([x, features], axis=1)
        self._models = [self._model().fit(inputs, y)]
        if self.config.uncertainty:
            self._models += [self._model(loss="quantile", quantile=q).fit(inputs, y)
                             for q in (LOWER_QUANTILE, UPPER_QUANTILE)]

    def _predict(self, x, features):
        inputs = x if features is None else np.concatenate([x, features], axis=1)
        mean = self._models[0].predict(inputs)
        if len(self._models) == 1:
            return mean, np.zeros_like(mean)
        low, high = (m.predict(inputs) for m in self._models[1:])
        return mean, np.abs(high - low) / 2.0


@dataclass(frozen=True)
class GaussianProcessConfig:
    nu: float = 2.5              # Matern smoothness (2.5: twice differentiable)
    restarts: int = 2            # extra random starts of the kernel-hyperparameter fit
    noise: float = 0.1           # initial noise level (WhiteKernel), in z-scored units


class GaussianProcess(Predictor):
    """Gaussian-process regression (``sklearn.gaussian_process.GaussianProcessRegressor``):
    kernel constant x Matern (one length scale) + white noise on the one-hot encoding plus
    z-scored features, targets normalised, hyperparameters by maximum marginal likelihood.

    Uncertainty: the posterior predictive standard deviation (``return_std=True``), which
    includes the fitted noise level."""

    name = "gaussian_process"
    encoding = "onehot"
    Config = GaussianProcessConfig

    def _fit(self, x, y, features):
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        cfg = self.config
        self._scaler = FeatureScaler(features) if features is not None else None
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * \
            Matern(length_scale=float(np.sqrt(self._inputs(x, features).shape[1])),
                   length_scale_bounds=(1e-2, 1e3), nu=cfg.nu) + \
            WhiteKernel(cfg.noise, (1e-6, 1e1))
        self._gp = GaussianProcessRegressor(kernel=kernel, normalize_y=True,
                                            n_restarts_optimizer=cfg.restarts,
                                            random_state=int(self.rng.integers(2 ** 31)))
        with warnings.catch_warnings():  # a bound reached on tiny data is not an error
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._gp.fit(self._inputs(x, features), y)

    def _inputs(self, x, features):
        return x if features is None else np.concatenate([x, self._scaler(features)], axis=1)

    def _predict(self, x, features):
        return self._gp.predict(self._inputs(x, features), return_std=True)
