"""The export formats. Each is one registered function ``write(source, path)``."""
from __future__ import annotations

import warnings
from pathlib import Path

from nasforge.dsl import render
from nasforge.export.pysource import python_source
from nasforge.export.registry import ExportError, ExportSource, register_exporter


@register_exporter("json", ".json")
def write_json(source: ExportSource, path: Path) -> None:
    """The DSL JSON (cell pair or chain), as read by `nasforge train FILE` / `info FILE`."""
    path.write_text(source.arch.to_json() + "\n", encoding="utf-8")


@register_exporter("dot", ".dot")
def write_dot(source: ExportSource, path: Path) -> None:
    """Graphviz DOT text of the cells."""
    path.write_text(source.arch.to_dot(), encoding="utf-8")


def _rendered(fmt: str):
    def write(source: ExportSource, path: Path) -> None:
        try:
            data = render(source.arch.to_dot(), fmt)
        except RuntimeError as e:  # no Graphviz
            raise ExportError(str(e)) from None
        path.write_bytes(data)

    write.__doc__ = f"The cells drawn by Graphviz's dot as {fmt.upper()}."
    return write


for _fmt in ("svg", "png"):
    register_exporter(_fmt, f".{_fmt}")(_rendered(_fmt))


@register_exporter("py", ".py")
def write_python(source: ExportSource, path: Path) -> None:
    """Standalone PyTorch source (class Net), same state dict keys and logits as nasforge's."""
    model = source.build(device="meta")  # tracing needs no weights
    path.write_text(python_source(model, source.describe(), source.input_shape()),
                    encoding="utf-8")


@register_exporter("onnx", ".onnx")
def write_onnx(source: ExportSource, path: Path) -> None:
    """ONNX of the network in eval mode at the config's input size (batch dimension dynamic).

    Uses torch's torch.export-based exporter (``dynamo=True``, which needs onnxscript): it
    takes seconds even for small networks, but is the one torch maintains.
    """
    import torch

    model = source.build()
    example = source.example_input(batch=2)  # torch.export specialises sizes of 1
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                    input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), external_data=False)
    program.save(str(path), external_data=False)


@register_exporter("torchscript", ".pt")
def write_torchscript(source: ExportSource, path: Path) -> None:
    """TorchScript (torch.jit.trace in eval mode at the config's input size), torch.jit.save."""
    import torch

    model = source.build()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.10 deprecates torch.jit
        traced = torch.jit.trace(model, source.example_input())
        torch.jit.save(traced, str(path))
