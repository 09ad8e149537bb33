"""``nasforge proxies``: zero-cost proxy scores of one architecture or of a file of many.

ARCH_OR_FILE is a zoo name, a cell JSON file, a NAS-Bench-201 cell string, or a text file
(any other existing file) with one architecture a line: a NAS-Bench-201 string or a cell JSON
path (a file whose name does not end in ``.json``; relative paths are read from its folder; blank lines and ``#`` comments skipped).
Each network is built with weights from ``--seed`` and scored on one batch of ``--batch-size``
training images of ``--data`` drawn by ``--seed`` (``nasforge.proxies``). Progress goes to
stderr; ``--json`` prints one JSON object a line, in the file's order (a degenerate score,
``-inf`` in the library, is ``null``).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from nasforge.api import reference_kind, resolve
from nasforge.cli import UsageError
from nasforge.cli.options import add_dataset_option
from nasforge.data import load_data
from nasforge.proxies import BATCH_SIZE, PROXIES, build_network, check_names, data_batch, score
from nasforge.zoo import setting_names


def add_arguments(p):
    p.add_argument("arch", metavar="ARCH_OR_FILE",
                   help="zoo name, cell JSON file, NAS-Bench-201 cell string, or a text file "
                        "of NAS-Bench-201 strings / cell JSON paths, one a line")
    p.add_argument("--setting", choices=setting_names(),
                   help="network setting (default: the architecture's first; nb201 for "
                        "NAS-Bench-201 cells)")
    add_dataset_option(p, "for a NAS-Bench-201 cell, the network's classes and input size")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="the data the batch is drawn from (CIFAR-10 copy, ImageFolder tree, "
                        "'synthetic')")
    p.add_argument("--proxies", default=",".join(PROXIES),
                   help=f"comma-separated proxies (default: all: {', '.join(PROXIES)})")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                   help=f"images in the batch ({BATCH_SIZE}, NASLib's)")
    p.add_argument("--seed", type=int, default=0, help="draws the weights and the batch (0)")
    p.add_argument("--cache-dir", default=None, help="nasforge data cache folder")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(run=run)


def architectures(ref: str) -> list[str]:
    """The references ``ref`` names: itself, or the lines of a text file of them."""
    path = Path(ref)
    if reference_kind(ref) != "file" or not path.is_file() or path.suffix == ".json":
        return [ref]
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if reference_kind(line) != "nb201":
            line_path = Path(line)
            if not line_path.is_absolute():
                line_path = path.parent / line_path
            if not line_path.is_file():
                raise UsageError(f"proxies: {path}, line {n}: {line!r} is neither a "
                                 f"NAS-Bench-201 cell string nor a cell JSON file")
            line = str(line_path)
        out.append(line)
    if not out:
        raise UsageError(f"proxies: {path} lists no architecture")
    return out


def _shown(value: float):
    return value if math.isfinite(value) else None


def run(args) -> int:
    try:
        names = check_names([n.strip() for n in args.proxies.split(",") if n.strip()])
    except ValueError as e:
        raise UsageError(f"proxies: {e}") from None
    refs = architectures(args.arch)
    # every line is resolved before the data loads: a bad one fails fast, with its number
    resolved = []
    for ref in refs:
        nb201 = reference_kind(ref) == "nb201"
        resolved.append(resolve(ref, args.setting, args.dataset if nb201 else None))
    splits = load_data(args.data, split="search", seed=args.seed, cache_dir=args.cache_dir)
    batch = data_batch(splits, args.batch_size, args.seed)
    t0 = time.perf_counter()
    for k, (ref, (arch, config)) in enumerate(zip(refs, resolved), start=1):
        model = build_network(arch, config, args.seed)
        scores = {name: score(name, model, batch, args.seed) for name in names}
        if args.json:
            print(json.dumps({"arch": ref, **{n: _shown(v) for n, v in scores.items()}}),
                  flush=True)
        else:
            print(f"{ref}\n" + "\n".join(f"  {n:<10} {v:.6g}" for n, v in scores.items()),
                  flush=True)
        if not args.quiet and len(refs) > 1:
            print(f"proxies: {k}/{len(refs)} [{time.perf_counter() - t0:.0f} s]",
                  file=sys.stderr, flush=True)
    return 0
