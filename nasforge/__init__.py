"""nasforge: neural architecture search over one graph DSL, compiled to PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"


def build_model(name_or_path, setting: str | None = None, num_classes: int | None = None,
                weights: dict | None = None, **overrides):
    """Build a ``torch.nn.Module`` from a zoo name or a cell-pair / cell-chain JSON file.

    ``setting`` is ``cifar``, ``mobile`` or ``large`` for searched cells (``imagenet`` or
    ``cifar`` for hand-designed networks; default: the model's first setting). ``overrides``
    are NetworkConfig fields (``N``, ``filters``/``penultimate``, ``drop_path_keep_prob``,
    ``aux_head``, ...) or a hand-designed model's options. ``weights``: a state dict of the
    model's reference implementation (torchvision/timm/pretrainedmodels) to import.
    """
    # lazy: the package root stays free of torch (`nasforge --help`), and nasforge.api's own
    # imports reach back to this package
    from nasforge.api import build_model as _build

    return _build(name_or_path, setting=setting, num_classes=num_classes, weights=weights,
                  **overrides)


__all__ = ["build_model", "__version__"]
