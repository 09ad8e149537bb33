"""``nasforge export``: write an architecture as JSON, a drawing, standalone PyTorch, ONNX or
TorchScript.

WHAT is a zoo name, a cell-pair/chain JSON file, a NAS-Bench-201 cell string (with
``--setting nb201``, the default for it, and ``--dataset``), a DARTS genotype (``Genotype(...)``,
setting ``darts`` by default), or ``best_cell`` with
``--run RUN_DIR`` (the best finished trial of a search run by its primary objective;
``--trial ID`` picks one trial, ``--top K`` the K best, ``--pareto`` every member of a Pareto
search's front).
What was written goes to stderr; the output paths, one per line, to stdout.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from nasforge.trials import Status
from nasforge.cli import UsageError
from nasforge.cli.options import add_dataset_option
from nasforge.dsl import Cell
from nasforge.export import EXPORTERS, ExportError, default_name, export_source, get_exporter
from nasforge.search.objectives import Goal, ObjectiveError, metric_value
from nasforge.search.run_folder import is_run, ranked_trials, read_trials, run_goal, trial_score
from nasforge.search_spaces import record_graph
from nasforge.search_spaces.nas_bench_201 import Nb201Cell, is_cell_record, read_cell_record
from nasforge.zoo import setting_names

log = logging.getLogger(__name__)

BEST = "best_cell"


def add_arguments(p):
    formats = ", ".join(f"{name} ({e.suffix})" for name, e in EXPORTERS.items())
    p.add_argument("what", nargs="?", metavar="WHAT",
                   help=f"zoo name, cell-pair JSON file, NAS-Bench-201 cell string, DARTS "
                        f"genotype, or {BEST} (with --run)")
    p.add_argument("--format", "-f", metavar="FMT",
                   help=f"one of: {formats} (default: from -o's suffix)")
    p.add_argument("--output", "-o", metavar="PATH",
                   help=f"output file (with --top: output folder); default "
                        f"RUN_DIR/export/{BEST}.EXT for runs, else NAME.EXT here")
    p.add_argument("--run", dest="run_dir", metavar="RUN_DIR",  # args.run: the command handler
                   help=f"search run folder (config.json, trials.jsonl) for {BEST}")
    p.add_argument("--trial", type=int, metavar="ID",
                   help="export this trial of the run instead of the best (trial_ID.EXT)")
    p.add_argument("--top", type=int, metavar="K",
                   help=f"export the K best finished trials ({BEST}_top1.EXT, ...)")
    p.add_argument("--pareto", action="store_true",
                   help="export every member of the run's Pareto front "
                        "(pareto_1_trial_ID.EXT, ...; several objectives only)")
    p.add_argument("--setting", choices=setting_names(),
                   help="network setting (default: the run's config 'setting', else the "
                        "model's first; cifar for cell files, nb201 for NAS-Bench-201 cells)")
    add_dataset_option(p, "for a NAS-Bench-201 cell, the network's classes and input size")
    p.add_argument("--input-size", type=int, metavar="PX",
                   help="input pixels of the traced formats (py, onnx, torchscript; default: "
                        "the setting's)")
    p.set_defaults(run=run)


# ------------------------------------------------------------------ run folders
def _load_trials(run_dir: Path) -> list[dict]:
    if not run_dir.is_dir():
        raise UsageError(f"--run {run_dir}: no such folder")
    if not is_run(run_dir):
        raise UsageError(f"{run_dir} is not a run folder (needs config.json and trials.jsonl)")
    return read_trials(run_dir)


def _run_setting(run_dir: Path) -> str | None:
    """The run config's top-level ``setting`` when it names a known setting."""
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s/config.json is not readable JSON: its settings are ignored", run_dir)
        return None
    setting = config.get("setting") if isinstance(config, dict) else None
    return setting if isinstance(setting, str) and setting in setting_names() else None


def _trial_arch(record: dict, run_dir: Path):
    """The architecture of a trial: a NAS-Bench-201 cell (its record's data set the default
    of ``--dataset``) or the cell pair or chain it stores."""
    if not isinstance(record.get("arch"), dict):
        raise UsageError(f"trial {record['trial']} of {run_dir} has no architecture ('arch')")
    if is_cell_record(record["arch"]):
        cell, dataset, _ = read_cell_record(record["arch"])
        return cell, dataset
    arch = record_graph(record["arch"])
    if isinstance(arch, Cell):
        raise UsageError(f"trial {record['trial']} of {run_dir} holds a single cell, not a "
                         f"cell pair")
    return arch.validate(), None


def _run_goal(run_dir: Path):
    """The run's objectives and constraints (config.json; val_acc when unreadable)."""
    try:
        return run_goal(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, ObjectiveError):
        log.warning("%s/config.json names no readable objectives: val_acc is ranked", run_dir)
        return Goal()


def _describe_trial(record: dict, goal=None) -> str:
    goal = goal or Goal()
    values = [(o.name, metric_value(record, o.name)) for o in goal.objectives] \
        if trial_score(record, goal.primary) is not None else []
    return (f"trial {record['trial']} ({record.get('status', '?')}"
            + "".join(f", {k} {v:.4f}" if abs(v) < 1e3 else f", {k} {v:.4g}"
                      for k, v in values if v is not None) + ")")


def _run_jobs(args, suffix: str) -> list[tuple[tuple, str, Path]]:
    """((architecture, its data set or None), description, output path) for each trial to
    export from --run."""
    run_dir = Path(args.run_dir)
    records = _load_trials(run_dir)
    goal = _run_goal(run_dir)
    out_dir = run_dir / "export"
    if args.pareto:
        if not goal.multi:
            raise UsageError(f"--pareto: {run_dir} searched one objective ({goal.primary}); "
                             f"its best is {BEST}")
        front = goal.front(records)
        if not front:
            raise UsageError(f"{run_dir} has no feasible finished trial, so no Pareto front")
        folder = Path(args.output) if args.output else out_dir
        return [(_trial_arch(r, run_dir), f"Pareto {i}/{len(front)}: "
                 f"{_describe_trial(r, goal)}", folder / f"pareto_{i}_trial_{r['trial']}{suffix}")
                for i, r in enumerate(front, 1)]
    if args.trial is not None:
        record = next((r for r in records if r["trial"] == args.trial), None)
        if record is None:
            ids = sorted(r["trial"] for r in records)
            known = f"{ids[0]}..{ids[-1]}" if ids else "none"
            raise UsageError(f"{run_dir} has no trial {args.trial} (trial ids: {known})")
        path = Path(args.output) if args.output else out_dir / f"trial_{args.trial}{suffix}"
        return [(_trial_arch(record, run_dir), _describe_trial(record, goal), path)]
    ranked = ranked_trials(records, goal.primary)
    if not ranked:
        raise UsageError(f"{run_dir} has no finished trial (status '{Status.OK}', within its "
                         f"constraints, with {goal.primary.name}; {len(records)} trial "
                         f"record(s))")
    if args.top is None:
        path = Path(args.output) if args.output else out_dir / f"{BEST}{suffix}"
        return [(_trial_arch(ranked[0], run_dir),
                 f"{BEST}: {_describe_trial(ranked[0], goal)}", path)]
    if args.top > len(ranked):
        print(f"note: {run_dir} has only {len(ranked)} finished trial(s); exporting "
              f"{len(ranked)}, not {args.top}", file=sys.stderr)
    folder = Path(args.output) if args.output else out_dir
    return [(_trial_arch(r, run_dir), f"top {i}: {_describe_trial(r, goal)}",
             folder / f"{BEST}_top{i}{suffix}") for i, r in enumerate(ranked[:args.top], 1)]


# ------------------------------------------------------------------ command

def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:.1f} KiB" \
        if n >= 2 ** 10 else f"{n} bytes"


def _check_args(args) -> str:
    """The format; UsageError for every bad combination of arguments."""
    fmt = args.format
    if fmt is None and args.output and args.top is None and not args.pareto:
        fmt = next((n for n, e in EXPORTERS.items() if args.output.endswith(e.suffix)), None)
    if fmt is None:
        raise UsageError(f"export: give --format ({', '.join(EXPORTERS)})")
    if fmt not in EXPORTERS:
        raise UsageError(f"export: unknown format {fmt!r} (known: {', '.join(EXPORTERS)})")
    if args.input_size is not None and args.input_size < 1:
        raise UsageError(f"--input-size must be at least 1, got {args.input_size}")
    if args.top is not None and args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    what = args.what or (BEST if args.run_dir else None)
    if what is None:
        raise UsageError(f"export: give WHAT (a zoo name, a cell-pair JSON file, or {BEST} "
                         f"with --run RUN_DIR)")
    if what == BEST:
        if not args.run_dir:
            raise UsageError(f"{BEST} needs --run RUN_DIR (a search run folder)")
        chosen = [o for o, v in (("--trial", args.trial is not None),
                                 ("--top", args.top is not None), ("--pareto", args.pareto)) if v]
        if len(chosen) > 1:
            raise UsageError(f"{' and '.join(chosen)} exclude each other")
    else:
        given = [o for o, v in (("--run", args.run_dir), ("--trial", args.trial),
                                ("--top", args.top), ("--pareto", args.pareto or None))
                 if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to {BEST}, not to {what!r}")
    args.what = what
    return fmt


def run(args) -> int:
    fmt = _check_args(args)
    exporter = get_exporter(fmt)
    if args.what == BEST:
        jobs = _run_jobs(args, exporter.suffix)
        setting = args.setting or _run_setting(Path(args.run_dir))
    else:
        stem = default_name(args.what)
        path = Path(args.output) if args.output else Path(stem + exporter.suffix)
        if os.path.isfile(args.what) and path.exists() and path.samefile(args.what):
            raise UsageError(f"export would overwrite its input {args.what}; give -o PATH")
        jobs = [((args.what, None), args.what, path)]
        setting = args.setting
    written = []
    for (arch, dataset), what, path in jobs:
        # a cell of a nas-bench-201 run: its own setting (nb201), not the run's children's
        job_setting = args.setting if isinstance(arch, Nb201Cell) else setting
        source = export_source(arch, job_setting, args.input_size,
                               name=path.stem if args.what == BEST else None,
                               dataset=args.dataset or dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            exporter(source, path)
        except ExportError as e:
            print(f"nasforge: error: cannot export {what} as {fmt}: {e}", file=sys.stderr)
            return 1
        print(f"wrote {what} as {fmt}"
              + (f" (setting {job_setting})" if job_setting and fmt in ("py", "onnx", "torchscript")
                 else "") + f": {path} ({_size(path)})", file=sys.stderr)
        written.append(path)
    for path in written:
        print(path)
    return 0
