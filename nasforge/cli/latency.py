"""``nasforge latency``: measured inference latency of a model, or a per-op latency table.

``nasforge latency MODEL --setting S --device cpu --batch 1 [--threads T] [--backend B]``
times MODEL (a zoo name or cell-pair JSON file, as ``nasforge info`` takes) and prints the
median with its spread; ``--table T.json`` adds the table's prediction for a cell network.
``nasforge latency --build-table --space nasnet --setting mobile --out table.json`` times every
op of a search space at the macro's shapes on this device (see ``nasforge.latency.table``).
"""
from __future__ import annotations

import json
import sys

from nasforge.api import compile_architecture, resolve
from nasforge.cli import UsageError
from nasforge.dsl import CellPair
from nasforge.latency import (LatencyError, LatencyTableError, build_table, load_table,
                              measure_latency, predict_latency_ms)
from nasforge.latency.measure import (BACKENDS, CLOCKS, DEFAULT_REPEATS, DEFAULT_WARMUP,
                                      check_device)
from nasforge.latency.table import BUILD_REPEATS, BUILD_WARMUP
from nasforge.timefmt import format_duration
from nasforge.zoo import CHAIN_SETTINGS, SETTINGS


def add_arguments(p):
    p.add_argument("model", nargs="?", help="zoo name or cell-pair JSON file")
    p.add_argument("--setting", choices=sorted({*SETTINGS, *CHAIN_SETTINGS}),
                   help="default: the model's first setting (cifar for cell files)")
    p.add_argument("--input-size", type=int, help="pixels (default: the setting's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--batch", type=int, default=1, help="images per forward call (default: 1)")
    p.add_argument("--threads", type=int,
                   help="intra-op threads (default: torch's; 1 is steadier on shared cores)")
    p.add_argument("--backend", default="torch", choices=sorted(BACKENDS),
                   help="torch (eager) or onnxruntime (exported with torch.onnx.export)")
    p.add_argument("--warmup", type=int, help=f"untimed calls first (default: "
                   f"{DEFAULT_WARMUP}; {BUILD_WARMUP} per part with --build-table)")
    p.add_argument("--repeats", type=int, help=f"timed calls (default: {DEFAULT_REPEATS}; "
                   f"{BUILD_REPEATS} per part with --build-table)")
    p.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                   help="wall (latency) or cpu (process CPU time: steadier on shared cores; "
                        "cpu device, --threads 1 only)")
    p.add_argument("--table", help="a latency table (JSON): also print its prediction")
    p.add_argument("--build-table", action="store_true",
                   help="time every op of --space at --setting's shapes and write --out")
    p.add_argument("--space", help="search space of the table (e.g. nasnet, nasnet-ext)")
    p.add_argument("--out", help="the table file --build-table writes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def _check_numbers(args) -> None:
    for name in ("batch", "repeats", "threads", "input_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"latency: --{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup is not None and args.warmup < 0:
        raise UsageError(f"latency: --warmup must be >= 0, got {args.warmup}")


def run(args) -> int:
    _check_numbers(args)
    try:
        check_device(args.device)  # before building anything
        if args.build_table:
            return _build_table(args)
        if not args.model:
            raise UsageError("latency: give a MODEL (zoo name or cell-pair JSON) or "
                             "--build-table")
        return _measure(args)
    except (LatencyError, LatencyTableError) as e:
        raise UsageError(f"latency: {e}") from None


def _measure(args) -> int:
    arch, config = resolve(args.model, args.setting, input_size=args.input_size)
    table = None
    if args.table:
        if not isinstance(arch, CellPair):
            raise UsageError(f"latency: --table predicts cell networks; {args.model} is "
                             f"not one")
        table = load_table(args.table, device=args.device, threads=args.threads)
        if table.clock != args.clock:
            raise UsageError(f"latency: {args.table} was timed with the {table.clock} clock; "
                             f"pass --clock {table.clock}")
        if (args.batch, config.input_size) != (table.batch, table.input_size):
            raise UsageError(f"latency: {args.table} predicts batch {table.batch} at "
                             f"{table.input_size} px (the {table.setting} setting), not batch "
                             f"{args.batch} at {config.input_size} px")
    model = compile_architecture(arch, config)
    size = config.input_size
    result = measure_latency(model, (config.in_channels, size, size), device=args.device,
                             batch=args.batch, threads=args.threads, backend=args.backend,
                             warmup=DEFAULT_WARMUP if args.warmup is None else args.warmup,
                             repeats=args.repeats or DEFAULT_REPEATS, clock=args.clock)
    info = {"model": args.model, "setting": args.setting, "input_size": size,
            **result.as_dict()}
    if table is not None:
        info["predicted_ms"] = predict_latency_ms(arch, table)
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{args.model} at {size}x{size}, batch {args.batch}, {result.device} "
          f"({result.device_name}), {args.backend}, {result.threads} thread(s), "
          f"{result.clock} clock\n"
          f"  median {result.median_ms:.2f} ms  (p10 {result.p10_ms:.2f}, p90 "
          f"{result.p90_ms:.2f}, IQR {result.iqr_ms:.2f}; {result.repeats} timed calls "
          f"after {result.warmup} warm-up)")
    if table is not None:
        error = (info["predicted_ms"] - result.median_ms) / result.median_ms
        print(f"  table {info['predicted_ms']:.2f} ms ({error:+.1%} vs measured)")
    return 0


def _build_table(args) -> int:
    if not args.space or not args.out:
        raise UsageError("latency: --build-table needs --space and --out")
    if args.setting not in SETTINGS:
        raise UsageError(f"latency: --build-table needs a cell-network --setting (one of "
                         f"{', '.join(SETTINGS)})")

    def progress(done, total):
        if done % 50 == 0 or done == total:
            print(f"timed {done}/{total} parts", file=sys.stderr, flush=True)

    table = build_table(args.space, args.setting, device=args.device,
                        threads=args.threads if args.threads is not None else 1,
                        backend=args.backend, batch=args.batch, clock=args.clock,
                        warmup=BUILD_WARMUP if args.warmup is None else args.warmup,
                        repeats=args.repeats or BUILD_REPEATS, progress=progress)
    table.save(args.out)
    summary = {"out": args.out, "entries": len(table.entries),
               "build_seconds": round(table.build_seconds, 1), **table.to_dict()["key"]}
    print(json.dumps(summary) if args.json else
          f"wrote {args.out}: {len(table.entries)} entries for {args.space} at {args.setting}"
          f" on {table.device_name} ({table.threads} thread(s), torch {table.torch_version})"
          f" in {format_duration(table.build_seconds)}")
    return 0
