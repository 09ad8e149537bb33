"""Measured inference latency of a module: median and spread over timed repeats after warm-up.

``measure_latency`` is called by ``nasforge latency`` and by the latency-table builder
(``nasforge.latency.table``), which times each op of a search space with the same clock.
Backends are a registry (``BACKENDS``): ``torch`` runs the module eagerly under
``torch.inference_mode`` in eval mode; ``onnxruntime`` exports it with ``torch.onnx.export``
(the torch.export-based exporter, ``dynamo=True``, which needs onnxscript) to a temporary file
and times an ``onnxruntime.InferenceSession`` on it.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from nasforge.errors import NasforgeError

DEFAULT_WARMUP = 5  # calls before timing: allocator, oneDNN primitive caches, lazy init
DEFAULT_REPEATS = 30  # timed calls; the median is reported
# clock name -> seconds. "wall" is latency proper; "cpu" is the process's CPU time, which a
# single-threaded (threads=1) CPU measurement spends whatever else runs on the machine: a
# steadier stand-in for latency on shared, contended cores (it leaves out waiting for memory
# the OS accounts as idle, so it can read a little low)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


class LatencyError(NasforgeError, ValueError):
    """Bad latency request (a device that is not there, an unknown backend, a bad batch or
    thread count): one line; the CLI exits with code 2."""


@dataclass(frozen=True)
class LatencyResult:
    """One measurement. Times in milliseconds per forward call of the whole batch."""

    median_ms: float
    p10_ms: float  # 10th percentile of the timed calls
    p90_ms: float  # 90th percentile
    iqr_ms: float  # interquartile range (p75 - p25)
    repeats: int
    warmup: int
    batch: int
    threads: int  # intra-op threads used (torch.get_num_threads / ORT intra_op_num_threads)
    device: str  # "cpu" | "cuda" | "cuda:1" ...
    device_name: str  # the hardware, see device_name()
    backend: str
    clock: str = "wall"  # see CLOCKS

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(times_ms: Sequence[float]) -> tuple[float, float, float, float]:
    """(median, p10, p90, IQR) of timed calls, in their unit."""
    if len(times_ms) == 1:
        return times_ms[0], times_ms[0], times_ms[0], 0.0
    deciles = statistics.quantiles(times_ms, n=10, method="inclusive")
    quartiles = statistics.quantiles(times_ms, n=4, method="inclusive")
    return statistics.median(times_ms), deciles[0], deciles[-1], quartiles[2] - quartiles[0]


def time_calls(call: Callable[[], object], warmup: int, repeats: int,
               sync: Callable[[], None] = lambda: None, clock: str = "wall") -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``call`` after ``warmup`` untimed ones;
    ``sync`` waits for queued device work (CUDA) so each call is timed to its end."""
    now = CLOCKS[clock]
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(repeats):
        start = now()
        call()
        sync()
        times.append((now() - start) * 1e3)
    return times


def check_clock(clock: str, device: torch.device, threads: int | None) -> None:
    """LatencyError unless ``clock`` is known and meaningful for the device and threads."""
    if clock not in CLOCKS:
        raise LatencyError(f"unknown clock {clock!r} (expected one of {', '.join(CLOCKS)})")
    if clock == "cpu" and (device.type != "cpu" or threads != 1):
        raise LatencyError("the cpu clock measures latency only on the cpu device with "
                           "threads=1 (CPU time of several threads adds up)")


def check_device(device: str) -> torch.device:
    """The torch device for ``device``, or LatencyError when this machine lacks it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise LatencyError(f"unknown device {device!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LatencyError(f"device {device} is not available on this machine "
                               f"(torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LatencyError(f"device {device} is not available on this machine (it has "
                               f"{torch.cuda.device_count()} CUDA device(s))")
    elif dev.type != "cpu":
        raise LatencyError(f"device {device!r} is not supported (expected cpu or cuda)")
    return dev


def device_name(device: str | torch.device) -> str:
    """The hardware behind ``device``: the GPU's name, or the CPU model from /proc/cpuinfo
    (the platform's processor string elsewhere). A latency table is keyed by it."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine()


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op thread count set to ``threads`` inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync_for(dev: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)


def _torch_runner(model: nn.Module, example: torch.Tensor, dev: torch.device,
                  threads: int | None):
    """(call, sync) that runs ``model`` eagerly."""
    model = model.to(dev).eval()
    example = example.to(dev)

    def call():
        with torch.inference_mode():
            return model(example)

    return call, _sync_for(dev)


def export_onnx(model: nn.Module, example: torch.Tensor, path: str) -> None:
    """``torch.onnx.export`` of ``model`` (eval mode) at the example's fixed shape.

    Fixed shapes (no dynamic batch) let onnxruntime fold shapes as a deployed model would."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise LatencyError("the onnxruntime backend needs onnxscript for torch.onnx.export: "
                           "pip install 'nasforge[latency]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, verbose=False,
                                    input_names=["input"], output_names=["output"],
                                    external_data=False)
    program.save(path, external_data=False)


def _onnxruntime_runner(model: nn.Module, example: torch.Tensor, dev: torch.device,
                        threads: int | None):
    """(call, sync) that runs ``model`` exported to ONNX in onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise LatencyError("the onnxruntime backend needs onnxruntime: "
                           "pip install 'nasforge[latency]'") from None
    provider = "CUDAExecutionProvider" if dev.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        raise LatencyError(f"onnxruntime {ort.__version__} here has no {provider} (it has "
                           f"{', '.join(ort.get_available_providers())})")
    handle, path = tempfile.mkstemp(suffix=".onnx")
    os.close(handle)
    try:
        export_onnx(model.cpu(), example.cpu(), path)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        provider_options = [{"device_id": dev.index or 0}] if dev.type == "cuda" else [{}]
        session = ort.InferenceSession(path, options, providers=[provider],
                                       provider_options=provider_options)
    finally:
        os.remove(path)
    feed = {session.get_inputs()[0].name: example.cpu().numpy()}
    return (lambda: session.run(None, feed)), (lambda: None)


# backend name -> runner(model, example, device, threads) -> (call, sync)
BACKENDS: dict[str, Callable] = {
    "torch": _torch_runner,
    "onnxruntime": _onnxruntime_runner,
}


def run_backend(model: nn.Module, example: torch.Tensor, device: str = "cpu",
                backend: str = "torch", threads: int | None = None):
    """The model's outputs for ``example`` through ``backend`` (numpy for onnxruntime, a
    tensor for torch); used to check that a backend computes what torch computes."""
    runner = _backend(backend)
    with torch_threads(threads):
        call, _ = runner(model, example, check_device(device), threads)
        return call()


def _backend(backend: str):
    try:
        return BACKENDS[backend]
    except KeyError:
        raise LatencyError(f"unknown backend {backend!r} (expected one of "
                           f"{', '.join(BACKENDS)})") from None


def measure_latency(model: nn.Module, input_shape: Sequence[int], device: str = "cpu",
                    batch: int = 1, threads: int | None = None, backend: str = "torch",
                    warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                    clock: str = "wall") -> LatencyResult:
    """Latency of one forward call of ``model`` (eval mode, ``torch.inference_mode``) on a
    random batch of shape ``(batch, *input_shape)``: median over ``repeats`` timed calls after
    ``warmup`` untimed ones, with the 10th/90th percentiles and the interquartile range.

    ``threads``: intra-op threads for the measurement (torch's, or onnxruntime's session
    option); None keeps the process setting. ``clock``: "wall" (latency) or "cpu" (see
    CLOCKS). Raises LatencyError for a device this machine lacks, an unknown backend or
    clock, or a batch/threads/repeats below 1.
    """
    runner = _backend(backend)
    for name, value in (("batch", batch), ("repeats", repeats)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LatencyError(f"{name} must be a positive integer, got {value!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise LatencyError(f"threads must be a positive integer, got {threads!r}")
    if warmup < 0:
        raise LatencyError(f"warmup must be >= 0, got {warmup!r}")
    dev = check_device(device)
    check_clock(clock, dev, threads)
    example = torch.randn(batch, *input_shape)
    with torch_threads(threads):
        call, sync = runner(model, example, dev, threads)
        times = time_calls(call, warmup, repeats, sync, clock)
        used_threads = threads or torch.get_num_threads()
    median, p10, p90, iqr = summarize(times)
    return LatencyResult(median, p10, p90, iqr, repeats, warmup, batch, used_threads,
                         str(dev), device_name(dev), backend, clock)
