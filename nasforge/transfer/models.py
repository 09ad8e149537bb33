"""The networks of a transfer: the found cell's ImageNet network and the baselines.

A :class:`ModelSpec` names one network the way ``nasforge info`` does (a zoo name or a cell-pair
JSON file, a setting, overrides), so the table's params and multiply-adds are exactly what
``nasforge info REF --setting S --N n --penultimate P --num-classes C --input-size PX`` prints.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nasforge import build_model
from nasforge.api import ArchitectureError, load_file, model_info
from nasforge.dsl import CellPair
from nasforge.errors import NasforgeError
from nasforge.rules import reject_unknown_keys
from nasforge.search.run_folder import BEST, TRIALS, best_trial, read_trials
from nasforge.train import get_recipe
from nasforge.zoo import ZOO

CELL_SETTINGS = ("mobile", "large")


class TransferError(NasforgeError, ValueError):
    """Bad input to a transfer (printed as one line by the CLI, exit code 2)."""


@dataclass(frozen=True)
class ModelSpec:
    """One row of the comparison: ``ref`` (zoo name or cell-pair JSON path), its setting and
    build overrides (``N``, ``penultimate``: inference network; training adds the recipe's
    auxiliary head and drop-path)."""

    label: str  # folder and table name
    kind: str  # "cell" (the found cell's network) or "baseline"
    ref: str
    setting: str | None
    overrides: dict = field(default_factory=dict)
    recipe: str = "imagenet-baseline"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        reject_unknown_keys(cls, d, "transfer model spec", TransferError)
        return cls(**d)


def resolve_cell(ref: str):
    """``(CellPair, origin)`` for a cell-pair JSON file, a zoo cell network (``nasnet_a``) or
    a search run folder (its best trial's ``arch``; ``best_cell.json`` when the trial records
    are unreadable)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        best = best_trial(read_trials(path)) if (path / TRIALS).is_file() else None
        if best is not None and isinstance(best.get("arch"), dict):
            pair = CellPair.from_dict(best["arch"]).validate()
            if not pair.name:
                pair = CellPair(pair.normal, pair.reduction, f"trial{best['trial']}",
                                pair.network)
            return pair, f"{path} (best trial {best['trial']}, val_acc " \
                         f"{best.get('metrics', {}).get('val_acc')})"
        if (path / BEST).is_file():
            pair = load_file(str(path / BEST))
            return pair, str(path / BEST)
        raise TransferError(f"{path} is not a search run folder with a finished trial "
                            f"(no {TRIALS} record with a cell, no {BEST})")
    if path.is_file() or ref.endswith(".json"):
        if not path.is_file():
            raise TransferError(f"cell file {path} does not exist")
        arch = load_file(str(path))
        if not isinstance(arch, CellPair):
            raise TransferError(f"{path} holds a cell chain, not a (normal, reduction) cell "
                                f"pair; name hand-designed networks as baselines",
                                options=("baselines",))
        return arch, str(path)
    entry = ZOO.get(ref)
    if entry is None:
        raise TransferError(f"{ref!r} is neither a cell-pair JSON file, a search run folder nor "
                            f"a zoo cell network (see `nasforge zoo`)")
    if entry.build_pair is None:
        raise TransferError(f"{ref!r} is a hand-designed network, not a cell: name it as a "
                            f"baseline", options=("baselines",))
    return entry.build_pair(), f"zoo:{ref}"


def cell_spec(ref: str, pair, setting: str, *, N=None, penultimate=None,
              cell_file: Path | None = None) -> ModelSpec:
    """The found cell's network at ``setting``. A zoo cell network keeps its zoo config
    (``nasforge info nasnet_a --setting mobile``); any other pair is written to ``cell_file``
    and built from there with the setting's N@P (overridable)."""
    if setting not in CELL_SETTINGS:
        raise TransferError(f"unknown setting {setting!r} (expected one of "
                            f"{', '.join(CELL_SETTINGS)})")
    overrides = {k: v for k, v in (("N", N), ("penultimate", penultimate)) if v is not None}
    recipe = f"imagenet-nasnet-{setting}"
    if ref in ZOO and not Path(ref).exists():
        if setting not in ZOO[ref].settings:
            raise TransferError(f"{ref} has no {setting} setting")
        return ModelSpec(label=ref, kind="cell", ref=ref, setting=setting, overrides=overrides,
                         recipe=recipe)
    if cell_file is None:
        raise ValueError("cell_spec needs cell_file for a cell that is not in the zoo")
    cell_file.parent.mkdir(parents=True, exist_ok=True)
    cell_file.write_text(json.dumps(pair.to_dict(), indent=2) + "\n")
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in (pair.name or "cell"))
    return ModelSpec(label=label, kind="cell", ref=str(cell_file), setting=setting,
                     overrides=overrides, recipe=recipe)


def baseline_specs(names, taken=()) -> list[ModelSpec]:
    """Hand-designed zoo networks at their ImageNet setting; unknown names raise."""
    specs, seen = [], set(taken)
    for name in names:
        entry = ZOO.get(name)
        if entry is None:
            raise ArchitectureError(f"unknown baseline {name!r} (see `nasforge zoo`)")
        if entry.build_pair is not None:
            raise TransferError(f"baseline {name!r} is a cell network: give it as CELL_OR_RUN")
        if "imagenet" not in entry.settings:
            raise TransferError(f"baseline {name!r} has no ImageNet setting (it has: "
                                f"{', '.join(entry.settings)})")
        if name in seen:
            raise TransferError(f"baseline {name!r} is named twice")
        seen.add(name)
        specs.append(ModelSpec(label=name, kind="baseline", ref=name, setting="imagenet",
                               recipe="imagenet-baseline"))
    return specs


def spec_info(spec: ModelSpec, num_classes: int, image_size: int) -> dict:
    """``nasforge info``'s figures (params, mult-adds, N@P) for the inference network."""
    return model_info(spec.ref, spec.setting, num_classes=num_classes, input_size=image_size,
                      **spec.overrides)


def build(spec: ModelSpec, num_classes: int, image_size: int, recipe=None):
    """The network to train: ``spec`` plus the overrides of ``recipe`` that apply to it
    (``Recipe.build_overrides``: drop-path and the auxiliary head of cell networks, stochastic
    depth of baselines, as ``nasforge train`` builds them)."""
    extra = {} if recipe is None else get_recipe(recipe).build_overrides(
        spec.ref, network="cell" if spec.kind == "cell" else "chain")
    return build_model(spec.ref, spec.setting, num_classes=num_classes, input_size=image_size,
                       **spec.overrides, **extra)

