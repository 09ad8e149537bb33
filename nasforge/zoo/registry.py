"""The model zoo: named architectures with their per-setting network configurations.

Settings: ``cifar`` (32 px, 10 classes), ``mobile`` (224 px) and ``large`` (331 px) ImageNet
(1000 classes), as in [TF]'s ``cifar_config``/``mobile_imagenet_config``/``large_imagenet_config``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from nasforge.compiler.network import NetworkConfig
from nasforge.dsl import CellPair

SETTINGS: dict[str, NetworkConfig] = {
    "cifar": NetworkConfig(stem="cifar", N=6, filters=32, num_classes=10, stem_multiplier=3.0,
                           drop_path_keep_prob=0.6, input_size=32),
    "mobile": NetworkConfig(stem="imagenet", N=4, filters=44, num_classes=1000,
                            stem_multiplier=1.0, dropout=0.5, input_size=224),
    "large": NetworkConfig(stem="imagenet", N=6, filters=168, num_classes=1000,
                           stem_multiplier=3.0, skip_reduction_layer_input=True,
                           drop_path_keep_prob=0.7, dropout=0.5, input_size=331),
}


@dataclass(frozen=True)
class ZooEntry:
    """``build_pair()`` returns the architecture; ``settings`` overrides SETTINGS per setting."""

    name: str
    family: str
    build_pair: Callable[[], CellPair]
    settings: dict[str, dict] = field(default_factory=dict)
    doc: str = ""

    def config(self, setting: str) -> NetworkConfig:
        if setting not in SETTINGS:
            raise KeyError(f"unknown setting {setting!r} (expected one of "
                           f"{', '.join(SETTINGS)})")
        base = SETTINGS[setting]
        network = self.build_pair().network
        return replace(base, **network, **self.settings.get(setting, {}))


ZOO: dict[str, ZooEntry] = {}


def register_model(entry: ZooEntry) -> ZooEntry:
    if entry.name in ZOO:
        raise ValueError(f"zoo model {entry.name!r} is already registered")
    ZOO[entry.name] = entry
    return entry


def get_entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r} (see `nasforge zoo`)") from None
