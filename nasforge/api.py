"""Public entry points: resolve an architecture by name or file and build it.

A model reference is one of (``reference_kind``): an architecture object (``CellPair``,
``CellChain``, ``Nb201Cell``, ``DartsGenotype``), a JSON file, a NAS-Bench-201 cell string
(``|nor_conv_3x3~0|+|...|``, built as NAS-Bench-201's network, setting ``nb201``, with its
``dataset``), a DARTS genotype (``Genotype(normal=[...], ...)``, built with DARTS' macro,
setting ``darts`` by default), or a zoo name.
"""
from __future__ import annotations

import functools
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
from nasforge.search_spaces.darts import (DartsGenotype, genotype_pair, is_genotype_text,
                                          parse_genotype)
from nasforge.search_spaces.nas_bench_201 import (DEFAULT_DATASET, NB201_OPS, Nb201Cell,
                                                  UnknownDatasetError, check_dataset,
                                                  format_cell, is_cell_record, parse_cell,
                                                  read_cell_record)
from nasforge.search_spaces.nas_bench_201 import network as nb201_network
from nasforge.tables import hp12_columns, load_table
from nasforge.zoo import CHAIN_SETTINGS, NB201_SETTINGS, SETTINGS, ZOO, ChainConfig, get_entry

CONFIG_FIELDS = {f.name for f in fields(NetworkConfig)}
GENOTYPE_SETTING = "darts"  # the setting a DARTS genotype is built with unless one is given


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


def reference_kind(ref) -> str:
    """What a model reference is, the one rule for it: ``"object"`` (a ``CellPair``,
    ``CellChain``, ``Nb201Cell`` or ``DartsGenotype``), ``"file"`` (``is_file_reference``),
    ``"darts"`` (a DARTS genotype string, ``is_genotype_text``), ``"nb201"`` (a NAS-Bench-201
    cell string: a string with a ``|``, which no zoo name has; a malformed one is still this
    kind, so its error names the string's problem) or ``"zoo"``."""
    if isinstance(ref, (CellPair, CellChain, Nb201Cell, DartsGenotype)):
        return "object"
    if is_genotype_text(ref):
        return "darts"
    ref = os.fspath(ref)
    if is_file_reference(ref):
        return "file"
    return "nb201" if "|" in ref else "zoo"


def nb201_reference(ref) -> tuple[Nb201Cell, str | None] | None:
    """(cell, the data set the reference names or None) when ``ref`` is a NAS-Bench-201 cell:
    an ``Nb201Cell``, its string, or a JSON file holding a cell record
    (``nas_bench_201.cell_record``: the ``best_cell.json`` of a nas-bench-201 search); None
    for any other reference. A malformed string or cell record raises NasBench201StringError;
    a file that cannot be read is left to ``load_file`` (None)."""
    if isinstance(ref, Nb201Cell):
        return ref, None
    kind = reference_kind(ref)
    if kind == "nb201":
        return parse_cell(ref), None
    if kind != "file":
        return None
    try:
        with open(ref, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not is_cell_record(data):
        return None
    cell, dataset, _ = read_cell_record(data)
    return cell, dataset


def nb201_name(cell: Nb201Cell | str) -> str:
    """A file-name-safe name of a NAS-Bench-201 cell: ``nb201-`` and one digit per edge in
    the string's order, the op's index in ``NB201_OPS`` (0 none, 1 skip_connect,
    2 nor_conv_1x1, 3 nor_conv_3x3, 4 avg_pool_3x3)."""
    cell = cell if isinstance(cell, Nb201Cell) else parse_cell(cell)
    return "nb201-" + "".join(str(NB201_OPS.index(op)) for op in cell.ops)


def darts_name(genotype: DartsGenotype | str) -> str:
    """A file-name-safe name of a DARTS genotype: ``darts-`` and the first 10 hex digits of
    its cell pair's canonical hash."""
    return "darts-" + genotype_pair(genotype).canonical_hash()[:10]


def reference_name(ref) -> str:
    """A short name of a model reference (default output and run-folder names): a zoo name,
    a file's stem, ``nb201_name`` of a NAS-Bench-201 cell, an object's own name (``arch``
    when it has none)."""
    kind = reference_kind(ref)
    if kind == "object":
        return nb201_name(ref) if isinstance(ref, Nb201Cell) else \
            darts_name(ref) if isinstance(ref, DartsGenotype) else ref.name or "arch"
    if kind == "darts":
        return darts_name(ref)
    ref = os.fspath(ref)
    return {"file": lambda: os.path.splitext(os.path.basename(ref))[0],
            "nb201": lambda: nb201_name(ref), "zoo": lambda: ref}[kind]()


def resolve(name_or_path: str | CellPair | CellChain | Nb201Cell, setting: str | None = None,
            dataset: str | None = None,
            **overrides) -> tuple[CellPair | CellChain, NetworkConfig | ChainConfig]:
    """(architecture, config) for a zoo name, a JSON path, a NAS-Bench-201 cell string, or an
    architecture object (``reference_kind``); a JSON file holding a NAS-Bench-201 cell record
    is that cell (``nb201_reference``).

    ``setting`` defaults to the zoo entry's first setting (``cifar`` for files and pairs,
    ``nb201`` for NAS-Bench-201 cells). For cell pairs ``overrides`` are NetworkConfig
    fields, plus ``penultimate`` (P of N@P, converted to ``filters``); for chains
    ``input_size``/``num_classes`` and builder options. ``dataset`` applies to NAS-Bench-201
    cells only (``cifar10``, the default, ``cifar100``, ``imagenet16``): it fixes the classes
    and the input size; ``input_size`` may still be overridden.
    """
    nb201 = nb201_reference(name_or_path)
    if nb201 is not None:  # a cell, its string or a cell-record file (its data set the default)
        return _resolve_nb201(nb201[0], setting, nb201[1] if dataset is None else dataset,
                              overrides)
    if isinstance(name_or_path, DartsGenotype) or reference_kind(name_or_path) == "darts":
        genotype = name_or_path if isinstance(name_or_path, DartsGenotype) else \
            parse_genotype(name_or_path)
        name_or_path, setting = genotype_pair(genotype, darts_name(genotype)), \
            setting or GENOTYPE_SETTING
    if dataset is not None:
        raise ArchitectureError(f"dataset {dataset!r} applies to NAS-Bench-201 cells only, not "
                                f"to {reference_name(name_or_path)!r}", options=("dataset",))
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


def _resolve_nb201(cell, setting, dataset, overrides: dict):
    """NAS-Bench-201's network (``search_spaces.nas_bench_201.network``) around ``cell``."""
    cell = cell if isinstance(cell, Nb201Cell) else parse_cell(cell)
    setting = setting or next(iter(NB201_SETTINGS))
    if setting not in NB201_SETTINGS:
        raise ArchitectureError(f"a NAS-Bench-201 cell builds NAS-Bench-201's network: setting "
                                f"{setting!r} does not apply (expected "
                                f"{', '.join(NB201_SETTINGS)})", options=("setting",))
    try:
        dataset = check_dataset(DEFAULT_DATASET if dataset is None else dataset)
    except UnknownDatasetError as e:
        raise ArchitectureError(str(e), options=e.options) from None
    config = NB201_SETTINGS[setting][dataset]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    fixed = {"num_classes": config.num_classes, "in_channels": config.in_channels}
    for name, value in fixed.items():
        given = overrides.pop(name, value)
        if given != value:
            raise ArchitectureError(f"NAS-Bench-201's network on {dataset} has {name} {value}, "
                                    f"not {given} (its data set fixes it)",
                                    options=("dataset",))
    if "input_size" in overrides:
        config = replace(config, input_size=overrides.pop("input_size"))
    if overrides:
        raise ArchitectureError(f"unknown network option(s) for a NAS-Bench-201 cell: "
                                f"{', '.join(sorted(overrides))} (only input_size and dataset)")
    return nb201_network(cell, dataset, name=nb201_name(cell)), config


def nb201_setting_of(name_or_path, setting: str | None, dataset: str | None) -> tuple[str, str]:
    """(setting, dataset) a NAS-Bench-201 cell is resolved with (the defaults filled in)."""
    setting = setting or next(iter(NB201_SETTINGS))
    return setting, DEFAULT_DATASET if dataset is None else dataset


@functools.lru_cache(maxsize=1)
def _shipped_table():
    return load_table()


def nb201_table_row(cell: Nb201Cell | str) -> dict | None:
    """The shipped 12-epoch table's row of ``cell`` (``arch_index`` and accuracies, %), None
    when the table does not hold it. The table is read once per process (about 0.3 s)."""
    table = _shipped_table()
    return table.lookup(cell) if cell in table else None


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
    """The module of a zoo name, JSON file, NAS-Bench-201 cell string or architecture object
    (``resolve``: ``setting``, ``overrides``, ``dataset`` for NAS-Bench-201 cells).
    ``weights``: a state dict of the zoo entry's reference implementation (torchvision,
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


def model_info(model_name, setting=None, dataset: str | None = None, **overrides) -> dict:
    """``{"model", "setting", "params", "mult_adds", "input_size", "output_shape"}`` (plus
    ``N``, ``filters``, ``penultimate`` for cell networks, ``output_stride`` for chains) of a
    zoo name, JSON file or NAS-Bench-201 cell string: the figures ``nasforge info`` prints and
    a transfer's table reports. A NAS-Bench-201 cell adds ``dataset``, ``cell`` (its
    normalised string) and, when the shipped 12-epoch table holds it, ``arch_index`` and
    ``hp12_valid``/``hp12_test`` (its accuracy, %, on ``dataset`` after the 12-epoch
    schedule). The model is built on the meta device (no memory, fast)."""
    import torch

    arch, config = resolve(model_name, setting, dataset, **overrides)
    nb201 = nb201_reference(model_name)
    if nb201:
        setting, dataset = nb201_setting_of(model_name, setting,
                                            nb201[1] if dataset is None else dataset)
    elif setting is None:
        setting = (ZOO[model_name].default_setting if model_name in ZOO else
                   GENOTYPE_SETTING if isinstance(model_name, DartsGenotype) or
                   reference_kind(model_name) == "darts" else
                   "cifar" if isinstance(arch, CellPair) else "imagenet")
    with torch.device("meta"):
        model = compile_architecture(arch, config)
        mult_adds, shape = count_mult_adds(model, config.input_size, config.in_channels)
    info = {"model": str(model_name), "setting": setting, "params": count_params(model),
            "mult_adds": mult_adds, "input_size": config.input_size,
            "output_shape": list(shape)}
    if isinstance(arch, CellPair):
        info.update(N=config.N, filters=config.filters,
                    penultimate=penultimate_filters(arch, config))
    else:
        info["output_stride"] = arch.output_stride()
    if nb201:
        cell = nb201[0]
        info.update(dataset=dataset, cell=format_cell(cell))
        row = nb201_table_row(cell)
        if row is not None:
            valid, test = hp12_columns(dataset)
            info.update(arch_index=row["arch_index"], hp12_valid=row[valid], hp12_test=row[test])
    return info
