"""``run_transfer``: train the found cell's ImageNet network and the baselines, one after the
other, each data-parallel on Ray Train, and write the comparison.

Run folder ``runs/<name>/``::

    transfer.json        the resolved plan: config, model specs, recipes, params/mult-adds
    cell.json            the transferred cell pair (unless it is a zoo name)
    <model>/             per model, a training run folder (nasforge.train.run_folder:
                         checkpoint.pt after every epoch, metrics.jsonl, TensorBoard events;
                         written by rank 0), and result.json when finished
    ray/                 Ray Train's own run state (one Ray Train run trains all models)
    comparison.md/.csv   the table; events.out.tfevents.* with it as text and the scalars

``resume=True`` reads ``transfer.json``, skips models with a ``result.json`` and continues an
unfinished one from its ``checkpoint.pt``.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import nasforge
from nasforge.cluster import ray_session
from nasforge.data.stream import check_imagefolder
from nasforge.errors import NasforgeError
from nasforge.rules import reject_unknown_keys
from nasforge.safe_load import read_json
from nasforge.timefmt import format_duration
from nasforge.train import get_recipe
from nasforge.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from nasforge.train.data_parallel import torch_trainer
from nasforge.train.recipes import Recipe
from nasforge.train.run_folder import METRICS_NAME
from nasforge.transfer.models import (ModelSpec, TransferError, baseline_specs, cell_spec,
                                      resolve_cell, spec_info)
from nasforge.transfer.result import RESULT
from nasforge.transfer.worker import train_worker
from nasforge.trials import Status

log = logging.getLogger(__name__)

FORMAT = "nasforge.transfer/1"
PLAN = "transfer.json"
COLUMNS = ("model", "setting", "image_size", "params", "mult_adds", "top1", "top5",
           "train_images_per_s", "wall_s", "epochs", "status")


class TransferFailed(NasforgeError, RuntimeError):
    """A model's training failed (after Ray Train's retries); the run can be resumed."""


@dataclass
class TransferConfig:
    cell: str = ""  # cell-pair JSON, zoo cell network or search run folder
    data: str = ""  # ImageFolder root with train/ and <val_split>/
    setting: str = "mobile"
    N: int | None = None
    penultimate: int | None = None
    baselines: tuple[str, ...] = ("resnet18", "mobilenet_v2")
    val_split: str = "val"
    workers: int = 2  # data-parallel CPU workers (ignored with gpus > 0: one per GPU)
    gpus: int = 0
    address: str | None = None
    epochs: int | None = None
    image_size: int | None = None
    batch_size: int | None = None  # global batch (all workers together)
    loader_workers: int | None = None  # DataLoader processes per training worker
    train_subset: int | None = None  # short runs: a fixed random n of the training images
    val_subset: int | None = None  # short runs: a fixed random n of the evaluation images
    seed: int = 0
    max_failures: int = 1  # Ray Train restarts of a model's workers after a crash

    @classmethod
    def from_dict(cls, d: dict) -> "TransferConfig":
        reject_unknown_keys(cls, d, "transfer config", TransferError)
        d = dict(d)
        if "baselines" in d:
            d["baselines"] = tuple(d["baselines"])
        return cls(**d)


# ------------------------------------------------------------------------------- planning
def _recipe_for(spec: ModelSpec, config: TransferConfig):
    recipe = get_recipe(spec.recipe)
    changes = {}
    if config.epochs is not None:
        changes["epochs"] = int(config.epochs)
        if config.epochs < recipe.schedule.epochs:  # short schedule: warm-up <= 10% of it
            changes["warmup_epochs"] = min(recipe.schedule.warmup_epochs, 0.1 * config.epochs)
    if config.image_size is not None:
        changes["image_size"] = int(config.image_size)
    if config.batch_size is not None:
        changes["batch_size"] = int(config.batch_size)
        changes["eval_batch_size"] = int(config.batch_size)
    if config.train_subset is not None:
        changes["train_subset"] = int(config.train_subset)
    if config.val_subset is not None:
        changes["eval_subset"] = int(config.val_subset)
    try:
        return recipe.replace(**changes)
    except ValueError as e:
        raise TransferError(str(e)) from None


def plan(config: TransferConfig, run_dir: Path) -> dict:
    """Validate everything (data, cell, baselines, sizes) and return the plan; writes
    ``cell.json`` for a cell that is not in the zoo. Raises DataError/TransferError/
    ArchitectureError before any training starts."""
    if config.epochs is not None and config.epochs < 1:
        raise TransferError(f"epochs must be at least 1, got {config.epochs}",
                            options=("epochs",))
    if config.image_size is not None and config.image_size < 8:
        raise TransferError(f"image_size must be at least 8, got {config.image_size}",
                            options=("image_size",))
    if config.gpus < 0 or config.workers < 1:
        raise TransferError("workers must be >= 1 and gpus >= 0", options=("workers", "gpus"))
    if not config.data:
        raise TransferError("data is required (an ImageFolder tree: train/, val/)",
                            options=("data",))
    baselines = baseline_specs(config.baselines)  # unknown names fail first
    pair, origin = resolve_cell(config.cell)
    if config.setting not in ("mobile", "large"):
        raise TransferError(f"unknown setting {config.setting!r} (expected mobile or large)")
    classes = check_imagefolder(config.data, config.val_split)
    cell = cell_spec(config.cell, pair, config.setting, N=config.N,
                     penultimate=config.penultimate, cell_file=run_dir / "cell.json")
    if cell.label in {b.label for b in baselines}:
        cell = replace(cell, label=f"{cell.label}-cell")
    models = []
    for spec in [cell, *baselines]:
        recipe = _recipe_for(spec, config)
        try:
            info = spec_info(spec, len(classes), recipe.augmentation.image_size)
        except (ValueError, RuntimeError) as e:
            raise TransferError(f"{spec.label} cannot be built at "
                                f"{recipe.augmentation.image_size} px: "
                                f"{str(e).splitlines()[0]}") from None
        models.append({"spec": spec.to_dict(), "recipe": recipe.to_dict(), "info": info})

    return {"format": FORMAT, "nasforge_version": nasforge.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": asdict(config),
            "cell_origin": origin, "data": {"root": str(Path(config.data).resolve()),
                                            "val_split": config.val_split,
                                            "classes": list(classes)},
            "models": models}


# ------------------------------------------------------------------------------- resources
def resources_asked(config: TransferConfig) -> dict:
    """The ``ray_session`` keywords of a transfer: one GPU per worker, or one CPU per worker."""
    return {"gpus": config.gpus} if config.gpus > 0 else {"cpus": config.workers}


def plan_workers(config: TransferConfig, cluster: dict) -> dict:
    """``{"num_workers", "use_gpu", "cpus_per_worker", "loader_workers"}`` for a cluster with
    ``cluster`` resources that hold ``resources_asked(config)`` (``ray_session`` checks that)."""
    have_cpus = int(cluster.get("CPU", 0))
    if config.gpus > 0:
        workers, use_gpu = config.gpus, True
    else:
        workers, use_gpu = config.workers, False
    cpus = max(1, have_cpus // workers)
    loader = config.loader_workers
    if loader is None:
        loader = min(4, cpus) if use_gpu else min(2, max(0, cpus - 1))
    return {"num_workers": workers, "use_gpu": use_gpu, "cpus_per_worker": cpus,
            "loader_workers": int(loader)}


# ------------------------------------------------------------------------------- training
def _fit(plan_d: dict, resources: dict, run_dir: Path, config: TransferConfig,
         say: Callable[[str], None], faults=()) -> None:
    """One Ray Train run whose workers train every unfinished model in turn; progress is
    read from the models' ``metrics.jsonl`` while it runs. ``faults``: chaos testing
    (``nasforge.faults``)."""
    models = [dict(entry, model_dir=str((run_dir / entry["spec"]["label"]).resolve()))
              for entry in plan_d["models"]]
    loop_config = {
        "models": models, "num_classes": len(plan_d["data"]["classes"]),
        "data": plan_d["data"]["root"], "val_split": plan_d["data"]["val_split"],
        "loader_workers": resources["loader_workers"], "use_gpu": resources["use_gpu"],
        "threads": resources["cpus_per_worker"], "seed": config.seed,
        "faults": list(faults),
    }
    trainer = torch_trainer(train_worker, loop_config, workers=resources["num_workers"],
                            use_gpu=resources["use_gpu"],
                            cpus_per_worker=resources["cpus_per_worker"],
                            storage=str(run_dir.resolve()), max_failures=config.max_failures)
    outcome: dict = {}

    def target():
        try:
            trainer.fit()
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = e

    thread = threading.Thread(target=target, name="nasforge-transfer-fit", daemon=True)
    thread.start()
    seen = {m["spec"]["label"]: _count_lines(Path(m["model_dir"]) / METRICS_NAME)
            for m in models}
    finished = {m["spec"]["label"] for m in models if (Path(m["model_dir"]) / RESULT).is_file()}
    epochs = {m["spec"]["label"]: Recipe.from_dict(m["recipe"]).schedule.epochs for m in models}
    while True:
        thread.join(timeout=2.0)
        for m in models:
            label, mdir = m["spec"]["label"], Path(m["model_dir"])
            lines = _read_lines(mdir / METRICS_NAME)
            for line in lines[seen[label]:]:
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue
                parts = [f"{label}: epoch {e['epoch']}/{epochs[label]}",
                         f"loss {e.get('train_loss', float('nan')):.4f}"]
                if "val_acc" in e:
                    parts.append(f"top-1 {_fmt_pct(e['val_acc'])} top-5 "
                                 f"{_fmt_pct(e.get('val_top5'))}")
                if "train_images_per_s" in e:
                    parts.append(f"{e['train_images_per_s']:.1f} images/s")
                say("  ".join(parts))
            seen[label] = max(seen[label], len(lines))
            if label not in finished and (mdir / RESULT).is_file():
                finished.add(label)
                row = read_json(mdir / RESULT, "model result")
                say(f"{label}: done: top-1 {_fmt_pct(row['top1'])}, top-5 "
                    f"{_fmt_pct(row['top5'])}, {row['train_images_per_s'] or 0:.1f} images/s, "
                    f"{_fmt_s(row['wall_s'])}")
        if not thread.is_alive():
            break
    if "error" in outcome:
        e = outcome["error"]
        if isinstance(e, KeyboardInterrupt):
            raise e
        failed = next((m["spec"]["label"] for m in models
                       if not (Path(m["model_dir"]) / RESULT).is_file()), "?")
        msg = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        cause = next((ln for ln in reversed(msg) if "Error" in ln or "error" in ln),
                     msg[-1] if msg else type(e).__name__)
        raise TransferFailed(f"training {failed} failed: {cause[:300]} (the run can be "
                             f"resumed)", options=("resume",)) from e


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError:
        return []


def _count_lines(path: Path) -> int:
    return len(_read_lines(path))


# ------------------------------------------------------------------------------- the table
def _fmt_count(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,}"


def _fmt_pct(v) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.2f}%"


def _status_note(result: dict) -> str:
    """`` diverged`` after a result's epochs when its training did not end ok."""
    status = result.get("status", Status.OK)
    return "" if status == Status.OK else f" {status}"


def _fmt_s(s) -> str:
    return format_duration(s or 0)


def table_markdown(rows: list[dict]) -> str:
    head = ("| model | setting | px | params | mult-adds | top-1 | top-5 | train images/s | "
            "wall time | epochs |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        setting = r["setting"] + (f" {r['N@P']}" if r.get("N@P") else "")
        ips = r.get("train_images_per_s")
        lines.append(f"| {r['model']} | {setting} | {r['image_size']} | "
                     f"{_fmt_count(r['params'])} | {_fmt_count(r['mult_adds'])} | "
                     f"{_fmt_pct(r['top1'])} | {_fmt_pct(r['top5'])} | "
                     f"{'-' if ips is None else f'{ips:.1f}'} | {_fmt_s(r['wall_s'])} | "
                     f"{r['epochs']}{_status_note(r)} |")
    return "\n".join(lines) + "\n"


def table_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def write_comparison(run_dir: Path, rows: list[dict], plan_d: dict) -> str:
    md = table_markdown(rows)
    cfg = plan_d["config"]
    header = (f"# nasforge transfer: {plan_d.get('cell_origin', cfg['cell'])}\n\n"
              f"Data: {plan_d['data']['root']} (train/ and {plan_d['data']['val_split']}/, "
              f"{len(plan_d['data']['classes'])} classes); top-1/top-5 on "
              f"{plan_d['data']['val_split']}/; params and mult-adds of the inference network "
              f"(no auxiliary head) at the image size, as `nasforge info` prints them.\n\n")
    (run_dir / "comparison.md").write_text(header + md)
    (run_dir / "comparison.csv").write_text(table_csv(rows))
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return md
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        writer.add_text("comparison", md)
        for r in rows:
            for key in ("top1", "top5", "train_images_per_s"):
                if r.get(key) is not None:
                    writer.add_scalar(f"comparison/{key}/{r['model']}", r[key], r["epochs"])
    return md


# ------------------------------------------------------------------------------- the run
def run_transfer(config: TransferConfig | None, run_dir, *, resume: bool = False,
                 on_message: Callable[[str], None] | None = None, faults=()) -> dict:
    """Run (``resume=True``: continue) a transfer in ``run_dir``; return
    ``{"run_dir", "rows", "table"}``. ``faults``: chaos testing, ``(kind, model label)`` pairs
    (``nasforge.faults``; not saved in the plan, so a resumed run has only those it is given)."""
    say = on_message or (lambda msg: log.info("%s", msg))
    run_dir = Path(run_dir)
    plan_path = run_dir / PLAN
    if resume:
        if not plan_path.is_file():
            raise TransferError(f"cannot resume {run_dir}: it holds no transfer ({PLAN} "
                                f"missing)", options=("resume",))
        plan_d = read_json(plan_path, "transfer plan")
        if not isinstance(plan_d, dict) or plan_d.get("format") != FORMAT:
            raise TransferError(f"cannot resume: {plan_path} is not a nasforge transfer plan",
                                options=("resume",))
        config = TransferConfig.from_dict(plan_d["config"])

        check_imagefolder(plan_d["data"]["root"], plan_d["data"]["val_split"])
    else:
        if config is None:
            raise TransferError("run_transfer needs a TransferConfig")
        if plan_path.exists():
            raise TransferError(f"{run_dir} already holds a transfer: resume it, or choose "
                                f"another name", options=("resume", "name"))
        plan_d = plan(config, run_dir)  # every check before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".{PLAN}.tmp"
        tmp.write_text(json.dumps(plan_d, indent=2) + "\n")
        os.replace(tmp, plan_path)

    resumed_epochs = {}  # checkpoints are read (and refused if crafted) before Ray starts
    for entry in plan_d["models"]:
        model_dir = run_dir / entry["spec"]["label"]
        if not (model_dir / RESULT).is_file() and (model_dir / CHECKPOINT_NAME).is_file():
            resumed_epochs[entry["spec"]["label"]] = \
                load_checkpoint(model_dir / CHECKPOINT_NAME)["epoch"]
    with ray_session(config.address, **resources_asked(config)) as cluster:
        resources = plan_workers(config, cluster.resources)
        kind = "GPU" if resources["use_gpu"] else "CPU"
        say(f"{len(plan_d['models'])} models, each on {resources['num_workers']} data-parallel "
            f"{kind} worker(s) ({resources['cpus_per_worker']} CPU(s), "
            f"{resources['loader_workers']} loader process(es) each) -> {run_dir}")
        left = []
        for entry in plan_d["models"]:
            label = entry["spec"]["label"]
            model_dir = run_dir / label
            info, recipe = entry["info"], Recipe.from_dict(entry["recipe"])
            if (model_dir / RESULT).is_file():
                say(f"{label}: finished before, skipped")
                continue
            left.append(label)
            if label in resumed_epochs:
                say(f"{label}: resuming after epoch {resumed_epochs[label]}")
            say(f"{label}: {info['params']:,} params, {info['mult_adds']:,} mult-adds at "
                f"{recipe.augmentation.image_size} px; recipe {recipe.name}, "
                f"{recipe.schedule.epochs} epoch(s), global batch {recipe.schedule.batch_size}")
        if left:
            _fit(plan_d, resources, run_dir, config, say, faults)
        rows = []
        for entry in plan_d["models"]:
            path = run_dir / entry["spec"]["label"] / RESULT
            if not path.is_file():
                raise TransferFailed(f"training {entry['spec']['label']} left no result "
                                     f"(the run can be resumed)", options=("resume",))
            rows.append(read_json(path, "model result"))
        table = write_comparison(run_dir, rows, plan_d)
    return {"run_dir": str(run_dir), "rows": rows, "table": table}
