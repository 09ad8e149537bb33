"""The export registry and what every exporter is given.

An exporter is registered under a format name with ``@register_exporter(name, suffix)`` and
called as ``exporter(source, path)``: it writes one file at ``path``. ``source`` is an
``ExportSource``: a resolved architecture and its network config, plus the compiled model on
demand. Adding a format is adding a registered function; nothing else branches on formats.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from nasforge import __version__
from nasforge.api import compile_architecture
from nasforge.dsl import CellChain, CellPair
from nasforge.errors import NasforgeError
from nasforge.rules import add_unique


class ExportError(NasforgeError, RuntimeError):
    """An architecture that cannot be written in the requested format."""


@dataclass(frozen=True)
class Exporter:
    """A registered format: ``write(source, path)`` writes one file; ``suffix`` is its
    default file extension (with the dot)."""

    name: str
    suffix: str
    write: Callable[["ExportSource", Path], None]
    doc: str = ""

    def __call__(self, source: "ExportSource", path: Path) -> None:
        self.write(source, path)


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(name: str, suffix: str):
    """Decorator: register ``write(source, path)`` as the exporter of format ``name``."""

    def wrap(write):
        summary = ((write.__doc__ or "").strip().splitlines() or [""])[0]
        add_unique(EXPORTERS, name, Exporter(name, suffix, write, summary), "export format")
        return write

    return wrap


def get_exporter(fmt: str) -> Exporter:
    """The exporter of ``fmt``; ValueError naming the known formats otherwise."""
    try:
        return EXPORTERS[fmt]
    except (KeyError, TypeError):
        raise ValueError(f"unknown export format {fmt!r} (known: "
                         f"{', '.join(EXPORTERS)})") from None


@dataclass
class ExportSource:
    """A resolved architecture, what every exporter receives.

    ``arch``/``config`` come from ``nasforge.api.resolve``; ``name`` labels the output (a zoo
    name, a file's stem, a trial); ``setting`` and ``overrides`` are recorded in headers;
    ``state_dict`` (optional) holds trained weights for the formats that embed weights (ONNX,
    TorchScript); without it those get nasforge's initialisation under seed 0.
    """

    arch: CellPair | CellChain
    config: object  # NetworkConfig | ChainConfig
    name: str
    setting: str | None = None
    overrides: dict = field(default_factory=dict)
    state_dict: dict | None = None

    @property
    def in_channels(self) -> int:
        if isinstance(self.arch, CellChain):
            return self.arch.in_channels
        return self.config.in_channels

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.in_channels, self.input_size, self.input_size)

    def example_input(self, batch: int = 1):
        """A fixed random input (seed 0) of the config's size."""
        import torch

        return torch.randn(self.input_shape(batch), generator=torch.Generator().manual_seed(0))

    def build(self, device: str | None = None):
        """The compiled network in eval mode (drop-path and the auxiliary head are then
        inactive). ``device="meta"`` builds it without memory (enough for tracing)."""
        import torch

        if device == "meta":
            with torch.device("meta"):
                return compile_architecture(self.arch, self.config).eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = compile_architecture(self.arch, self.config)
        if self.state_dict is not None:
            model.load_state_dict(self.state_dict)
        return model.eval() if device is None else model.to(device).eval()

    def describe(self) -> list[str]:
        """Lines saying what this is (for the headers of generated files)."""
        kind = "cell pair" if isinstance(self.arch, CellPair) else "cell chain"
        lines = [f"architecture: {self.name} ({kind} {self.arch.name or 'unnamed'!r}, "
                 f"canonical hash {self.arch.canonical_hash()[:16]})"]
        if self.setting:
            lines.append(f"setting: {self.setting}")
        if self.overrides:
            lines.append("overrides: " + ", ".join(f"{k}={v!r}" for k, v in
                                                   sorted(self.overrides.items())))
        lines.append("config: " + ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                                            for f in dataclasses.fields(self.config)))
        lines.append(f"input: {' x '.join(map(str, self.input_shape()[1:]))} "
                     f"(channels x height x width)")
        lines.append(f"nasforge {__version__}")
        return lines
