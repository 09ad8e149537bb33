"""Performance predictors: learn accuracy from the architectures already trained, rank the
ones not trained yet (``Predictor``: fit, then predict a mean and an uncertainty).

>>> from nasforge.predictors import get_predictor, encode
>>> p = get_predictor("mlp_ensemble", seed=0)
>>> x = encode(space, archs, p.encoding)          # one row per architecture
>>> p.fit(x, accuracies, features=proxy_scores)   # features: optional (n, f) array
>>> mean, std = p.predict(encode(space, candidates, p.encoding), features=...)

Registered (``PREDICTORS``): ``mlp_ensemble`` (BANANAS' 5 MLPs on the path encoding, torch),
``boosted_trees`` (gradient-boosted trees on the one-hot encoding plus proxy scores,
scikit-learn), ``gaussian_process`` (scikit-learn). Encodings: ``nasforge.predictors.encodings``.
"""
from __future__ import annotations

import numpy as np

from nasforge.predictors.base import Prediction, Predictor, PredictorError
from nasforge.predictors.encodings import available, encode, encoder, register_encoding
from nasforge.predictors.mlp import MLPEnsemble, MLPEnsembleConfig
from nasforge.predictors.sk import (BoostedTrees, BoostedTreesConfig, GaussianProcess,
                                    GaussianProcessConfig)
from nasforge.rules import add_unique, reject_unknown_keys

PREDICTORS: dict[str, type[Predictor]] = {}


def register_predictor(name: str, cls: type[Predictor]) -> type[Predictor]:
    """Make ``cls`` available to ``get_predictor(name, ...)``; ValueError if the name is
    taken."""
    return add_unique(PREDICTORS, name, cls, "predictor")


for _cls in (MLPEnsemble, BoostedTrees, GaussianProcess):
    register_predictor(_cls.name, _cls)


def get_predictor(name: str, seed: int | np.random.Generator = 0, **config) -> Predictor:
    """A predictor by registry name; ``seed`` an int or a ``numpy.random.Generator`` (used,
    not copied); keyword arguments are fields of its config dataclass. PredictorError for an
    unknown name or field."""
    try:
        cls = PREDICTORS[name]
    except KeyError:
        raise PredictorError(f"unknown predictor {name!r} (known: {', '.join(PREDICTORS)})",
                             options=("predictor",)) from None
    reject_unknown_keys(cls.Config, config, f"predictor {name!r} config", PredictorError)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return cls(cls.Config(**config), rng=rng)


__all__ = ["Predictor", "Prediction", "PredictorError", "PREDICTORS", "register_predictor",
           "get_predictor", "encode", "encoder", "available", "register_encoding",
           "MLPEnsemble", "MLPEnsembleConfig", "BoostedTrees", "BoostedTreesConfig",
           "GaussianProcess", "GaussianProcessConfig"]
