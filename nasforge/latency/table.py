"""Per-op latency tables: a cell network's latency predicted by summing timed parts.

ProxylessNAS and FBNet predict a child's latency as the sum of per-op latencies looked up in a
table measured once on the target device, so a search can use latency without timing every
child. Here the parts are walked from the compiled network itself (``Network`` built on the
meta device, forward hooks on its modules), so no shape rule of the macro is repeated:

* every op node of every cell (key: op, stride, input and output shape);
* the fixed parts: the stem, each cell's input adjustments (``pre0``/``pre1``), the factorized
  reductions of the cell output (``adapt``), the output concatenation and the classifier head;
* each combine node (add, concat, ...), with its operands' shapes.

A table for a space and setting is built by timing, on the target device, every op of the
space at every (input shape, output shape, stride) position that the macro gives op nodes, and
the fixed parts of a few probe architectures. The input adjustments, output concat and head
read the previous cell's output, whose width depends on the cell; their entries are timed at
the widths of the probes (from one block's width to the widest cell) and predicted in between
by linear interpolation in the input channels (a 1x1 convolution's work is linear in them).

Per-op sums can miss what happens between parts in a whole network (Python dispatch of the
cell plumbing, caches that are cold in a network and warm for a part timed alone), so
``calibrate`` can fit a per-part overhead or a factor on a few calibration cells; predictions
apply it when the table holds one. (On this project's CPU the plain sum was within 7% of
measured latency and calibration did not help: see benchmarks/bench_latency.py.)

Where a table can be used: it is keyed by the device name, torch and onnxruntime versions,
threads, backend and batch it was timed with. ``load_table(path, device=...)`` refuses a table
built on other hardware than ``device`` here (per-op latencies do not transfer across
hardware; that is why ProxylessNAS builds one table per device), and warns when only software
versions or threads differ (same hardware: the same ops, possibly different kernels). Without
``device`` it checks nothing: a search driver predicting for a phone-class target need not run
on that target.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from nasforge.api import compile_architecture, resolve
from nasforge.dsl import CellPair
from nasforge.dsl.cell import module_key
from nasforge.errors import NasforgeError
from nasforge.latency.measure import (LatencyError, check_clock, check_device, device_name,
                                      summarize, time_calls, torch_threads)
from nasforge.registry import COMBINES, create_op
from nasforge.safe_load import read_json
from nasforge.search_spaces import Block, NasNetArch, NasNetSpace, get_space

log = logging.getLogger(__name__)

TABLE_FORMAT = "nasforge.latency-table/1"
TABLE_BACKENDS = ("torch",)  # see build_table: per-op sums need eager, unfused execution
# kinds of parts whose input width depends on the previous cell's output width: predicted by
# interpolation in the input channels between timed widths
WIDTH_VARYING = ("pre0", "pre1", "adapt", "output", "head")
BUILD_WARMUP = 3  # calls: per-part warm-up when building a table
BUILD_REPEATS = 15  # timed calls per part (median kept)
NUM_RANDOM_PROBES = 4  # random architectures among the probes (seeded: a table is reproducible)


class LatencyTableError(NasforgeError, ValueError):
    """A latency table that cannot be used (other hardware, malformed, missing an entry)."""


@dataclass(frozen=True)
class Part:
    """One timed part of a compiled network.

    ``key`` names it in a table; ``family`` is the key without the input channel count
    (width-varying parts are interpolated within a family); ``make(device)`` returns a
    zero-argument callable that runs the part once on fresh inputs of its shapes (called by
    the table builder only)."""

    key: str
    kind: str  # "op" | "stem" | "pre0" | "pre1" | "adapt" | "combine" | "output" | "head"
    family: str
    channels: int  # input channels (the interpolation coordinate)
    make: Callable[[torch.device, int], Callable[[], Any]] = field(compare=False, repr=False)


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _part(kind: str, label: str, in_shapes: Sequence[Sequence[int]], out_shape,
          make) -> Part:
    """A part keyed ``kind:label|in1+in2|out`` (shapes without the batch dimension)."""
    ins = "+".join(_shape(s[1:]) for s in in_shapes)
    key = f"{kind}:{label}|{ins}|{_shape(out_shape[1:])}"
    return Part(key, kind, family_of(key), key_channels(key), make)


def key_channels(key: str) -> int:
    """Input channels of a part key (summed over its inputs): the interpolation coordinate."""
    return sum(int(s.split("x")[0]) for s in key.split("|")[1].split("+"))


def family_of(key: str) -> str:
    """The key with the input channels left open (and the output's, for the output concat,
    whose width is its input's): parts of one family differ only in the previous cell's
    width."""
    label, ins, out = key.split("|")
    first = ins.split("+")[0].split("x")
    if label.startswith("output:"):
        out = "x".join(["*"] + out.split("x")[1:])
    return f"{label}|{'x'.join(['*'] + first[1:])}|{out}"


def materialize(module: nn.Module, device: torch.device, zero: bool = False) -> nn.Module:
    """A meta-device module as a real one on ``device`` in eval mode, with small random
    weights (zero weights with ``zero``, enough for shapes) and unit BN statistics:
    uninitialised memory can hold denormals or NaNs, which change CPU timings."""
    module = module.to_empty(device=device).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.zero_() if zero else p.normal_(0.0, 0.05)
        for name, b in module.named_buffers():
            b.fill_(1 if name.endswith("running_var") else 0)
    return module


def _module_maker(module: nn.Module, in_shapes):
    """make(device, batch) for a module part (the module is a meta-device template)."""
    def make(device, batch):
        real = materialize(module, device)
        inputs = [torch.randn(batch, *s[1:], device=device) for s in in_shapes]

        def call():
            with torch.inference_mode():
                return real(*inputs)
        return call
    return make


def _function_maker(function, in_shapes):
    def make(device, batch):
        inputs = [torch.randn(batch, *s[1:], device=device) for s in in_shapes]

        def call():
            with torch.inference_mode():
                return function(inputs)
        return call
    return make


class _Head(nn.Module):
    """The tail of ``Network.forward`` in eval mode (ReLU, global average pool, classifier):
    timed as one part; the compiler has no module for it."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(torch.flatten(torch.relu(x).mean((2, 3)), 1))


def _op_maker(op: str, c_in: int, c_out: int, stride: int, args: dict, in_shape):
    def make(device, batch):
        with torch.device("meta"):
            module = create_op(op, c_in, c_out, stride, **args)
        return _module_maker(module, [in_shape])(device, batch)
    return make


def network_parts(pair: CellPair, config, batch: int = 1) -> list[Part]:
    """The timed parts of ``pair`` compiled with ``config`` (a ``NetworkConfig``), in forward
    order, with the shapes a forward pass at ``config.input_size`` gives them.

    Called by ``predict_latency_ms`` (keys only) and the table builder (keys and makers).
    The network is built on the meta device: no memory, no weights."""
    with torch.device("meta"):
        net = compile_architecture(pair, config).eval()
    # Shapes come from one real forward at batch 1 with zero weights: a forward on the meta
    # device runs BatchNorm through Python decompositions, ten times slower at 224 px.
    shapes_net = materialize(net, torch.device("cpu"), zero=True)
    shapes: dict[int, tuple[list, tuple]] = {}  # id(module) -> (input shapes, output shape)

    def record(module, inputs, output):
        shapes[id(module)] = ([tuple(t.shape) for t in inputs if t is not None],
                              tuple(output.shape))

    timed = [net.stem]
    for cell in net.cells:
        timed += [m for m in (cell.pre0, cell.pre1, cell.body) if m is not None]
        timed += [m for _, m in cell.body.op_modules()] + list(cell.body.adapt.values())
    handles = [m.register_forward_hook(record) for m in timed]
    try:
        with torch.inference_mode():
            features, _ = shapes_net.forward_features(
                torch.zeros(1, config.in_channels, config.input_size, config.input_size))
    finally:
        for h in handles:
            h.remove()
    for key, (ins, out) in shapes.items():  # recorded at batch 1, timed at ``batch``
        shapes[key] = ([(batch, *s[1:]) for s in ins], (batch, *out[1:]))

    parts = [_part("stem", type(net.stem).__name__, *shapes[id(net.stem)],
                   _module_maker(net.stem, shapes[id(net.stem)][0]))]
    cells = {"normal": pair.normal, "reduction": pair.reduction}
    for slot, cell in zip(net.schedule.slots, net.cells):
        dsl = cells[slot.kind]
        for name in ("pre0", "pre1"):
            module = getattr(cell, name)
            if module is not None and not isinstance(module, nn.Identity):
                ins, out = shapes[id(module)]
                parts.append(_part(name, _module_label(module), ins, out,
                                   _module_maker(module, ins)))
        body_inputs, _ = shapes[id(cell.body)]
        state = {n: body_inputs[dsl.graph.nodes[n]["index"]] for n in dsl.nodes("input")}
        modules = dict(cell.body.op_modules())
        for n in dsl.topological_order():
            d, srcs = dsl.graph.nodes[n], dsl.operands(n)
            if d["kind"] == "op":
                ins, out = shapes[id(modules[n])]
                state[n] = out
                args = dict(d.get("args", {}))
                label = f"{d['op']}:s{d['stride']}" + (f":{sorted(args.items())}" if args
                                                        else "")
                parts.append(_part("op", label, ins, out,
                                   _op_maker(d["op"], ins[0][1], out[1], d["stride"], args,
                                             ins[0])))
            elif d["kind"] == "combine":
                spec = COMBINES[d["combine"]]
                ins = [state[s] for s in srcs]
                out = tuple(spec.apply([torch.empty(s, device="meta") for s in ins]).shape)
                state[n] = out
                parts.append(_part("combine", d["combine"], ins, out,
                                   _function_maker(spec.apply, ins)))
        outs = []
        for s in cell.body.output_states:
            adapt = cell.body.adapt[module_key(s)] if module_key(s) in cell.body.adapt else None
            if adapt is not None:
                ins, out = shapes[id(adapt)]
                parts.append(_part("adapt", _module_label(adapt), ins, out,
                                   _module_maker(adapt, ins)))
                outs.append(out)
            else:
                outs.append(state[s])
        if len(outs) > 1:  # CompiledGraph returns a single state as it is
            total = (outs[0][0], sum(o[1] for o in outs), *outs[0][2:])
            # keyed by the total width: a concat's cost is its bytes, however they are split
            parts.append(_part("output", "concat", [total], total,
                               _function_maker(lambda xs, n=len(outs): torch.cat(
                                   torch.chunk(xs[0], n, 1), 1), [total])))
    head = _Head(net.classifier)
    features = (batch, *features.shape[1:])
    parts.append(_part("head", "relu_pool_linear", [features], (batch, config.num_classes),
                       _module_maker(head, [features])))
    return parts


def _module_label(module: nn.Module) -> str:
    """A module's class, with its inner classes for a Sequential (ReLU+FactorizedReduction)."""
    if isinstance(module, nn.Sequential):
        return "+".join(type(m).__name__ for m in module)
    return type(module).__name__


# --------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class LatencyTable:
    """Per-part latencies (ms per call of the whole batch) for one device and software stack,
    for the cell networks of ``space`` at ``setting``."""

    device: str  # "cpu" | "cuda" ...
    device_name: str  # the hardware (CPU model or GPU name)
    torch_version: str
    onnxruntime_version: str | None
    threads: int  # intra-op threads the entries were timed with
    backend: str
    batch: int
    space: str
    setting: str
    input_size: int  # pixels
    entries: dict[str, float]  # part key -> median ms
    clock: str = "wall"  # measure.CLOCKS: what the entries' milliseconds are
    per_part_ms: float = 0.0  # calibrated overhead added per part (see calibrate)
    scale: float = 1.0  # calibrated factor on the summed entries (see calibrate)
    calibration: dict = field(default_factory=dict)  # how per_part_ms / scale were fitted
    build_seconds: float = 0.0  # wall time of build_table

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {"format": TABLE_FORMAT,
                "key": {"device": self.device, "device_name": self.device_name,
                        "torch": self.torch_version, "onnxruntime": self.onnxruntime_version,
                        "threads": self.threads, "backend": self.backend, "batch": self.batch,
                        "clock": self.clock},
                "space": self.space, "setting": self.setting, "input_size": self.input_size,
                "build_seconds": round(self.build_seconds, 1),
                "per_part_ms": self.per_part_ms, "scale": self.scale,
                "calibration": self.calibration,
                "entries": dict(sorted(self.entries.items()))}

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency table") -> "LatencyTable":
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise LatencyTableError(f"{source}: not a nasforge latency table (expected format "
                                    f"{TABLE_FORMAT!r})")
        try:
            key, entries = data["key"], data["entries"]
            table = cls(device=str(key["device"]), device_name=str(key["device_name"]),
                        torch_version=str(key["torch"]), onnxruntime_version=key["onnxruntime"],
                        threads=int(key["threads"]), backend=str(key["backend"]),
                        batch=int(key["batch"]), space=str(data["space"]),
                        setting=str(data["setting"]), input_size=int(data["input_size"]),
                        entries={str(k): float(v) for k, v in entries.items()},
                        clock=str(key.get("clock", "wall")),
                        per_part_ms=float(data.get("per_part_ms", 0.0)),
                        scale=float(data.get("scale", 1.0)),
                        calibration=dict(data.get("calibration", {})),
                        build_seconds=float(data.get("build_seconds", 0.0)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LatencyTableError(f"{source}: malformed latency table ({type(e).__name__}: "
                                    f"{e})") from None
        if not all(math.isfinite(v) and v >= 0 for v in table.entries.values()):
            raise LatencyTableError(f"{source}: latency entries must be finite and >= 0")
        return table

    def save(self, path) -> None:
        import json
        from pathlib import Path

        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    # ------------------------------------------------------------ look-ups
    def lookup(self, part: Part) -> float:
        """The part's latency: its entry, or for a width-varying part (or an op at a width the
        builder did not see) a linear interpolation in input channels within its family."""
        if part.key in self.entries:
            return self.entries[part.key]
        by_width: dict[int, list[float]] = {}
        for c, ms in self._families().get(part.family, []):
            by_width.setdefault(c, []).append(ms)
        points = sorted((c, float(np.mean(v))) for c, v in by_width.items())
        if not points:
            raise LatencyTableError(f"the latency table ({self.space}, {self.setting}) has no "
                                    f"entry for {part.key}")
        if len(points) == 1:  # one width timed: scale with the work
            c, ms = points[0]
            return ms * part.channels / c
        xs, ys = zip(*points)
        if xs[0] <= part.channels <= xs[-1]:
            return float(np.interp(part.channels, xs, ys))
        (x0, y0), (x1, y1) = points[:2] if part.channels < xs[0] else points[-2:]
        return max(0.0, y0 + (y1 - y0) * (part.channels - x0) / (x1 - x0))

    def _families(self) -> dict[str, list[tuple[int, float]]]:
        cache = self.__dict__.get("_family_cache")
        if cache is None:
            cache = {}
            for key, ms in self.entries.items():
                cache.setdefault(family_of(key), []).append((key_channels(key), ms))
            object.__setattr__(self, "_family_cache", cache)
        return cache


def current_versions() -> tuple[str, str | None]:
    """(torch version, onnxruntime version or None) of this process."""
    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = None
    return torch.__version__, ort


def load_table(path, device: str | None = None, threads: int | None = None) -> LatencyTable:
    """Read a latency table (JSON data, read with ``safe_load.read_json``).

    With ``device`` (the device predictions are for, on this machine): refuses a table timed
    on other hardware (LatencyTableError), warns (logging) when torch/onnxruntime versions or
    ``threads`` differ. Without it nothing is checked (see the module docstring)."""
    table = LatencyTable.from_dict(read_json(path, "latency table"), str(path))
    if device is not None:
        here = device_name(check_device(device))
        if here != table.device_name:
            raise LatencyTableError(f"{path} was timed on {table.device_name!r}, not on this "
                                    f"machine's {device} ({here!r}): per-op latencies do not "
                                    f"transfer across hardware; build a table here")
        torch_version, ort_version = current_versions()
        differences = [f"{what} {theirs} (here {ours})" for what, theirs, ours in (
            ("torch", table.torch_version, torch_version),
            ("onnxruntime", table.onnxruntime_version, ort_version),
            ("threads", table.threads, threads if threads is not None else table.threads))
            if theirs != ours]
        if differences:
            log.warning("%s was timed with %s: predictions may be off", path,
                        ", ".join(differences))
    return table


# ------------------------------------------------------------------------------- prediction
def resolve_cell_pair(arch_or_graph, table: LatencyTable) -> CellPair:
    """A CellPair from a CellPair or an architecture of the table's space (e.g. NasNetArch)."""
    if isinstance(arch_or_graph, CellPair):
        return arch_or_graph

    return get_space(table.space).to_graph(arch_or_graph)


def _network_config(pair: CellPair, table: LatencyTable):
    _, config = resolve(pair, table.setting)
    if config.input_size != table.input_size:
        config = replace(config, input_size=table.input_size)
    return config


def predict_parts(arch_or_graph, table: LatencyTable) -> list[tuple[Part, float]]:
    """(part, table latency in ms) for every part of the architecture's network."""
    pair = resolve_cell_pair(arch_or_graph, table)
    parts = network_parts(pair, _network_config(pair, table), table.batch)
    return [(p, table.lookup(p)) for p in parts]


def predict_latency_ms(arch_or_graph, table: LatencyTable, calibrated: bool = True,
                       kinds: Iterable[str] | None = None) -> float:
    """Predicted latency (ms per forward of a ``table.batch`` batch) of a cell network of the
    table's space and setting: the sum of its parts' table entries, plus the table's calibrated
    per-part overhead (``calibrate``) when ``calibrated``. ``kinds`` restricts the sum to some
    part kinds (e.g. ``("op", "stem", "pre0", "pre1", "adapt", "head")``: no combines).

    ``arch_or_graph``: a CellPair or an architecture of the table's space. This is the function
    a search registers as its ``latency_ms`` metric (see ``latency_metric``)."""
    priced = predict_parts(arch_or_graph, table)
    if kinds is not None:
        kinds = set(kinds)
        priced = [(p, ms) for p, ms in priced if p.kind in kinds]
    total = sum(ms for _, ms in priced)
    if not calibrated:
        return total
    return table.scale * total + table.per_part_ms * len(priced)


def latency_metric(table_path, device: str | None = None) -> Callable[[Any], float]:
    """``metric(arch_or_graph) -> predicted ms`` for a table file: a static metric (known
    before training, like params and mult-adds) a search can constrain or minimize."""
    table = load_table(table_path, device)

    def latency_ms(arch_or_graph) -> float:
        return predict_latency_ms(arch_or_graph, table)
    return latency_ms


# ------------------------------------------------------------------------------ building
def probe_architectures(space, rng: np.random.Generator) -> list[CellPair]:
    """Architectures whose compiled networks show every op position and the range of cell
    widths: a chain (each block reads the previous one; the narrowest output, one block), a fan
    (every block reads h_i and concatenates: the widest output, with h_{i-1} unused), a mixed
    cell (ops reading concatenated blocks), and ``NUM_RANDOM_PROBES`` random samples."""
    op = space.ops[-1]
    concat = "concat" if "concat" in space.combines else space.combines[0]
    add = "add" if "add" in space.combines else space.combines[0]
    b = space.num_blocks
    chain = [Block((0, 1), (op, op), add)] + [Block((k + 1, k + 1), (op, op), add)
                                              for k in range(1, b)]
    fan = [Block((0, 0), (op, op), concat) for _ in range(b)]
    mixed = [Block((0, 1), (op, op), concat)] + [Block((k + 1, k % 2), (op, op),
                                                       concat if k % 2 else add)
                                                 for k in range(1, b)]
    archs = [NasNetArch(tuple(c), tuple(c)) for c in (chain, fan, mixed)]
    archs += [space.sample(rng) for _ in range(NUM_RANDOM_PROBES)]
    return [space.to_graph(a, name=f"probe_{i}") for i, a in enumerate(archs)]


def table_parts(space, setting: str, batch: int = 1, seed: int = 0) -> list[Part]:
    """The distinct parts a table for ``space`` at ``setting`` times: every op of the space at
    every op position of the probes, and the probes' other parts (deduplicated by key)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, Part] = {}
    positions: dict[tuple, Part] = {}
    for pair in probe_architectures(space, rng):
        _, config = resolve(pair, setting)
        for part in network_parts(pair, config, batch):
            if part.kind == "op":
                label, ins, out = part.key.split("|")
                stride = int(label.split(":")[2][1:])
                positions[(stride, ins, out)] = part
            else:
                parts.setdefault(part.key, part)
    for (stride, ins, out) in sorted(positions):
        in_shape = (batch, *(int(v) for v in ins.split("x")))
        out_shape = (batch, *(int(v) for v in out.split("x")))
        for op in space.ops:
            p = _part("op", f"{op}:s{stride}", [in_shape], out_shape,
                      _op_maker(op, in_shape[1], out_shape[1], stride, {}, in_shape))
            parts.setdefault(p.key, p)
    return list(parts.values())


def time_part(part: Part, device: torch.device, batch: int, warmup: int = BUILD_WARMUP,
              repeats: int = BUILD_REPEATS, clock: str = "wall") -> float:
    """Median ms of one part on ``device`` (the same clock as measure_latency's)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    return summarize(time_calls(part.make(device, batch), warmup, repeats, sync, clock))[0]


def build_table(space_name: str, setting: str, device: str = "cpu", threads: int | None = 1,
                backend: str = "torch", batch: int = 1, warmup: int = BUILD_WARMUP,
                repeats: int = BUILD_REPEATS, seed: int = 0, clock: str = "wall",
                progress: Callable[[int, int], None] | None = None) -> LatencyTable:
    """Time every part of ``table_parts`` on ``device`` and return the table.

    Only the torch backend: onnxruntime optimizes the whole graph (folds BN into convs, fuses
    activations), so the latency of a network there is not the sum of its ops timed apart.
    ``progress(done, total)`` is called after each part."""
    if backend not in TABLE_BACKENDS:
        raise LatencyError(f"latency tables are timed with the {', '.join(TABLE_BACKENDS)} "
                           f"backend only, not {backend!r} (onnxruntime fuses ops across the "
                           f"graph, so per-op sums do not predict it)")
    if not isinstance(batch, int) or batch < 1:
        raise LatencyError(f"batch must be a positive integer, got {batch!r}")
    try:
        space = get_space(space_name)
    except KeyError as e:
        raise LatencyError(e.args[0]) from None
    if not isinstance(space, NasNetSpace):  # the parts are NASNet blocks in the TF macro
        raise LatencyError(f"latency tables cover NASNet block-choice spaces only, not "
                           f"{space_name!r}")
    dev = check_device(device)
    check_clock(clock, dev, threads)
    start = time.perf_counter()
    parts = table_parts(space, setting, batch, seed)
    entries = {}
    with torch_threads(threads):
        for i, part in enumerate(parts):
            entries[part.key] = round(time_part(part, dev, batch, warmup, repeats, clock), 5)
            if progress:
                progress(i + 1, len(parts))
        used = threads or torch.get_num_threads()
    torch_version, ort_version = current_versions()
    _, config = resolve(probe_architectures(space, np.random.default_rng(seed))[0], setting)
    return LatencyTable(str(dev), device_name(dev), torch_version, ort_version, used, backend,
                        batch, space_name, setting, config.input_size, entries, clock,
                        build_seconds=time.perf_counter() - start)


CALIBRATIONS = ("per_part", "scale")  # see calibrate


def calibrate(table: LatencyTable, pairs: Sequence[CellPair], measured_ms: Sequence[float],
              model: str = "per_part") -> LatencyTable:
    """The table with its correction fitted on calibration cells (use cells disjoint from
    those you evaluate on), as the median over them of:

    * ``per_part``: (measured - summed) / number of parts, added per part (``per_part_ms``):
      the dispatch and plumbing between parts that timing each part alone leaves out;
    * ``scale``: measured / summed, a factor on the sum (``scale``): costs that grow with the
      work, such as caches that are cold in a whole network and warm for a part timed alone.
    """
    if model not in CALIBRATIONS:
        raise ValueError(f"unknown calibration {model!r} (expected one of "
                         f"{', '.join(CALIBRATIONS)})")
    if not pairs or len(pairs) != len(measured_ms):
        raise ValueError("calibration needs one measured latency per cell, at least one cell")
    residuals = []
    for pair, ms in zip(pairs, measured_ms):
        priced = predict_parts(pair, table)
        summed = sum(p for _, p in priced)
        residuals.append((ms - summed) / len(priced) if model == "per_part" else ms / summed)
    fitted = float(np.median(residuals))
    correction = {"per_part_ms": fitted, "scale": 1.0} if model == "per_part" else \
        {"per_part_ms": 0.0, "scale": fitted}
    return replace(table, **correction,
                   calibration={"model": model, "cells": len(residuals),
                                "per_cell": [round(r, 6) for r in residuals]})
