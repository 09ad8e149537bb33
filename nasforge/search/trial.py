"""One search trial = one child training, run by Ray Tune in a worker process.

``run_trial`` is the Ray Tune function trainable. The driver hands it the data set and the
``TrialSettings`` once through ``tune.with_parameters`` (Ray's object store: shipped to each
node once, not once per trial) and each trial's architecture in its Tune config (see
``adapter.trial_config``). Per epoch it reports the trainer's metrics and a checkpoint, so ASHA
can stop weak children and a retried trial (its worker died) resumes from its last epoch; the
last epoch is reported together with the trial's summary (``final_status``, ``params``,
``mult_adds``, ``train_s``), which is how the adapter tells a finished child from one the
scheduler stopped. A child that raises, diverges or runs out of memory is reported as
``final_status`` failed, not raised: a deterministic failure would only fail again on retry;
Ray's retries are for dead workers. Its summary says why (``failure``, see ``failures.py``) and,
when it raised, carries the traceback for the driver to save in the run folder.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass

from nasforge.api import build_model
from nasforge.dsl import CellChain
from nasforge.flops import count_mult_adds, count_params
from nasforge.faults import FaultPlan
from nasforge.search.failures import DIVERGED, ERROR, failure_kind
from nasforge.train import CHECKPOINT_NAME, load_checkpoint, train
from nasforge.trials import Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a search shares (shipped once per node through the object store)."""

    space: object  # the SearchSpace: decodes each trial's decision tokens
    recipe: object  # nasforge.train.Recipe
    epochs: int  # epochs per child
    setting: str  # network setting of the child (cifar)
    overrides: tuple[tuple[str, object], ...]  # NetworkConfig overrides (N, filters, ...)
    seed: int  # search seed; each child's seed derives from it and the trial id
    threads: int  # torch intra-op threads of a CPU child
    faults: tuple[tuple[str, int], ...] = ()  # chaos testing (nasforge/faults.py)
    objective: str = "val_acc"  # the primary objective: in every report (Ray's metric)
    table: object = None  # table backends: the nasforge.tables.Table each trial looks up
    table_columns: tuple[str, ...] = ()  # its (validation, test) accuracy columns, in %


def child_seed(seed: int, trial_id: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(trial_id)]).generate_state(1)[0])


def _device():
    import ray
    import torch

    if torch.cuda.is_available() and ray.get_gpu_ids():
        return torch.device("cuda")  # Ray set CUDA_VISIBLE_DEVICES to this trial's GPU(s)
    return torch.device("cpu")


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def run_trial(config: dict, data=None, settings: TrialSettings | None = None) -> None:
    """The Ray Tune trainable; ``config["nasforge"]`` holds the trial id and the decision
    tokens of its architecture (Ray copies the config into every result: kept small)."""
    import torch
    from ray import tune

    spec = config["nasforge"]
    trial_id = int(spec["trial"])
    static = dict(spec.get("static") or {})
    device = _device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, settings.threads))
    seed = child_seed(settings.seed, trial_id)
    work = tempfile.mkdtemp(prefix=f"nasforge-trial-{trial_id}-")
    summary = {"final_status": Status.FAILED.value, "error": None, "failure": None,
               "traceback": None, "params": None, "mult_adds": None, "train_s": 0.0, "restored_epoch": 0}
    held: dict = {}
    try:
        restored = tune.get_checkpoint()
        if restored is not None:
            with restored.as_directory() as d:
                shutil.copy(os.path.join(d, CHECKPOINT_NAME), os.path.join(work, CHECKPOINT_NAME))
            summary["restored_epoch"] = load_checkpoint(
                os.path.join(work, CHECKPOINT_NAME))["epoch"]
        faults = FaultPlan(settings.faults, trial_id, restored is not None, f"trial {trial_id}")

        torch.manual_seed(seed)
        graph = settings.space.to_graph(settings.space.decode(spec["tokens"]))
        if isinstance(graph, CellChain):  # a whole network (nas-bench-201): it fixes its
            #   classes and options; the runner checked them against the data
            model = build_model(graph, input_size=data.image_size[0])
        else:
            model = build_model(graph, settings.setting, num_classes=data.num_classes,
                                input_size=data.image_size[0], in_channels=data.channels,
                                **dict(settings.overrides))
        summary["params"] = count_params(model)
        summary["mult_adds"] = count_mult_adds(model, data.image_size[0], data.channels)[0]
        faults.before_training(model)

        def report(epoch: int, metrics: dict) -> None:
            metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            metrics.update(static)  # measured before training (objectives.py)
            metrics.setdefault("val_acc", float("nan"))
            metrics.setdefault(settings.objective, float("nan"))  # Ray wants it in every report
            if epoch >= settings.epochs:
                held.update(metrics)  # sent with the summary, after train() returns
                return
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(work))
            faults.after_epoch(epoch)

        t0 = time.perf_counter()
        try:
            result = train(model, data, settings.recipe, report=report, checkpoint_dir=work,
                           device=device, seed=seed, epochs=settings.epochs)
            if result["status"] == Status.OK:
                summary["final_status"] = Status.OK.value
            else:
                summary["error"] = f"training {result['status']}"
                summary["failure"] = DIVERGED if result["status"] == Status.DIVERGED else ERROR
            held.setdefault("epoch", result["epochs"])
            for key in ("val_acc", "val_loss", "train_acc", "train_loss"):
                if key in result and key not in held:
                    held[key] = result[key]
        finally:
            summary["train_s"] = time.perf_counter() - t0
    except Exception as e:  # the child failed; the search goes on (see the module docstring)
        summary["error"] = f"{type(e).__name__}: {e}"[:500]
        summary["failure"] = failure_kind(e)
        summary["traceback"] = traceback.format_exc()[-20000:]  # the innermost frames
        log.warning("trial %d failed: %s", trial_id, summary["error"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    final = dict(held)
    final.update(static)
    final.update(summary)
    final["val_acc"] = _finite(final.get("val_acc")) if final["final_status"] == Status.OK \
        else float("nan")
    if final["val_acc"] is None:
        final.update(final_status=Status.FAILED.value, val_acc=float("nan"),
                     error=final["error"] or "no validation accuracy",
                     failure=final["failure"] or ERROR)
    tune.report(final)


def run_table_trial(config: dict, data=None, settings: TrialSettings | None = None) -> None:
    """The Ray Tune trainable of a table backend (``backends.py``): the trial's cell is looked
    up in ``settings.table`` instead of trained, and one report carries the table's figures
    (accuracies as fractions, at epoch ``settings.epochs``) with the trial's summary."""
    from ray import tune

    spec = config["nasforge"]
    static = dict(spec.get("static") or {})
    val_column, test_column = settings.table_columns
    t0 = time.perf_counter()
    final = {"final_status": Status.FAILED.value, "error": None, "failure": None,
             "traceback": None, "params": None, "mult_adds": None, "restored_epoch": 0,
             "val_acc": float("nan")}
    try:
        row = settings.table.lookup(settings.space.decode(spec["tokens"]))
        final.update(val_acc=row[val_column] / 100.0, test_acc=row[test_column] / 100.0,
                     epoch=settings.epochs, final_status=Status.OK.value)
    except Exception as e:  # a cell the table lacks (the runner checks coverage first)
        final.update(error=f"{type(e).__name__}: {e}"[:500], failure=failure_kind(e))
        log.warning("trial %s failed: %s", spec["trial"], final["error"])
    final.update(static)
    final.setdefault(settings.objective, float("nan"))
    final["train_s"] = time.perf_counter() - t0
    tune.report(final)
