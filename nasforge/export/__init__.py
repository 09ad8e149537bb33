"""Export an architecture: its DSL JSON, a drawing, standalone PyTorch source, ONNX or
TorchScript.

>>> from nasforge.export import export, EXPORTERS
>>> export("nasnet_a", "onnx", "nasnet_a.onnx", setting="mobile")      # doctest: +SKIP
>>> export(pair, "py", "net.py", N=2, filters=16)                      # doctest: +SKIP

Formats (``EXPORTERS``, a registry: name -> exporter; add one with ``register_exporter``):

* ``json``: the cell pair / chain JSON, accepted by ``nasforge train FILE`` and ``info FILE``;
* ``dot``, ``svg``, ``png``: the cells drawn (svg/png need Graphviz's ``dot`` program);
* ``py``: a file needing only torch, with a ``Net`` class that has the nasforge model's state
  dict keys and computes the same logits (eval mode);
* ``onnx``: ``torch.onnx.export`` of the network in eval mode, input fixed to the setting's
  size (``input_size`` overrides it), batch dimension dynamic;
* ``torchscript``: ``torch.jit.trace`` of the network in eval mode, saved with
  ``torch.jit.save``.
"""
from __future__ import annotations

import os
from pathlib import Path

from nasforge.api import reference_name, resolve
from nasforge.export import formats as _formats  # noqa: F401  (registers the formats)
from nasforge.export.registry import (EXPORTERS, Exporter, ExportError, ExportSource,
                                      get_exporter, register_exporter)


def default_name(arch_or_name) -> str:
    """The stem of default output files: a zoo name, a JSON file's stem, a NAS-Bench-201
    cell's ``nb201_name``, or the architecture's own name (``arch`` when it has none)."""
    return reference_name(arch_or_name)


def export_source(arch_or_name, setting: str | None = None, input_size: int | None = None,
                  name: str | None = None, state_dict: dict | None = None,
                  **overrides) -> ExportSource:
    """Resolve a zoo name, a cell-pair/chain JSON path, a NAS-Bench-201 cell string or a
    ``CellPair``/``CellChain`` (with ``nasforge.api.resolve``: ``setting`` and ``overrides``,
    ``dataset`` among them, as for ``build_model``)."""
    if isinstance(arch_or_name, os.PathLike):
        arch_or_name = os.fspath(arch_or_name)
    given = {k: v for k, v in dict(overrides, input_size=input_size).items() if v is not None}
    arch, config = resolve(arch_or_name, setting, **given)
    return ExportSource(arch, config, name or default_name(arch_or_name), setting, given,
                        state_dict)


def export(arch_or_name, fmt: str, path: str | os.PathLike | None = None,
           setting: str | None = None, input_size: int | None = None,
           state_dict: dict | None = None, **overrides) -> Path:
    """Write ``arch_or_name`` in format ``fmt`` to ``path``; returns the path written.

    ``arch_or_name``: a zoo name, a cell-pair/chain JSON path, a NAS-Bench-201 cell string, or a
    ``CellPair``/``CellChain``.
    ``fmt``: a key of ``EXPORTERS`` (ValueError naming the known ones otherwise).
    ``path``: default ``<name><suffix>`` in the current folder; parent folders are created.
    ``setting`` (cifar/mobile/large; imagenet/cifar for hand-designed networks; nb201 for
    NAS-Bench-201 cells, with ``dataset`` among the overrides) and
    ``overrides`` (``N``, ``filters``/``penultimate``, ``num_classes``, ...) configure the
    network as in ``nasforge.build_model``; ``input_size`` (pixels) sets the fixed input of
    the traced formats (py, onnx, torchscript), default the setting's. ``state_dict``: trained
    weights for the formats that embed weights (onnx, torchscript).
    """
    exporter = get_exporter(fmt)
    source = export_source(arch_or_name, setting, input_size, state_dict=state_dict,
                           **overrides)
    path = Path(path) if path is not None else Path(source.name + exporter.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    exporter(source, path)
    return path


__all__ = ["EXPORTERS", "Exporter", "ExportError", "ExportSource", "default_name", "export",
           "export_source", "get_exporter", "register_exporter"]
