"""``nasforge transfer``: a found cell's ImageNet network next to hand-designed baselines.

Builds the ImageNet network of CELL_OR_RUN (a cell-pair JSON, a zoo cell network or a search run
folder's best cell) at ``--setting mobile|large`` and every ``--baselines`` network, trains each
data-parallel on Ray Train (``--workers`` CPU processes, or one per GPU with ``--gpus``) and
writes ``<runs-dir>/<name>/comparison.md`` and ``.csv`` (also printed and in TensorBoard).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from nasforge.cli import UsageError, error_line
from nasforge.cluster import ResourceError
from nasforge.faults import faults_from_env
from nasforge.transfer import TransferConfig, TransferFailed, run_transfer


def add_arguments(p):
    p.add_argument("cell", nargs="?", metavar="CELL_OR_RUN",
                   help="cell-pair JSON, zoo cell network (nasnet_a, ...) or search run folder "
                        "(its best cell); not needed with --resume")
    p.add_argument("--setting", default="mobile", help="mobile (224 px) or large (331 px)")
    p.add_argument("--N", type=int, help="normal cells per stack (default: the setting's)")
    p.add_argument("--penultimate", "-P", type=int,
                   help="penultimate filters P of N@P (default: the setting's)")
    p.add_argument("--baselines", default="resnet18,mobilenet_v2",
                   help="comma-separated zoo networks to compare with ('' for none)")
    p.add_argument("--data", help="ImageFolder root with train/<class>/ and val/<class>/")
    p.add_argument("--val-split", default="val",
                   help="evaluation folder under --data (default val; e.g. test)")
    p.add_argument("--workers", type=int, default=2,
                   help="data-parallel CPU workers (default 2; ignored with --gpus)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs: one data-parallel worker each")
    p.add_argument("--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT "
                                     "(default: a local one)")
    p.add_argument("--epochs", type=int, help="short schedule: epochs for every model")
    p.add_argument("--image-size", type=int, help="training/eval crop in pixels (default: "
                                                  "224 mobile, 331 large)")
    p.add_argument("--batch-size", type=int, help="global batch (default: the recipes' 256)")
    p.add_argument("--train-subset", type=int,
                   help="short runs: train on a fixed random N of the training images")
    p.add_argument("--val-subset", type=int,
                   help="short runs: evaluate on a fixed random N of the evaluation images")
    p.add_argument("--loader-workers", type=int,
                   help="DataLoader processes per training worker")
    p.add_argument("--max-failures", type=int, default=1,
                   help="Ray Train restarts of a crashed model from its checkpoint (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="run folder name (default: transfer-<time>)")
    p.add_argument("--runs-dir", default="runs", help="parent folder of run folders")
    p.add_argument("--resume", action="store_true",
                   help="continue runs/<name>: finished models are skipped, an unfinished one "
                        "continues from its last epoch checkpoint")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    p.set_defaults(run=run)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args) -> int:
    if args.resume:
        if not args.name:
            raise UsageError("transfer --resume needs --name NAME (the run to continue)")
        config = None
    else:
        if not args.cell:
            raise UsageError("transfer: give CELL_OR_RUN (a cell-pair JSON, a zoo cell network "
                             "or a search run folder)")
        if not args.data:
            raise UsageError("transfer: --data DIR is required (an ImageFolder tree with "
                             "train/ and val/)")
        if args.setting not in ("mobile", "large"):
            raise UsageError(f"transfer: unknown setting {args.setting!r} (expected mobile or "
                             f"large)")
        for flag in ("N", "penultimate", "epochs", "image_size", "batch_size", "train_subset",
                     "val_subset"):
            v = getattr(args, flag)
            if v is not None and v < 1:
                raise UsageError(f"transfer: --{flag.replace('_', '-')} must be >= 1, got {v}")
        if args.max_failures < 0 or (args.loader_workers or 0) < 0:
            raise UsageError("transfer: --max-failures and --loader-workers must be >= 0")
        config = TransferConfig(
            cell=args.cell, data=args.data, setting=args.setting, N=args.N,
            penultimate=args.penultimate,
            baselines=tuple(b.strip() for b in args.baselines.split(",") if b.strip()),
            val_split=args.val_split, workers=args.workers, gpus=args.gpus,
            address=args.address, epochs=args.epochs, image_size=args.image_size,
            batch_size=args.batch_size, loader_workers=args.loader_workers,
            train_subset=args.train_subset, val_subset=args.val_subset, seed=args.seed,
            max_failures=args.max_failures)
    name = args.name or f"transfer-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.runs_dir) / name
    try:
        faults = faults_from_env()
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        out = run_transfer(config, run_dir, resume=args.resume, on_message=_progress,
                           faults=faults)
    except ResourceError as e:  # the library names the resource, the CLI the option
        option = "--gpus" if e.resource == "GPU" else "--workers"
        raise UsageError(e.message(f"{option} {e.asked:g}")) from None
    except TransferFailed as e:  # a failure, not bad input (TransferError): exit code 1
        print(error_line(e), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"run_dir": out["run_dir"], "rows": out["rows"]}))
    else:
        print(out["table"], end="")
        _progress(f"comparison: {run_dir / 'comparison.md'}, {run_dir / 'comparison.csv'}; "
                  f"tensorboard --logdir {run_dir}")
    return 0
