"""``nasforge train``: train a zoo model, a cell-pair JSON or a search run's best cell with a
named recipe (``nasforge train --run runs/X --recipe final-cifar``: the run's ``best_cell.json``).

Writes the training run folder ``<runs-dir>/<name>/`` (``nasforge.train.run_folder``:
``config.json`` with the resolved recipe, model, data and version, ``metrics.jsonl``,
TensorBoard event files, ``checkpoint.pt``); running again with the same ``--name`` resumes
from the checkpoint. Progress goes to stderr; ``--json`` prints one final JSON object on
stdout.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

import nasforge
from nasforge import build_model
from nasforge.api import nb201_reference, reference_kind, reference_name, resolve
from nasforge.cli import UsageError
from nasforge.cli.options import add_dataset_option
from nasforge.data import load_data
from nasforge.dsl import CellChain
from nasforge.search.run_folder import BEST, RunFolder, is_run
from nasforge.timefmt import format_duration
from nasforge.train import get_recipe, train
from nasforge.train.recipes import RECIPES
from nasforge.train.run_folder import TrainingRunFolder
from nasforge.trials import Status


def add_arguments(p):
    p.add_argument("model", nargs="?",
                   help="zoo name, cell-pair JSON file or NAS-Bench-201 cell string (default: "
                        "the recipe's model; best_cell or nothing with --run)")
    p.add_argument("--run", dest="run_dir", metavar="RUN_DIR",  # args.run: the command handler
                   help="train the best cell of this search run folder (its best_cell.json)")
    p.add_argument("--recipe", default="smoke", choices=sorted(RECIPES),
                   help="training recipe (default: smoke)")
    p.add_argument("--data", help="data: a path (CIFAR-10 folder/.tar.gz, ImageFolder tree), "
                                  "'cifar10' or 'synthetic' (default: the recipe's)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (>= 1)")
    p.add_argument("--setting", help="model setting (default: the recipe's for its own model, "
                                     "else the model's first)")
    add_dataset_option(p, "for a NAS-Bench-201 cell, the network built (its classes must "
                          "be the data's)")
    p.add_argument("--runs-dir", default="runs", help="parent folder of run folders")
    p.add_argument("--name", help="run folder name (default: <model>-<recipe>-<time>); an "
                                  "existing run with a checkpoint is resumed")
    p.add_argument("--val-size", type=int,
                   help="images held out for validation on a search split (default: the "
                        "recipe's, 5000)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the model's "
                                                       "initialisation and training")
    p.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--cache-dir", help="data cache folder (default: $NASFORGE_CACHE or "
                                       "~/.cache/nasforge)")
    p.add_argument("--threads", type=int, help="torch intra-op CPU threads (default: torch's; "
                                               "1 avoids stalls on busy shared cores)")
    p.add_argument("--json", action="store_true", help="print one final JSON object")
    p.set_defaults(run=run)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _build(model_name: str, setting, recipe, data, arch, dataset=None):
    """The model for ``data`` (its classes, channels and image size) with the overrides of
    the recipe that apply to it (``Recipe.build_overrides``). A NAS-Bench-201 cell's network
    is fixed, as a chain file's: no recipe option applies, and ``dataset`` fixes its classes
    (checked against the data's)."""
    kind = reference_kind(model_name)
    if nb201_reference(model_name) is not None:  # a cell string or a cell-record file
        overrides = {"input_size": data.image_size[0], "in_channels": data.channels}
        return build_model(model_name, setting, num_classes=data.num_classes, dataset=dataset,
                           **overrides), overrides
    if isinstance(arch, CellChain):  # chains: no drop-path/aux options
        is_file = kind == "file"
        overrides = {"input_size": data.image_size[0],
                     **recipe.build_overrides(model_name,
                                              network="chain_file" if is_file else "chain")}
        num_classes = None if is_file else data.num_classes  # a chain file fixes its head
    else:
        overrides = recipe.build_overrides(model_name)
        overrides.update(input_size=data.image_size[0], in_channels=data.channels)
        num_classes = data.num_classes
    return build_model(model_name, setting, num_classes=num_classes, **overrides), overrides


def _best_cell_word() -> str:
    """``best_cell``: the MODEL word of ``nasforge train best_cell --run R`` (as ``nasforge
    export`` spells it), the run folder's best-cell file name without its suffix."""
    return Path(BEST).stem


def _best_cell_of_run(args) -> str:
    """The path of ``--run``'s best cell; UsageError when the folder is not a search run,
    has no best cell yet, or a MODEL other than best_cell is given too."""
    if args.model not in (None, _best_cell_word()):
        raise UsageError(f"give either MODEL ({args.model}) or --run {args.run_dir}, not both")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"--run {run_dir}: no such folder")
    if not is_run(run_dir):
        raise UsageError(f"{run_dir} is not a search run folder (needs config.json and "
                         f"trials.jsonl)")
    best = RunFolder(run_dir).best_path
    if not best.is_file():
        raise UsageError(f"{run_dir} has no {best.name} yet (no trial has finished)")
    return str(best)


def run(args) -> int:
    recipe = get_recipe(args.recipe)
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    epochs = recipe.schedule.epochs if args.epochs is None else args.epochs
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.run_dir is not None:
        model_name = _best_cell_of_run(args)
    elif args.model == _best_cell_word() and not os.path.exists(args.model):
        raise UsageError(f"{args.model} needs --run RUN_DIR (a search run folder)")
    else:
        model_name = args.model or recipe.defaults.model
    setting = args.setting if args.setting is not None else (
        recipe.defaults.setting if model_name == recipe.defaults.model else None)
    source = args.data or recipe.defaults.data
    if args.model and not os.path.exists(args.model) and args.model.endswith(".json"):
        raise UsageError(f"model file {args.model} does not exist")

    # bad model names (and a dataset given to a model that is no NAS-Bench-201 cell) fail
    # before the data loads
    arch, _ = resolve(model_name, setting, args.dataset)

    stem = reference_name(model_name)
    if args.run_dir is not None:
        stem = f"{Path(args.run_dir).resolve().name}-{stem}"
    name = args.name or f"{stem}-{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(args.runs_dir) / name
    folder = TrainingRunFolder(run_dir)
    done_epochs = folder.resumed_epochs()  # a refused checkpoint stops here, before the data
    if done_epochs:
        _progress(f"resuming {run_dir} after epoch {done_epochs}")

    val_size = recipe.inputs.val_size if args.val_size is None else args.val_size
    data = load_data(source, split=recipe.inputs.split, val_size=val_size, seed=args.seed,
                     cache_dir=args.cache_dir)
    torch.manual_seed(args.seed)
    model, overrides = _build(model_name, setting, recipe, data, arch, args.dataset)

    config = {"nasforge_version": nasforge.__version__, "recipe": recipe.to_dict(),
              "epochs": epochs, "seed": args.seed,
              "model": {"name": model_name, "setting": setting, "overrides": overrides,
                        **({"dataset": args.dataset} if args.dataset else {}),
                        "params": sum(p.numel() for p in model.parameters()),
                        **({"search_run": str(args.run_dir)} if args.run_dir else {})},
              "data": {"source": data.source, "format": data.format, "split": data.split,
                       "train": len(data.train),
                       "val": None if data.val is None else len(data.val),
                       "test": None if data.test is None else len(data.test),
                       "classes": list(data.classes), "image_size": list(data.image_size)},
              "torch_version": torch.__version__}
    folder.write_config(config)
    if folder.open().board is None:
        _progress("warning: tensorboard is not installed: no event files are written")
    t_start = time.perf_counter()
    first_epoch = []

    def report(epoch: int, m: dict) -> None:
        folder.log_epoch(epoch, m)
        if not first_epoch:
            first_epoch.append(epoch - 1)
        done = epoch - first_epoch[0]
        elapsed = time.perf_counter() - t_start
        eta = elapsed / max(done, 1) * (epochs - epoch)
        parts = [f"epoch {epoch}/{epochs}", f"loss {m['train_loss']:.4f}",
                 f"acc {m['train_acc']:.4f}"]
        for k in ("val_acc", "test_acc"):
            if k in m:
                parts.append(f"{k} {m[k]:.4f}")
        parts += [f"elapsed {format_duration(elapsed)}", f"ETA {format_duration(eta)}"]
        _progress("  ".join(parts))

    _progress(f"training {model_name} ({config['model']['params']:,} params) with recipe "
              f"{recipe.name} on {data!r} for {epochs} epochs -> {run_dir}")
    with folder:
        result = train(model, data, recipe, report=report, checkpoint_dir=run_dir,
                       device=args.device, seed=args.seed, epochs=epochs)
    summary = {k: v for k, v in result.items() if k != "history"}
    summary.setdefault("test_acc", None)
    summary.update(run_dir=str(run_dir), recipe=recipe.name, model=model_name)
    if args.json:
        print(json.dumps(summary))
    else:
        _progress(f"{result['status']}: " + ", ".join(
            f"{k} {summary[k]:.4f}" for k in ("val_acc", "test_acc")
            if summary.get(k) is not None) + f" in {format_duration(result['wall_s'])}")
    return 0 if result["status"] == Status.OK else 1
