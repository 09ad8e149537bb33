"""Standalone PyTorch source for a compiled network (the ``py`` export format).

The network is traced with ``torch.fx``: modules of ``torch.nn`` itself are leaves (called by
name in the generated ``forward``), everything nasforge implements (cells, TF-'SAME' padded
convolutions and pools, factorized reductions) is traced through into plain tensor operations.
The generated ``Net.__init__`` rebuilds the module tree at the same qualified paths, so the
state dict keys are nasforge's:

* ``torch.nn`` leaves are rebuilt by their constructor, whose arguments are read from the
  module's attributes of the same names (``inspect.signature``), and checked by rebuilding
  them on the meta device and comparing ``extra_repr`` and parameter shapes;
* ``nn.Sequential``/``ModuleList``/``ModuleDict`` (and nasforge subclasses of them) become
  the torch container;
* other nasforge modules become their ``torch.nn`` base class where it rebuilds identically
  (``Conv2dSame`` -> ``nn.Conv2d``), else a plain ``nn.Module`` holding their parameters and
  buffers at the same names.

``forward`` is the fx-generated code, so the file needs nothing but ``import torch``.
"""
from __future__ import annotations

import builtins
import inspect
import math
import operator
import re
import textwrap

import torch
import torch.fx as fx
from torch import nn

from nasforge.export.registry import ExportError

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_SKIPPED_ARGS = ("device", "dtype")
_LITERALS = (bool, int, float, str, type(None))
_SAFE_NAME = re.compile(r"[\w-]+")

# globals the fx code generator may reference -> how the generated file defines them
_GLOBAL_IMPORTS = {
    "torch": ("import torch", torch),
    "inf": ("inf = float('inf')", math.inf),
    "nan": ("nan = float('nan')", math.nan),
    "NoneType": ("NoneType = type(None)", type(None)),
    "device": ("device = torch.device", torch.device),
}


def _is_torch_class(cls: type) -> bool:
    return cls.__module__.startswith(("torch.nn.", "torch.ao.nn.")) and cls is not nn.Module


class LeafTracer(fx.Tracer):
    """Leaves are modules whose class is torch.nn's own (not a nasforge subclass of it)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _is_torch_class(type(m)) and not isinstance(m, _CONTAINERS)


def _torch_name(cls: type) -> str:
    """``torch.nn.Conv2d`` rather than ``torch.nn.modules.conv.Conv2d`` where it is exported."""
    short = f"torch.nn.{cls.__name__}"
    return short if getattr(nn, cls.__name__, None) is cls else \
        f"{cls.__module__}.{cls.__qualname__}"


def _is_literal(value) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_literal(v) for v in value)
    return isinstance(value, _LITERALS) and not (isinstance(value, float) and
                                                 not math.isfinite(value))


def _is_default(value, default) -> bool:
    if default is inspect.Parameter.empty:
        return False
    if isinstance(value, tuple) and not isinstance(default, tuple) and value:
        return all(type(v) is type(default) and v == default for v in value)
    return type(value) is type(default) and value == default


def _constructor_call(cls: type, m: nn.Module, path: str) -> str:
    """``torch.nn.X(arg=value, ...)`` rebuilding ``m`` as ``cls`` (its own class or a torch.nn
    base class) from the attributes named like the constructor's arguments."""
    args = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in _SKIPPED_ARGS:
            continue
        if p.name == "bias" and "bias" in m._parameters:  # Linear/Conv: bias=True/False
            value = m._parameters["bias"] is not None
        elif hasattr(m, p.name):
            value = getattr(m, p.name)
        elif p.default is not p.empty:
            continue  # checked below: the rebuilt module must print and weigh the same
        else:
            raise ExportError(f"cannot rebuild module {path or '(root)'} "
                              f"({type(m).__name__}): no attribute for constructor argument "
                              f"{p.name!r} of {cls.__name__}")
        if not _is_literal(value):
            raise ExportError(f"cannot rebuild module {path or '(root)'} ({type(m).__name__}): "
                              f"constructor argument {p.name!r} is a {type(value).__name__}")
        if not _is_default(value, p.default):
            args.append(f"{p.name}={value!r}")
    return f"{_torch_name(cls)}({', '.join(args)})"


def _own_state(m: nn.Module) -> dict[str, tuple]:
    """Direct (non-child) parameters and buffers: name -> (kind, shape, dtype)."""
    state = {k: ("param", tuple(v.shape), v.dtype) for k, v in m._parameters.items()
             if v is not None}
    state.update({k: ("buffer", tuple(v.shape), v.dtype) for k, v in m._buffers.items()
                  if v is not None})
    return state


def _rebuilds(m: nn.Module, call: str, cls: type) -> bool:
    """Whether ``call`` (evaluated on the meta device) rebuilds ``m``'s settings and state."""
    with torch.device("meta"):
        rebuilt = eval(call, {"torch": torch})  # our own generated text
    return (type(rebuilt) is cls and rebuilt.extra_repr() == m.extra_repr()
            and _own_state(rebuilt) == _own_state(m)
            and rebuilt._non_persistent_buffers_set == m._non_persistent_buffers_set)


def _torch_base(cls: type) -> type | None:
    return next((c for c in cls.__mro__[1:] if _is_torch_class(c)
                 and not issubclass(c, _CONTAINERS)), None)


def _dtype_arg(dtype: torch.dtype) -> str:
    return "" if dtype == torch.float32 else f", dtype={dtype}"


def _rebuild_call(m: nn.Module, path: str) -> str:
    """The constructor call rebuilding ``m`` as its torch.nn class (a leaf) or torch.nn base
    class (``Conv2dSame`` -> ``nn.Conv2d``); ExportError when there is none."""
    cls = type(m)
    target = cls if _is_torch_class(cls) else _torch_base(cls)
    if target is None or list(m.children()):
        raise ExportError(f"cannot rebuild module {path} ({cls.__name__}): not a torch.nn "
                          f"module without children")
    call = _constructor_call(target, m, path)
    if not _rebuilds(m, call, target):
        raise ExportError(f"cannot rebuild module {path} ({cls.__name__}) from its "
                          f"attributes: {call} differs from it")
    return call


def _module_lines(model: nn.Module, called: set[str]) -> list[str]:
    """``__init__`` body lines rebuilding every module of ``model`` at its qualified path.

    Modules the traced forward calls must be rebuilt exactly (ExportError otherwise); any
    other module falls back to a container holding its own parameters and buffers."""
    lines: list[str] = []
    first_path: dict[int, str] = {}
    for path, m in model.named_modules(remove_duplicate=False):
        if id(m) in first_path:  # a shared module: the same object at a second path
            lines.append(f"self._put({path!r}, self.get_submodule({first_path[id(m)]!r}))")
            continue
        first_path[id(m)] = path
        container = next((c for c in _CONTAINERS if isinstance(m, c)), None)
        if path and container is None:
            try:
                lines.append(f"self._put({path!r}, {_rebuild_call(m, path)})")
                continue
            except ExportError:
                if path in called:
                    raise
        if path:
            lines.append(f"self._put({path!r}, {_torch_name(container or nn.Module)}())")
        for name, (kind, shape, dtype) in _own_state(m).items():
            target = f"{path}.{name}" if path else name
            if kind == "param":
                lines.append(f"self._param({target!r}, {shape}{_dtype_arg(dtype)})")
            elif name in m._non_persistent_buffers_set:
                raise ExportError(f"{target} is a non-persistent buffer of {type(m).__name__}: "
                                  f"its value is not in the state dict and cannot be exported")
            else:
                lines.append(f"self._buffer({target!r}, {shape}{_dtype_arg(dtype)})")
    return lines


def trace(model: nn.Module) -> fx.Graph:
    """The fx graph of ``model.forward`` with torch.nn modules as leaves."""
    try:
        graph = LeafTracer().trace(model)
    except Exception as e:  # fx reports data-dependent control flow as TraceError
        raise ExportError(f"cannot trace {type(model).__name__} with torch.fx: "
                          f"{type(e).__name__}: {e}") from e
    graph.lint()
    return graph


_HELPERS = '''
    def _put(self, path, module):
        """Attach ``module`` at the dotted ``path`` (its parent exists already)."""
        parent, _, name = path.rpartition(".")
        (self.get_submodule(parent) if parent else self).add_module(name, module)

    def _param(self, path, shape, dtype=torch.float32):
        """An uninitialised (zero) parameter: load the weights with load_state_dict."""
        parent, _, name = path.rpartition(".")
        (self.get_submodule(parent) if parent else self).register_parameter(
            name, torch.nn.Parameter(torch.zeros(shape, dtype=dtype)))

    def _buffer(self, path, shape, dtype=torch.float32):
        parent, _, name = path.rpartition(".")
        (self.get_submodule(parent) if parent else self).register_buffer(
            name, torch.zeros(shape, dtype=dtype))
'''


def _docstring(text: str) -> str:
    """One line of text made safe inside a triple-quoted docstring."""
    text = " ".join(text.split()).replace("\\", "\\\\").replace('"', '\\"')
    return text[:1].upper() + text[1:] + "."


def python_source(model: nn.Module, header: list[str], input_shape: tuple[int, ...],
                  class_name: str = "Net") -> str:
    """Source of a module ``class_name`` that needs only torch and computes ``model`` in eval
    mode, with ``model``'s module paths and state dict keys. ``header``: lines for the
    comment at the top (what the network is and where it came from)."""
    model = model.eval()
    graph = trace(model)
    called = {n.target for n in graph.nodes if n.op == "call_module"}
    known = {k for k, _ in model.named_parameters(remove_duplicate=False)}
    known |= {k for k, _ in model.named_buffers(remove_duplicate=False)}
    for n in graph.nodes:
        if n.op == "get_attr" and n.target not in known:
            raise ExportError(f"the traced forward reads {n.target!r}, which is neither a "
                              f"parameter nor a buffer (a tensor constant cannot be exported)")
    for n in graph.nodes:  # fx writes odd names as getattr(self.x, "name"): keep them plain
        if n.op in ("get_attr", "call_module") and not all(
                _SAFE_NAME.fullmatch(part) for part in n.target.split(".")):
            raise ExportError(f"module path {n.target!r} has characters that cannot be "
                              f"written into the generated source (node ids: letters, digits, "
                              f"'_' and '-')")
    code = graph.python_code(root_module="self")
    imports = []
    used = set(re.findall(r"[A-Za-z_]\w*", code.src))
    for name, obj in code.globals.items():
        if name not in used or getattr(builtins, name, None) is obj:
            continue  # the code generator lists its own builtins whether used or not
        if name == "torch" or (name in _GLOBAL_IMPORTS and _GLOBAL_IMPORTS[name][1] is obj):
            if name != "torch":
                imports.append(_GLOBAL_IMPORTS[name][0])
            continue
        library = next((lib for lib in (operator, math)
                        if getattr(lib, getattr(obj, "__name__", ""), None) is obj), None)
        if library is not None:  # e.g. operator.abs, written as _operator_abs
            imports.append(f"from {library.__name__} import {obj.__name__} as {name}")
            continue
        raise ExportError(f"the traced forward uses {name!r} ({obj!r}), which the generated "
                          f"file cannot define")
    init = _module_lines(model, called)
    forward = textwrap.indent(textwrap.dedent(code.src).strip("\n"), "    ")
    n_params = sum(p.numel() for p in model.parameters())
    comment = "\n".join(
        textwrap.fill(line, 96, initial_indent="# ", subsequent_indent="#     ")
        for line in header)
    body = "\n".join("        " + line for line in init)
    return f'''{comment}
#
# Standalone PyTorch ({n_params:,} parameters): this file needs only torch, not nasforge.
# {class_name}() has nasforge's module tree and state dict keys, so
#     net = {class_name}(); net.load_state_dict(nasforge_model.state_dict())
# loads a nasforge model's weights (strict); until then the parameters are placeholders
# (torch's default initialisation, or zeros). The weights are not in this file. forward() is
# nasforge's forward in eval mode, traced with torch.fx (drop-path and the auxiliary head are
# training-only and not in it): call net.eval() before inference. Modules nasforge implements
# itself (cells, TF-"SAME" padded convolutions, pools) appear as their torch.nn base class or
# as plain containers of their parameters; their computation is written out in forward(),
# so call Net itself, not those submodules.
import torch
{chr(10).join(imports)}
INPUT_SHAPE = {tuple(input_shape)}  # the input size the network was traced for


class {class_name}(torch.nn.Module):
    """{_docstring(header[0])}"""

    def __init__(self):
        super().__init__()
{body}
{_HELPERS}
{forward}


if __name__ == "__main__":
    net = {class_name}().eval()
    with torch.no_grad():
        print(tuple(net(torch.randn(INPUT_SHAPE)).shape))
'''
