"""Public entry points: resolve an architecture by name or file and build it."""
from __future__ import annotations

import os
from dataclasses import fields, replace

from torch import nn

from nasforge.compiler.network import Network, NetworkConfig
from nasforge.dsl import Cell, CellError, CellPair, load_architecture
from nasforge.zoo import SETTINGS, get_entry

CONFIG_FIELDS = {f.name for f in fields(NetworkConfig)}


class ArchitectureError(ValueError):
    """A model name or file that cannot be resolved to a valid architecture."""


def load_pair(path: str) -> CellPair:
    """Read and validate a cell-pair JSON file (a single cell is used as both cells' pattern
    only if it is a pair; single cells are rejected here with a clear message)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ArchitectureError(f"cannot read {path}: {e.strerror}") from None
    arch = load_architecture(text)
    if isinstance(arch, Cell):
        raise ArchitectureError(f"{path} holds a single cell; a network needs a "
                                f"(normal, reduction) cell pair ({arch.name or 'unnamed'})")
    return arch.validate()


def resolve(name_or_path: str | CellPair, setting: str = "cifar",
            **overrides) -> tuple[CellPair, NetworkConfig]:
    """(pair, config) for a zoo name, a cell-pair JSON path, or a CellPair object.

    ``penultimate`` (P in N@P) is accepted in ``overrides`` and converted to ``filters``.
    """
    if setting not in SETTINGS:
        raise ArchitectureError(f"unknown setting {setting!r} (expected one of "
                                f"{', '.join(SETTINGS)})")
    if isinstance(name_or_path, CellPair):
        pair = name_or_path.validate()
        config = replace(SETTINGS[setting], **pair.network)
    elif os.path.exists(name_or_path) or name_or_path.endswith(".json"):
        pair = load_pair(name_or_path)
        config = replace(SETTINGS[setting], **_network_fields(pair))
    else:
        try:
            entry = get_entry(name_or_path)
        except KeyError as e:
            raise ArchitectureError(str(e.args[0])) from None
        pair, config = entry.build_pair(), entry.config(setting)
    penultimate = overrides.pop("penultimate", None)
    unknown = set(overrides) - CONFIG_FIELDS
    if unknown:
        raise ArchitectureError(f"unknown network option(s): {', '.join(sorted(unknown))}")
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if penultimate is not None:
        config = replace(config, filters=filters_for_penultimate(pair, config, penultimate))
    return pair, config


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
    from nasforge.registry import COMBINES

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


def build_model(name_or_path: str | CellPair, setting: str = "cifar",
                num_classes: int | None = None, **overrides) -> nn.Module:
    pair, config = resolve(name_or_path, setting, num_classes=num_classes, **overrides)
    return Network(pair, config)
