"""Public entry points: resolve an architecture by name or file and build it."""
from __future__ import annotations

import json
import os
from dataclasses import fields, replace

from torch import nn

from nasforge.compiler.chain import ChainNetwork
from nasforge.compiler.network import Network, NetworkConfig
from nasforge.dsl import Cell, CellChain, CellError, CellPair, load_architecture
from nasforge.errors import NasforgeError
from nasforge.flops import count_mult_adds, count_params
from nasforge.registry import COMBINES
from nasforge.zoo import CHAIN_SETTINGS, SETTINGS, ZOO, ChainConfig, get_entry

CONFIG_FIELDS = {f.name for f in fields(NetworkConfig)}


class ArchitectureError(NasforgeError, ValueError):
    """A model name or file that cannot be resolved to a valid architecture."""


def load_file(path: str) -> CellPair | CellChain:
    """Read and validate a cell-pair or cell-chain JSON file (a single cell is not a network)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ArchitectureError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:  # a binary (or crafted) file: never parsed further
        raise ArchitectureError(f"cannot read {path}: not UTF-8 JSON text (byte "
                                f"{e.object[e.start]:#04x} at offset {e.start})") from None
    try:
        json.loads(text)  # parsed again by load_architecture; checked here to name the file
    except json.JSONDecodeError as e:
        raise ArchitectureError(f"cannot read {path}: malformed JSON: {e.msg} at line "
                                f"{e.lineno} column {e.colno}") from None
    arch = load_architecture(text)
    if isinstance(arch, Cell):
        raise ArchitectureError(f"{path} holds a single cell; a network needs a "
                                f"(normal, reduction) cell pair ({arch.name or 'unnamed'})")
    return arch.validate()


def is_file_reference(ref: str) -> bool:
    """Whether a model reference names a JSON file (an existing path or ``*.json``) rather
    than a zoo entry."""
    return os.path.exists(ref) or ref.endswith(".json")


def resolve(name_or_path: str | CellPair | CellChain, setting: str | None = None,
            **overrides) -> tuple[CellPair | CellChain, NetworkConfig | ChainConfig]:
    """(architecture, config) for a zoo name, a JSON path, or an architecture object.

    ``setting`` defaults to the zoo entry's first setting (``cifar`` for files and pairs).
    For cell pairs ``overrides`` are NetworkConfig fields, plus ``penultimate`` (P of N@P,
    converted to ``filters``); for chains ``input_size``/``num_classes`` and builder options.
    """
    if isinstance(name_or_path, (CellPair, CellChain)):
        arch, config = name_or_path.validate(), None
    elif is_file_reference(name_or_path):
        arch, config = load_file(name_or_path), None
    else:
        try:
            entry = get_entry(name_or_path)
            config = entry.config(setting)
        except KeyError as e:
            raise ArchitectureError(str(e.args[0])) from None
        arch = None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if config is None:
        config = _default_config(arch, setting)
    if isinstance(config, ChainConfig):
        return _resolve_chain(entry if arch is None else None, arch, config, overrides)
    if arch is None:
        arch = entry.architecture(config)
    penultimate = overrides.pop("penultimate", None)
    unknown = set(overrides) - CONFIG_FIELDS
    if unknown:
        raise ArchitectureError(f"unknown network option(s): {', '.join(sorted(unknown))}")
    config = replace(config, **overrides)
    if penultimate is not None:
        config = replace(config, filters=filters_for_penultimate(arch, config, penultimate))
    return arch, config


def _default_config(arch, setting):
    if isinstance(arch, CellChain):
        settings, default = CHAIN_SETTINGS, "imagenet"
    else:
        settings, default = SETTINGS, "cifar"
    setting = setting or default
    if setting not in settings:
        raise ArchitectureError(f"unknown setting {setting!r} for this architecture (expected "
                                f"one of {', '.join(settings)})")
    base = settings[setting]
    return replace(base, **_network_fields(arch)) if isinstance(arch, CellPair) else base


def _resolve_chain(entry, arch, config: ChainConfig, overrides: dict):
    fixed = {k: overrides.pop(k) for k in ("input_size", "num_classes", "in_channels")
             if k in overrides}
    config = replace(config, **fixed)
    if entry is None:  # a chain file: its cells already fix the classifier and options
        if overrides or "num_classes" in fixed:
            raise ArchitectureError("a cell-chain file fixes its classifier and options; only "
                                    "input_size can be overridden")
        return arch, config
    config = replace(config, options=tuple(sorted({**dict(config.options),
                                                   **overrides}.items())))
    try:
        return entry.architecture(config), config
    except TypeError as e:
        raise ArchitectureError(f"{entry.name}: {e}") from None


def _network_fields(pair: CellPair) -> dict:
    unknown = set(pair.network) - CONFIG_FIELDS
    if unknown:
        raise CellError(f"unknown network option(s) in the cell pair: {', '.join(sorted(unknown))}")
    return pair.network


def penultimate_filters(pair: CellPair, config: NetworkConfig) -> int:
    """P of N@P: channels of the last cell's output (filters x states x 4 for NASNet-A)."""
    growth = config.filter_scaling_rate ** config.num_reduction_layers
    return _last_cell_multiplier(pair) * int(config.filters * growth)


def _last_cell_multiplier(pair: CellPair) -> int:
    """Output channels of the normal cell per filter (states concatenated, concat-combines
    counted by width)."""
    cell = pair.normal
    width: dict[str, int] = {}
    for n in cell.topological_order():
        d, srcs = cell.graph.nodes[n], cell.operands(n)
        if d["kind"] in ("input", "op"):
            width[n] = 1
        elif d["kind"] == "combine":
            width[n] = COMBINES[d["combine"]].channels([width[s] for s in srcs])
        else:
            return sum(width[s] for s in srcs)
    raise CellError("missing output node", None, cell.name)


def filters_for_penultimate(pair: CellPair, config: NetworkConfig, penultimate: int) -> int:
    scale = _last_cell_multiplier(pair) * config.filter_scaling_rate ** config.num_reduction_layers
    filters = penultimate / scale
    if filters != int(filters) or filters < 1:
        raise ArchitectureError(f"penultimate {penultimate} is not a multiple of {int(scale)} "
                                f"(states x filter growth of this architecture)")
    return int(filters)


def compile_architecture(arch: CellPair | CellChain, config) -> nn.Module:
    """The module of a resolved architecture (see ``resolve``)."""
    if isinstance(arch, CellChain):
        return ChainNetwork(arch)
    return Network(arch, config)


def build_model(name_or_path: str | CellPair | CellChain, setting: str | None = None,
                num_classes: int | None = None, weights: dict | None = None,
                **overrides) -> nn.Module:
    """``weights``: a state dict of the zoo entry's reference implementation (torchvision,
    timm, pretrainedmodels; see ``nasforge zoo`` docs), imported with its ``import_weights``."""
    arch, config = resolve(name_or_path, setting, num_classes=num_classes, **overrides)
    model = compile_architecture(arch, config)
    if weights is not None:
        entry = get_entry(name_or_path) if isinstance(name_or_path, str) and \
            name_or_path in ZOO else None
        if entry is None or entry.import_weights is None:
            raise ArchitectureError(f"no weight import for {name_or_path!r}: load a nasforge "
                                    f"state dict with model.load_state_dict instead")
        entry.import_weights(model, weights)
    return model


def model_info(model_name, setting=None, **overrides) -> dict:
    """``{"model", "setting", "params", "mult_adds", "input_size", "output_shape"}`` (plus
    ``N``, ``filters``, ``penultimate`` for cell networks, ``output_stride`` for chains) of a
    zoo name or JSON file: the
    figures ``nasforge info`` prints and a transfer's table reports. The model is built on the
    meta device (no memory, fast)."""
    import torch

    arch, config = resolve(model_name, setting, **overrides)
    if setting is None:
        setting = (ZOO[model_name].default_setting if model_name in ZOO else
                   "cifar" if isinstance(arch, CellPair) else "imagenet")
    with torch.device("meta"):
        model = compile_architecture(arch, config)
        mult_adds, shape = count_mult_adds(model, config.input_size, config.in_channels)
    info = {"model": model_name, "setting": setting, "params": count_params(model),
            "mult_adds": mult_adds, "input_size": config.input_size,
            "output_shape": list(shape)}
    if isinstance(arch, CellPair):
        info.update(N=config.N, filters=config.filters,
                    penultimate=penultimate_filters(arch, config))
    else:
        info["output_stride"] = arch.output_stride()
    return info
