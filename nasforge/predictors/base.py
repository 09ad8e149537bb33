"""The performance-predictor interface: learn accuracy from architectures already trained.

A predictor is fitted on a matrix of architecture encodings (one row per trained
architecture, ``nasforge.predictors.encodings``), optionally extra per-architecture features
(zero-cost proxy scores: one column per proxy, same rows), and their accuracies; it then
predicts, for architectures not trained yet, a mean and an uncertainty (a standard deviation
in the accuracy's units; how each predictor defines it is in its docstring).

Who calls what, when:

* ``fit(x, y, features=None)``: after a batch of children has been trained (a searcher such
  as ``bananas`` refits before each batch of proposals; a benchmark fits once on its training
  cells). Every call starts from scratch: a fit never depends on an earlier fit, only on its
  arguments and the predictor's seed (and the number of fits so far, which advances its RNG).
* ``predict(x, features=None)``: when candidates must be ranked (an acquisition function,
  a held-out evaluation). Before the first ``fit`` it raises ``PredictorError``.

``features`` must be given to ``predict`` exactly when it was given to ``fit`` (same columns):
a predictor fitted with proxy scores cannot rank candidates without them.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from nasforge.errors import NasforgeError


class PredictorError(NasforgeError, ValueError):
    """A predictor used wrongly: asked to predict before it was fitted, fitted on too few or
    mismatched rows, given features it was not fitted with (one line)."""


@dataclass(frozen=True)
class Prediction:
    """Per candidate: predicted accuracy (``mean``) and its uncertainty (``std``, >= 0, same
    units as the accuracies the predictor was fitted on)."""

    mean: np.ndarray
    std: np.ndarray


class Predictor(abc.ABC):
    """Base of every registered predictor (``nasforge.predictors.PREDICTORS``).

    ``encoding`` names the architecture encoding the predictor is meant for (its paper's
    choice; ``nasforge.predictors.encodings.encode`` computes it for a space). ``Config`` is
    its frozen config dataclass. ``rng`` (a ``numpy.random.Generator``) is the only source of
    randomness: two predictors built with generators in the same state fit the same model.
    """

    name: ClassVar[str] = ""
    encoding: ClassVar[str] = "onehot"
    Config: ClassVar[type] = type(None)

    def __init__(self, config=None, rng: np.random.Generator | None = None):
        config = self.Config() if config is None else config
        if not isinstance(config, self.Config):
            raise TypeError(f"predictor {self.name!r} needs a {self.Config.__name__}, got "
                            f"{type(config).__name__}")
        self.config = config
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._fitted = False
        self._n_features: int | None = None
        self._dim: int | None = None

    # ---------------------------------------------------------------- protocol
    def fit(self, x, y, features=None) -> "Predictor":
        """Learn ``y`` (accuracies, one per row) from ``x`` (encodings, shape (n, d)) and
        optionally ``features`` (shape (n, f)); returns self. Needs n >= 2 finite values."""
        x, y, features = self._checked(x, y, features)
        self._fit(x, y, features)
        self._fitted = True
        return self

    def predict(self, x, features=None) -> Prediction:
        """Mean and uncertainty of the accuracy of each row of ``x``; ``PredictorError``
        before ``fit`` or when ``x``/``features`` do not match what ``fit`` saw."""
        self.require_fitted()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self._dim:
            raise PredictorError(f"predictor {self.name!r} was fitted on encodings of width "
                                 f"{self._dim}, got shape {x.shape}")
        features = self._features(features, len(x))
        if (features is None) != (self._n_features is None) or \
                (features is not None and features.shape[1] != self._n_features):
            raise PredictorError(f"predictor {self.name!r} was fitted with "
                                 f"{self._n_features or 0} feature columns, got "
                                 f"{0 if features is None else features.shape[1]}")
        mean, std = self._predict(x, features)
        return Prediction(np.asarray(mean, np.float64).reshape(-1),
                          np.maximum(np.asarray(std, np.float64).reshape(-1), 0.0))

    @property
    def fitted(self) -> bool:
        return self._fitted

    def require_fitted(self) -> None:
        """PredictorError (one line) unless ``fit`` has run."""
        if not self._fitted:
            raise PredictorError(f"predictor {self.name!r} was asked to predict before it was "
                                 f"fitted (call fit on trained architectures first)")

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config)

    # ------------------------------------------------------------------- hooks
    @abc.abstractmethod
    def _fit(self, x: np.ndarray, y: np.ndarray, features: np.ndarray | None) -> None:
        """Fit from scratch on checked float arrays."""

    @abc.abstractmethod
    def _predict(self, x: np.ndarray, features: np.ndarray | None) -> tuple:
        """(mean, std) arrays of length ``len(x)``."""

    # ----------------------------------------------------------------- helpers
    def _features(self, features, n: int):
        if features is None:
            return None
        features = np.asarray(features, dtype=np.float64)
        if features.ndim == 1:
            features = features[:, None]
        if features.ndim != 2 or len(features) != n:
            raise PredictorError(f"predictor {self.name!r}: features need one row per "
                                 f"architecture ({n}), got shape {features.shape}")
        if not np.all(np.isfinite(features)):
            raise PredictorError(f"predictor {self.name!r}: features hold NaN or infinite "
                                 f"values")
        return features

    def _checked(self, x, y, features):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if x.ndim != 2 or len(x) != len(y):
            raise PredictorError(f"predictor {self.name!r}: need encodings of shape (n, d) and "
                                 f"n accuracies, got {x.shape} and {len(y)}")
        if len(y) < 2:
            raise PredictorError(f"predictor {self.name!r} needs at least 2 trained "
                                 f"architectures to fit, got {len(y)}")
        if not np.all(np.isfinite(y)) or not np.all(np.isfinite(x)):
            raise PredictorError(f"predictor {self.name!r}: encodings and accuracies must be "
                                 f"finite")
        features = self._features(features, len(x))
        self._dim = x.shape[1]
        self._n_features = None if features is None else features.shape[1]
        return x, y, features


def standardize(y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(z-scores, mean, scale) of ``y``; scale 1 when ``y`` is constant. Predictors learn
    z-scores so that one learning rate serves accuracies in %, fractions or losses."""
    mu, sd = float(np.mean(y)), float(np.std(y))
    sd = sd if sd > 0 else 1.0
    return (y - mu) / sd, mu, sd


class FeatureScaler:
    """Column z-scores learned on the training rows (proxy scores span orders of magnitude:
    synflow ~1e2, fisher ~1e-1); constant columns are left centred."""

    def __init__(self, features: np.ndarray):
        self.mean = features.mean(axis=0)
        sd = features.std(axis=0)
        self.scale = np.where(sd > 0, sd, 1.0)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.scale
