"""``run_search``: a search = a Ray Tune experiment of child trainings driven by a searcher.

Who does what: Ray Tune schedules trials on the cluster's resources, retries trials whose
worker died (``FailureConfig``), checkpoints them and stops weak ones (ASHA);
``TuneSearcherAdapter`` turns proposals into trials and results into ``tell``; the trainable
(``trial.run_trial``) trains one child with nasforge's trainer; ``SearchRecorder`` keeps the
run folder, TensorBoard and the progress callback up to date.

Resume is driven by the run folder, not by ``Tuner.restore``: Ray saves its experiment state on
a timer, so after a driver SIGKILL it can lag behind trials that already finished and would
train them again; ``trials.jsonl`` and ``searcher.pt`` are written at every ask and every
finish (in the order ``run_folder`` documents), so ``--resume`` knows exactly which trials
finished, tells the searcher any it missed, re-runs only proposals that never finished, and
runs the rest of the budget as a new Ray experiment (``ray/part-<k>``) in the same folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nasforge
from nasforge.search.config import SearchConfig, SearchError
from nasforge.search.run_folder import SEARCHER_STATE, RunFolder, device_seconds

log = logging.getLogger(__name__)

FORMAT = "nasforge.search/1"


@dataclass(frozen=True)
class SearchProgress:
    """Handed to the progress callback after every finished trial."""

    budget: int  # trials the search runs to
    finished: int  # trials finished (ok + failed + pruned), earlier parts included
    failed: int
    pruned: int
    running: int  # trials handed to Ray and not finished
    best: float | None  # best validation accuracy so far
    best_trial: int | None
    elapsed_s: float  # wall time of this invocation
    eta_s: float | None  # estimated wall time to the budget
    device_s: float  # accumulated device seconds (trial wall x GPUs, x 1 on CPU)
    last: dict | None = None  # the record of the trial that just finished


class SearchRecorder:
    """The adapter's ``Recorder``: run folder, TensorBoard and progress (see adapter.py)."""

    def __init__(self, run: RunFolder, board, records: list[dict], budget: int,
                 concurrency: int, on_progress: Callable[[SearchProgress], None] | None):
        from nasforge.search.run_folder import best_trial

        self.run, self.board, self.budget = run, board, budget
        self.concurrency = max(1, concurrency)
        self.on_progress = on_progress
        self.counts = {"ok": 0, "failed": 0, "pruned": 0}
        self.device_s = 0.0
        for r in records:
            self.counts[r["status"]] = self.counts.get(r["status"], 0) + 1
            self.device_s += device_seconds(r)
        self.best = best_trial(records)
        self.running = 0
        self.t0 = time.time()
        self.walls: list[float] = []

    @property
    def n_finished(self) -> int:
        return sum(self.counts.values())

    def asked(self, searcher, proposal, ray_trial_id) -> None:
        self.running += 1
        self.run.save_searcher(searcher.state_dict())

    def epoch(self, proposal, metrics) -> None:
        if self.board is not None:
            self.board.epoch(proposal.id, metrics)

    def finished(self, record: dict) -> None:
        self.run.append_trial(record)
        self.running -= 1
        self.counts[record["status"]] += 1
        self.device_s += device_seconds(record)
        self.walls.append(record["wall_s"])
        acc = record["metrics"].get("val_acc") if record["status"] == "ok" else None
        self._best_changed = acc is not None and (
            self.best is None or acc > self.best["metrics"]["val_acc"])
        if self._best_changed:
            self.best = record
            self.run.write_best(_pair_json(record["arch"]))

    def told(self, searcher, record: dict) -> None:
        self.run.save_searcher(searcher.state_dict())
        progress = self.progress(record)
        if self.board is not None:
            self.board.finished(record, dataclasses.asdict(progress), searcher.stats(),
                                self._best_changed, self.best)
        if self.on_progress is not None:
            self.on_progress(progress)

    def progress(self, last: dict | None = None) -> SearchProgress:
        left = self.budget - self.n_finished
        eta = None
        if self.walls:
            mean = sum(self.walls) / len(self.walls)
            eta = math.ceil(left / self.concurrency) * mean if left > 0 else 0.0
        return SearchProgress(
            budget=self.budget, finished=self.n_finished, failed=self.counts["failed"],
            pruned=self.counts["pruned"], running=max(0, self.running),
            best=self.best["metrics"]["val_acc"] if self.best else None,
            best_trial=self.best["trial"] if self.best else None,
            elapsed_s=time.time() - self.t0, eta_s=eta, device_s=self.device_s, last=last)


def _pair_json(arch: dict) -> str:
    from nasforge.dsl import CellPair

    return CellPair.from_dict(arch).to_json() + "\n"


def _git_commit() -> str | None:
    root = Path(nasforge.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ----------------------------------------------------------------------- pieces of a search
def make_searcher(config: SearchConfig):
    """(space, searcher) by registry name; SearchError for unknown names or options."""
    from nasforge.controllers import SEARCHERS, get_searcher
    from nasforge.search_spaces import SPACES, get_space

    if config.space not in SPACES:
        raise SearchError(f"unknown search space {config.space!r} (known: {', '.join(SPACES)})")
    if config.searcher not in SEARCHERS:
        raise SearchError(f"unknown searcher {config.searcher!r} "
                          f"(known: {', '.join(SEARCHERS)})")
    space = get_space(config.space)
    try:
        searcher = get_searcher(config.searcher, space, seed=config.seed,
                                **config.searcher_options)
    except (TypeError, ValueError) as e:
        raise SearchError(f"searcher {config.searcher!r}: {e}") from None
    return space, searcher


def connect_ray(address: str | None):
    """``ray.init`` (a local cluster when ``address`` is None); SearchError when unreachable.
    Returns True when this call started Ray (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR,
                  log_to_driver=bool(os.environ.get("NASFORGE_DEBUG")))
    try:
        if address is None:
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise SearchError(f"cannot connect to the Ray cluster at {address!r}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect to HOST:PORT first: ``ray.init`` keeps retrying an unreachable address
    for minutes before it gives up."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise SearchError(f"--address {address!r} is not 'auto', 'HOST:PORT' or "
                          f"'ray://HOST:PORT'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise SearchError(f"cannot connect to the Ray cluster at {address!r}: "
                          f"{e.strerror or e}") from None


def plan_resources(config: SearchConfig, cluster: dict) -> tuple[dict, int, str]:
    """({"cpu", "gpu"} per trial, concurrent trials, a sentence for the console)."""
    have_gpus = float(cluster.get("GPU", 0))
    have_cpus = float(cluster.get("CPU", 0))
    gpus = have_gpus if config.gpus is None else float(config.gpus)
    if gpus > have_gpus + 1e-9:
        raise SearchError(f"--gpus {config.gpus:g} asked for, but the Ray cluster has "
                          f"{have_gpus:g} GPU(s)")
    if config.cpus_per_trial > have_cpus:
        raise SearchError(f"--cpus-per-trial {config.cpus_per_trial:g} is more than the "
                          f"cluster's {have_cpus:g} CPUs")
    if gpus > 0:
        if config.gpus_per_trial > gpus:
            raise SearchError(f"--gpus-per-trial {config.gpus_per_trial:g} is more than "
                              f"--gpus {gpus:g}")
        slots = int(math.floor(gpus / config.gpus_per_trial + 1e-9))
        cpu_slots = int(math.floor(have_cpus / config.cpus_per_trial + 1e-9))
        concurrency = max(1, min(slots, cpu_slots))
        per_trial = {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}
        note = (f"{gpus:g} GPU(s), {config.gpus_per_trial:g} per trial: up to {concurrency} "
                f"trials at once")
    else:
        concurrency = max(1, int(math.floor(have_cpus / config.cpus_per_trial + 1e-9)))
        per_trial = {"cpu": config.cpus_per_trial, "gpu": 0.0}
        note = (f"no GPUs {'asked for' if config.gpus == 0 else 'in the Ray cluster'}: "
                f"children train on CPU, {config.cpus_per_trial:g} core(s) each, up to "
                f"{concurrency} at once")
    return per_trial, concurrency, note


def _reconcile(searcher, records: list[dict]) -> list:
    """After a crash: tell the searcher the recorded results it never heard of; return the
    proposals it still has in flight without a record (they are trained again)."""
    from nasforge.search.adapter import result_from_record

    by_id = {int(r["trial"]): r for r in records}
    requeue = []
    for p in sorted(searcher.in_flight(), key=lambda p: p.id):
        rec = by_id.get(p.id)
        if rec is None:
            requeue.append(p)
            continue
        result = result_from_record(rec)
        searcher.tell(p, result)
        log.info("resume: told the searcher trial %d from trials.jsonl", p.id)
    return requeue


# ----------------------------------------------------------------------------- the search
def run_search(config: SearchConfig | None = None, run_dir=None, *, resume: bool = False,
               on_progress: Callable[[SearchProgress], None] | None = None,
               on_start: Callable[[str], None] | None = None) -> dict:
    """Run (or with ``resume=True`` continue) a search in ``run_dir``; return its summary.

    ``on_start`` receives one sentence about the resources used; ``on_progress`` a
    ``SearchProgress`` after every finished trial. Raises SearchError (or nasforge.data's
    DataError) for bad input before anything is written."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from nasforge.data import load_data
    from nasforge.search.adapter import TuneSearcherAdapter
    from nasforge.search.board import SearchBoard
    from nasforge.search.trial import TrialSettings, run_trial
    from nasforge.train import Recipe, get_recipe

    if resume:
        run = RunFolder.open(run_dir)
        saved = run.config()
        if saved.get("format") != FORMAT:
            raise SearchError(f"--resume {run_dir}: config.json is not a nasforge search config")
        config = SearchConfig.from_dict(saved["search"])
        records = run.trials()
    else:
        if config is None:
            raise SearchError("run_search needs a SearchConfig")
        run, records = RunFolder(run_dir), []
    space, searcher = make_searcher(config)
    # the saved state is read (and refused if crafted) before Ray starts or data loads
    state = run.load_searcher() if resume else None
    if state is not None:
        try:
            searcher.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as e:
            raise SearchError(f"--resume {run.path}: its {SEARCHER_STATE} cannot be "
                              f"restored: {e}") from None
    elif records:
        log.warning("%s has trials but no searcher state: the searcher starts afresh",
                    run.path)
    try:  # a resumed search trains with the recipe it saved
        recipe = Recipe.from_dict(saved["recipe"]) if resume else get_recipe(config.recipe)
    except KeyError as e:
        raise SearchError(str(e.args[0])) from None
    epochs = config.epochs or recipe.epochs
    val_size = recipe.val_size if config.val_size is None else config.val_size
    remaining = config.trials - len(records)

    started_ray = connect_ray(config.address)
    board = None
    try:
        import ray

        per_trial, concurrency, note = plan_resources(config, ray.cluster_resources())
        data = load_data(config.data or recipe.data, split="search", val_size=val_size,
                         seed=config.seed, cache_dir=config.cache_dir)
        if not resume:
            run.create({"format": FORMAT, "search": config.to_dict(),
                        "nasforge_version": nasforge.__version__, "git_commit": _git_commit(),
                        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "recipe": recipe.to_dict(), "epochs": epochs,
                        "setting": recipe.setting or "cifar",  # of the children (export)
                        "data": {"source": data.source, "format": data.format,
                                 "train": len(data.train), "val": len(data.val),
                                 "classes": list(data.classes),
                                 "image_size": list(data.image_size)},
                        "ray_version": ray.__version__})
        requeue = _reconcile(searcher, records)
        if on_start is not None:
            on_start(note)
        recorder = SearchRecorder(run, SearchBoard(run, config.searcher), records,
                                  config.trials, concurrency, on_progress)
        board = recorder.board
        if remaining <= 0:
            return _summary(run, recorder, config)
        run.save_searcher(searcher.state_dict())

        adapter = TuneSearcherAdapter(searcher, space, recorder, remaining, per_trial,
                                      requeue=requeue)
        settings = TrialSettings(space=space, recipe=recipe, epochs=epochs, setting=recipe.setting or "cifar",
                                 overrides=tuple(recipe.overrides.items()),
                                 seed=config.seed, threads=max(1, int(config.cpus_per_trial)),
                                 faults=config.faults)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, data=data, settings=settings), per_trial)
        scheduler = None
        if config.scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(time_attr="epoch", max_t=epochs,
                                      grace_period=max(1, epochs // 4), reduction_factor=3)
        storage = config.storage or str((run.path / "ray").resolve())
        part = 1 + sum(1 for p in Path(storage).glob("part-*")) if "://" not in storage else \
            int(time.time())
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=adapter, num_samples=remaining,
                                        max_concurrent_trials=concurrency, scheduler=scheduler,
                                        metric="val_acc", mode="max", reuse_actors=True,
                                        trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=f"part-{part}", storage_path=storage, verbose=0,
                failure_config=tune.FailureConfig(max_failures=config.max_retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[CSVLoggerCallback(), JsonLoggerCallback(),
                           _make_drop_checkpoints_callback()]))
        # Ray Tune prints its own tables on stdout whatever the verbosity; stdout belongs to
        # the CLI (--json), so they go to a log file in the run folder
        with open(run.path / "ray_console.log", "a", encoding="utf-8") as console, \
                contextlib.redirect_stdout(console), _no_ray_tensorboard():
            tuner.fit()
        return _summary(run, recorder, config)
    finally:
        if board is not None:
            board.close()
        if started_ray:
            import ray

            ray.shutdown()


def _trial_name(trial) -> str:
    """Ray's trial folder: nasforge's trial id (Ray's default name spells out the config)."""
    return f"trial_{int(trial.config['nasforge']['trial']):05d}"


def _make_drop_checkpoints_callback():
    from ray.tune import Callback

    class DropFinishedCheckpoints(Callback):
        """A trial's epoch checkpoints only serve retries while it runs (a child's result is
        its trials.jsonl line); kept, they would add up to the model size x every trial."""

        def on_trial_complete(self, iteration, trials, trial, **info):
            checkpoint = trial.checkpoint
            if checkpoint is None:
                return
            try:
                checkpoint.filesystem.delete_dir(checkpoint.path)
            except Exception as e:  # storage hiccup: a leftover checkpoint is harmless
                log.warning("could not delete %s: %s", checkpoint.path, e)

    return DropFinishedCheckpoints()


@contextlib.contextmanager
def _no_ray_tensorboard():
    """Ray Tune adds a TensorBoard logger of its own unless this variable is set; its event
    files (every config key as an HParam) would sit beside nasforge's in the run folder and
    confuse ``tensorboard --logdir runs``. Ray's CSV and JSON trial logs are passed explicitly."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _summary(run: RunFolder, recorder: SearchRecorder, config: SearchConfig) -> dict:
    p = recorder.progress()
    best = recorder.best
    return {"run_dir": str(run.path), "searcher": config.searcher, "budget": config.trials,
            "finished": p.finished, "failed": p.failed, "pruned": p.pruned,
            "best_val_acc": p.best, "best_trial": p.best_trial,
            "best_hash": best["hash"] if best else None,
            "wall_s": p.elapsed_s, "device_s": p.device_s}
