"""The model zoo: named architectures with their per-setting configurations.

Two kinds of entries share one registry: searched cells (a ``CellPair`` stacked by the NASNet
macro, configured by ``NetworkConfig``) and hand-designed networks (a ``CellChain`` built by a
function of the options in ``ChainConfig``).
NASNet settings: ``cifar`` (32 px, 10 classes), ``mobile`` (224 px) and ``large`` (331 px)
ImageNet (1000 classes), as in [TF]'s ``cifar_config``/``mobile_imagenet_config``/
``large_imagenet_config``; ``darts`` (DARTS' CIFAR evaluation network, 20 cells at C = 36) and
``nb301`` (NAS-Bench-301's, 8 cells at C = 32), both with DARTS' macro. Hand-designed
settings: ``imagenet``, ``cifar`` and ``mnist``.
NAS-Bench-201 cells (their string form): ``nb201``, NAS-Bench-201's network, whose data set
(``cifar10``, ``cifar100``, ``imagenet16``) fixes the classes and input size.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from nasforge.compiler.network import NetworkConfig
from nasforge.dsl import CellChain, CellPair
from nasforge.rules import add_unique
from nasforge.search_spaces.nas_bench_201 import DATASETS as NB201_DATASETS

SETTINGS: dict[str, NetworkConfig] = {
    "cifar": NetworkConfig(stem="cifar", N=6, filters=32, num_classes=10, stem_multiplier=3.0,
                           drop_path_keep_prob=0.6, input_size=32),
    "mobile": NetworkConfig(stem="imagenet", N=4, filters=44, num_classes=1000,
                            stem_multiplier=1.0, dropout=0.5, input_size=224),
    "large": NetworkConfig(stem="imagenet", N=6, filters=168, num_classes=1000,
                           stem_multiplier=3.0, skip_reduction_layer_input=True,
                           drop_path_keep_prob=0.7, dropout=0.5, input_size=331),
    # DARTS' evaluation network (NetworkCIFAR, 20 cells at C = 36, drop path 0.2) [D]
    "darts": NetworkConfig(stem="cifar", N=6, filters=36, num_classes=10, stem_multiplier=3.0,
                           drop_path_keep_prob=0.8, input_size=32, macro="darts"),
    # NAS-Bench-301's training network: DARTS' macro with 8 cells at C = 32 [NB301]
    "nb301": NetworkConfig(stem="cifar", N=2, filters=32, num_classes=10, stem_multiplier=3.0,
                           drop_path_keep_prob=0.8, input_size=32, macro="darts"),
}


@dataclass(frozen=True)
class ChainConfig:
    """How a hand-designed network is instantiated."""

    input_size: int = 224  # pixels (square); used by `info` and flop counting
    num_classes: int = 1000
    in_channels: int = 3
    min_input_size: int = 32  # pixels: the smallest input it can train on (unpadded stems)
    options: tuple[tuple[str, Any], ...] = ()  # builder keyword options, e.g. aux_logits


CHAIN_SETTINGS: dict[str, ChainConfig] = {
    "imagenet": ChainConfig(input_size=224, num_classes=1000),
    "cifar": ChainConfig(input_size=32, num_classes=10),
    # LeNet-5's input: MNIST's 28 x 28 digits centred in a 32 x 32 field, grayscale
    "mnist": ChainConfig(input_size=32, num_classes=10, in_channels=1),
}


# NAS-Bench-201's network around a NAS-Bench-201 cell (search_spaces.nas_bench_201.network):
# setting -> data set -> config (nas_bench_201.DEFAULT_DATASET the default)
NB201_SETTINGS: dict[str, dict[str, ChainConfig]] = {
    "nb201": {name: ChainConfig(input_size=d.input_size, num_classes=d.num_classes,
                                min_input_size=16)  # ImageNet16-120's, its smallest
              for name, d in NB201_DATASETS.items()},
}


def setting_names() -> list[str]:
    """Every setting name (cell-pair, chain and NAS-Bench-201 settings), sorted."""
    return sorted({*SETTINGS, *CHAIN_SETTINGS, *NB201_SETTINGS})


@dataclass(frozen=True)
class ZooEntry:
    """A named architecture. Exactly one of ``build_pair`` (searched cells) and
    ``build_chain`` (hand-designed; called as ``build_chain(num_classes=..., **options)``) is
    set. ``settings`` lists the entry's settings, first = default, with their overrides."""

    name: str
    family: str
    settings: dict[str, dict]
    build_pair: Callable[[], CellPair] | None = None
    build_chain: Callable[..., CellChain] | None = None
    doc: str = ""
    # import_weights(model, reference_state_dict) -> model, for the reference implementation
    # named by ``reference`` (random or pretrained weights alike)
    import_weights: Callable | None = None
    reference: str = ""

    @property
    def default_setting(self) -> str:
        return next(iter(self.settings))

    def config(self, setting: str | None = None):
        setting = setting or self.default_setting
        if setting not in self.settings:
            raise KeyError(f"{self.name} has no setting {setting!r} (it has: "
                           f"{', '.join(self.settings)})")
        overrides = dict(self.settings[setting])
        if self.build_pair is not None:
            # the setting's overrides win over the pair's network options
            return replace(SETTINGS[setting], **{**self.build_pair().network, **overrides})
        base = CHAIN_SETTINGS[setting]
        options = tuple(sorted(overrides.pop("options", {}).items()))
        return replace(base, **overrides, options=options)

    def architecture(self, config) -> CellPair | CellChain:
        if self.build_pair is not None:
            return self.build_pair()
        chain = self.build_chain(num_classes=config.num_classes, **dict(config.options))
        chain.in_channels = config.in_channels  # the setting's (or the data's) image channels
        return chain


ZOO: dict[str, ZooEntry] = {}


def register_model(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the zoo; ValueError if its name is taken."""
    if (entry.build_pair is None) == (entry.build_chain is None):
        raise ValueError(f"zoo model {entry.name!r} needs exactly one of build_pair/build_chain")
    return add_unique(ZOO, entry.name, entry, "zoo model")


def get_entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r} (see `nasforge zoo`)") from None
