"""``run_search``: a search = a Ray Tune experiment of child trainings driven by a searcher.

Who does what: Ray Tune schedules trials on the cluster's resources, retries trials whose
worker died (``FailureConfig``), checkpoints them and stops weak ones (ASHA);
``TuneSearcherAdapter`` turns proposals into trials and results into ``tell``; the trainable
(``trial.run_trial``) trains one child with nasforge's trainer; ``SearchRecorder``
(``recorder.py``) keeps the run folder, TensorBoard and the progress callback up to date.

Resume is driven by the run folder, not by ``Tuner.restore``: Ray saves its experiment state on
a timer, so after a driver SIGKILL it can lag behind trials that already finished and would
train them again; ``trials.jsonl`` and ``searcher.pt`` are written at every ask and every
finish (in the order ``run_folder`` documents), so ``--resume`` knows exactly which trials
finished, tells the searcher any it missed, re-runs only proposals that never finished, and
runs the rest of the budget as a new Ray experiment (``ray/part-<k>``) in the same folder.

A search ends before its budget when it is broken (``failures.FailureWatch``: the same error
``max_consecutive_failures`` times in a row, or in every one of the first trials) or
interrupted (the first Ctrl-C; a second one stops at once). Either way the trials that finished
are recorded, the ones still running are left for ``--resume``, and the summary says why
(``stopped``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import nasforge
from nasforge.cluster import ray_session
from nasforge.controllers import SEARCHERS, Prescreen, get_searcher
from nasforge.data import load_data
from nasforge.search.adapter import StopRequest, TuneSearcherAdapter
from nasforge.search.backends import make_backend, space_options
from nasforge.search.board import SearchBoard
from nasforge.search.config import SearchConfig, SearchError
from nasforge.search.failures import BrokenSearch, FailureWatch, describe_broken
from nasforge.search.objectives import Goal, ModelSetting, infeasible_cap
from nasforge.search.recorder import SearchProgress, SearchRecorder
from nasforge.search.run_folder import SEARCHER_STATE, RunFolder, trial_score
from nasforge.search.screen import result_from_record
from nasforge.search.trial import TrialSettings
from nasforge.search_spaces import SPACES, get_space
from nasforge.search_spaces.nas_bench_201 import DATASETS, UnknownDatasetError
from nasforge.tables import hp12_columns
from nasforge.train import Recipe, get_recipe
from nasforge.proxies import PROXIES, data_batch, shape_batch
from nasforge.proxies.prescreen import (PROXY_SCORES, ProxyScorer, ScoreCache, parse_prescreen,
                                        space_scorer)
from nasforge.trials import UNTRAINED, SearchSummary, Status, StopReason

log = logging.getLogger(__name__)

FORMAT = "nasforge.search/1"


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
    if config.space not in SPACES:
        raise SearchError(f"unknown search space {config.space!r} (known: {', '.join(SPACES)})")
    try:
        space = get_space(config.space, **space_options(config))
    except UnknownDatasetError as e:  # the one message for it (nas_bench_201.check_dataset)
        raise SearchError(str(e), options=e.options) from None
    except TypeError:  # a data set given to a space that takes none
        raise SearchError(f"the search space {config.space!r} takes no data set",
                          options=("dataset",)) from None
    except ValueError as e:  # a data set the space does not know
        raise SearchError(f"search space {config.space!r}: {e}", options=("dataset",)) from None
    return space, goal_searcher(config.searcher, space, config.seed, config.goal,
                                config.searcher_options)


def goal_searcher(name: str, space, seed: int, goal: Goal, options: dict | None = None):
    """The searcher ``name`` over ``space`` that optimizes ``goal``'s primary objective in its
    direction (several objectives: the searcher must model them, its config's ``objectives``
    field gets them); SearchError for unknown names or options. The one rule for black-box
    searches and spos's search phase."""
    if name not in SEARCHERS:
        raise SearchError(f"unknown searcher {name!r} (known: {', '.join(SEARCHERS)})")
    options = dict(options or {})
    if goal.multi:
        cls = SEARCHERS[name]
        if not cls.multi_objective:
            raise SearchError(f"several objectives ({', '.join(map(str, goal.objectives))}) "
                              f"need a multi-objective searcher (known: "
                              f"{', '.join(n for n, c in SEARCHERS.items() if c.multi_objective)}"
                              f"), not {name!r}")
        if cls.Config is not None and "objectives" in {f.name for f in
                                                       dataclasses.fields(cls.Config)}:
            if "objectives" in options:
                raise SearchError("give the objectives as the search's objectives, not as a "
                                  "searcher option", options=("objectives",))
            options["objectives"] = tuple((o.name, o.optuna_direction)
                                          for o in goal.objectives)
    try:
        return get_searcher(name, space, seed=seed, objective=goal.primary.name,
                            direction=goal.primary.optuna_direction, **options)
    except (TypeError, ValueError) as e:
        raise SearchError(f"searcher {name!r}: {e}") from None


def prescreen_scorer(config: SearchConfig, run: RunFolder, space, setting: ModelSetting,
                     data) -> ProxyScorer:
    """The scorer of ``config.prescreen``: the proxy on the child network (built as the
    search builds its children, weights from the search's seed) and one batch of the
    search's training images (a batch of zeros for a proxy that reads only shapes, the one
    choice where the backend loads no data); scores cached in the run folder."""
    proxy, _ = parse_prescreen(config.prescreen)
    if data is not None:
        batch = data_batch(data, seed=config.seed)
    elif PROXIES[proxy].data_free:
        batch = shape_batch(setting.input_size, setting.in_channels)
    else:
        raise SearchError(f"proxy {proxy!r} scores real images and the {config.backend} "
                          f"backend loads none: use a proxy that reads only shapes "
                          f"({', '.join(n for n, p in PROXIES.items() if p.data_free)})",
                          options=("prescreen",))
    return space_scorer(proxy, batch, space, setting, ScoreCache(run.path / PROXY_SCORES),
                        seed=config.seed)


def resources_asked(config: SearchConfig) -> dict:
    """The ``ray_session`` keywords of a search: its GPUs (None: whatever the cluster has) and
    one trial's CPUs."""
    return {"gpus": config.gpus, "cpus": config.cpus_per_trial}


def plan_resources(config: SearchConfig, cluster: dict) -> tuple[dict, int, str]:
    """({"cpu", "gpu"} per trial, concurrent trials, a sentence for the console) on a cluster
    with ``cluster`` resources that hold ``resources_asked(config)`` (``ray_session`` checks
    that)."""
    have_gpus = float(cluster.get("GPU", 0))
    have_cpus = float(cluster.get("CPU", 0))
    gpus = have_gpus if config.gpus is None else float(config.gpus)
    if gpus > 0:
        if config.gpus_per_trial > gpus:
            raise SearchError(f"gpus_per_trial {config.gpus_per_trial:g} is more than the "
                              f"{gpus:g} GPU(s) of the search", options=("gpus_per_trial", "gpus"))
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
               on_start: Callable[[str], None] | None = None,
               expect_goal: Goal | None = None) -> dict:
    """Run (or with ``resume=True`` continue) a search in ``run_dir``; return its summary.

    ``on_start`` receives one sentence about the resources used; ``on_progress`` a
    ``SearchProgress`` after every finished trial. Raises SearchError (or nasforge.data's
    DataError, nasforge.cluster's ClusterError) for bad input before anything is written. A
    search that ends before its budget returns normally; its summary's ``stopped`` says why
    (a ``trials.StopReason``: broken, with ``broken`` = ``failure_report``; interrupted; or
    infeasible when the cap on infeasible proposals was reached). ``expect_goal``: with
    ``resume``, the objectives and constraints the caller asked for; SearchError when they
    differ from the run's."""
    run, config, records, recipe = _open_run(config, run_dir, resume)
    goal = config.goal
    if resume and expect_goal is not None and expect_goal.spec() != goal.spec():
        raise SearchError(f"cannot resume {run_dir}: the run searches "
                          f"{_describe_goal(goal)}; it cannot continue with "
                          f"{_describe_goal(expect_goal)}", options=("resume",))
    space, searcher = make_searcher(config)
    if config.prescreen is not None:  # its scorer needs the data: set once they are loaded
        proxy, k = parse_prescreen(config.prescreen)
        searcher = Prescreen(searcher, None, k, proxy)
    backend = make_backend(config, space)  # a table is read (and refused) before Ray starts
    # the saved state is read (and refused if crafted) before Ray starts or data loads
    requeue = _restore_searcher(run, searcher, records)
    epochs = backend.epochs or config.epochs or recipe.schedule.epochs
    val_size = recipe.inputs.val_size if config.val_size is None else config.val_size
    remaining = config.trials - sum(r["status"] not in UNTRAINED for r in records)
    cap = infeasible_cap(config.trials, config.max_infeasible)
    infeasible_seen = sum(r["status"] == Status.INFEASIBLE for r in records)

    ray_exit = contextlib.ExitStack()  # closed last: Ray outlives the board
    cluster = ray_exit.enter_context(ray_session(config.address, **resources_asked(config)))
    board = None
    try:
        per_trial, concurrency, note = plan_resources(config, cluster.resources)
        data = load_data(config.data or recipe.defaults.data, split="search", val_size=val_size,
                         seed=config.seed, cache_dir=config.cache_dir) \
            if backend.needs_data else None
        _check_network_data(space, data)
        if not resume:
            run.create(_run_description(config, recipe, epochs, data, backend))
        if on_start is not None:
            on_start(note)
        stop = StopRequest()
        recorder = SearchRecorder(run, SearchBoard(run, config.searcher, goal), records,
                                  config.trials, concurrency, on_progress,
                                  FailureWatch(config.max_consecutive_failures), stop, goal)
        board = recorder.board
        if remaining > 0 and infeasible_seen >= cap:
            stop.set(StopReason.INFEASIBLE)
        elif remaining > 0:
            run.save_searcher(searcher.state_dict())
            classes, size, channels = (data.num_classes, data.image_size[0], data.channels) \
                if data is not None else (DATASETS[backend.dataset].num_classes,
                                          DATASETS[backend.dataset].input_size, 3)
            setting = ModelSetting(recipe.defaults.setting or "cifar", classes, size, channels,
                                   tuple(sorted(recipe.build_overrides().items())),
                                   config.latency_table)
            if config.prescreen is not None:
                searcher.scorer = prescreen_scorer(config, run, space, setting, data)
            adapter = TuneSearcherAdapter(searcher, space, recorder, remaining, per_trial,
                                          requeue=requeue, goal=goal, stop=stop,
                                          model_setting=setting, infeasible_cap=cap,
                                          infeasible_seen=infeasible_seen,
                                          arch_record=backend.arch_recorder(space))
            _fit(_make_tuner(config, run, adapter, data, recipe, epochs, space, per_trial,
                             concurrency, remaining, stop, backend), run, stop)
        return _summary(run, recorder, config, stop)
    finally:
        if board is not None:
            board.close()
        ray_exit.close()


def open_run(config: SearchConfig | None, run_dir, resume: bool, fmt: str = FORMAT,
             kind: str = "nasforge search"):
    """(run folder, config, recipe) of a new search or of the one saved in ``run_dir``
    (``--resume``: its ``config.json`` must be of format ``fmt``; it trains with the recipe it
    saved). Called first by every search driver (black-box and one-shot)."""
    if resume:
        run = RunFolder.open(run_dir)
        saved = run.config()
        if saved.get("format") != fmt or not isinstance(saved.get("search"), dict):
            raise SearchError(f"cannot resume {run_dir}: config.json is not a {kind} config",
                              options=("resume",))
        config = SearchConfig.from_dict(saved["search"])
    else:
        if config is None:
            raise SearchError(f"a {kind} needs a SearchConfig")
        run = RunFolder(run_dir)
    try:
        recipe = Recipe.from_dict(saved["recipe"]) if resume else get_recipe(config.recipe)
    except KeyError as e:
        raise SearchError(str(e.args[0])) from None
    except (TypeError, ValueError) as e:
        raise SearchError(f"cannot resume {run_dir}: config.json's recipe is malformed: {e}",
                          options=("resume",)) from None
    return run, config, recipe


def _open_run(config: SearchConfig | None, run_dir, resume: bool):
    """(run folder, config, finished records, recipe) of a new or a resumed search."""
    run, config, recipe = open_run(config, run_dir, resume)
    return run, config, run.trials() if resume else [], recipe


def _check_network_data(space, data) -> None:
    """A space whose graphs are whole networks (nas-bench-201) fixes its classes: they must
    be the data's."""
    dataset = getattr(space, "dataset", None)
    if data is None or dataset not in DATASETS or \
            DATASETS[dataset].num_classes == data.num_classes:
        return
    raise SearchError(f"the {space.name} space's networks for {dataset} have "
                      f"{DATASETS[dataset].num_classes} classes, the data has "
                      f"{data.num_classes}", options=("dataset",))


def _run_description(config: SearchConfig, recipe, epochs: int, data, backend) -> dict:
    """The run's ``config.json``: the search's settings and what they resolved to."""
    import ray

    data_info = backend.describe() if data is None else \
        {"source": data.source, "format": data.format,
         "train": len(data.train), "val": len(data.val),
         "classes": list(data.classes), "image_size": list(data.image_size)}
    return {"format": FORMAT, "search": config.to_dict(),
            "nasforge_version": nasforge.__version__, "git_commit": _git_commit(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "recipe": recipe.to_dict(), "epochs": epochs,
            "setting": recipe.defaults.setting or "cifar",  # of the children (export)
            "data": data_info,
            "ray_version": ray.__version__}


def _restore_searcher(run: RunFolder, searcher, records: list[dict]) -> list:
    """Load the searcher's saved state (if any) and reconcile it with ``records``; return
    the proposals to train again (see ``_reconcile``)."""
    state = run.load_searcher()
    if state is not None:
        try:
            searcher.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as e:
            raise SearchError(f"cannot resume {run.path}: its {SEARCHER_STATE} cannot be "
                              f"restored: {e}", options=("resume",)) from None
    elif records:
        log.warning("%s has trials but no searcher state: the searcher starts afresh", run.path)
    return _reconcile(searcher, records)


def make_scheduler(config: SearchConfig, epochs: int):
    """Ray Tune's trial scheduler of the search (None for fifo); ASHA stops children on the
    primary objective, in its direction."""
    if config.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    primary = config.goal.primary
    return ASHAScheduler(time_attr="epoch", metric=primary.name, mode=primary.direction.value,
                         max_t=epochs, grace_period=max(1, epochs // 4), reduction_factor=3)


def _make_tuner(config: SearchConfig, run: RunFolder, adapter, data, recipe, epochs: int,
                space, per_trial: dict, concurrency: int, remaining: int, stop, backend):
    """The Ray Tune experiment of the ``remaining`` trials: ``ray/part-<k>`` of the run."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    settings = TrialSettings(space=space, recipe=recipe, epochs=epochs,
                             setting=recipe.defaults.setting or "cifar",
                             overrides=tuple(recipe.build_overrides().items()),
                             seed=config.seed, threads=max(1, int(config.cpus_per_trial)),
                             faults=config.faults, objective=config.goal.primary.name,
                             table=backend.table,
                             table_columns=hp12_columns(backend.dataset) if backend.table
                             is not None else ())
    trainable = tune.with_resources(
        tune.with_parameters(backend.trainable, data=data, settings=settings), per_trial)
    scheduler = make_scheduler(config, epochs)
    primary = config.goal.primary
    storage = config.storage or str((run.path / "ray").resolve())
    part = 1 + sum(1 for p in Path(storage).glob("part-*")) if "://" not in storage else \
        int(time.time())
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=adapter, num_samples=remaining,
                                    max_concurrent_trials=concurrency, scheduler=scheduler,
                                    # a scheduler holds its own metric (Ray refuses both)
                                    metric=None if scheduler else primary.name,
                                    mode=None if scheduler else primary.direction.value,
                                    reuse_actors=True,
                                    trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=f"part-{part}", storage_path=storage, verbose=0, stop=_make_stopper(stop),
            failure_config=tune.FailureConfig(max_failures=config.max_retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[CSVLoggerCallback(), JsonLoggerCallback(),
                       _make_drop_checkpoints_callback()]))


def _fit(tuner, run: RunFolder, stop) -> None:
    """Run the Ray experiment until its trials are done or the search is stopped."""
    # Ray Tune prints its own tables on stdout whatever the verbosity; stdout belongs to the
    # CLI (--json), so they go to a log file in the run folder
    with open(run.path / "ray_console.log", "a", encoding="utf-8") as console, \
            contextlib.redirect_stdout(console), _no_ray_tensorboard(), \
            _stop_on_interrupt(stop):
        tuner.fit()


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


def _make_stopper(stop):
    from ray.tune import Stopper

    class StopWhenRequested(Stopper):
        """Ends the Ray experiment once the search is stopped (``adapter.StopRequest``)."""

        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return bool(stop)

    return StopWhenRequested()


@contextlib.contextmanager
def _stop_on_interrupt(stop):
    """The first Ctrl-C (SIGINT) asks the search to stop (finished trials stay recorded, the
    running ones are left for --resume); a second one raises KeyboardInterrupt at once. Ray
    Tune's own SIGINT handler (which ends the experiment without telling the search) is off."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum, frame):
        stop.set(StopReason.INTERRUPTED)
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, interrupted)
    try:
        with _environ("TUNE_DISABLE_SIGINT_HANDLER", "1"):
            yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _environ(key: str, value: str):
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


@contextlib.contextmanager
def _no_ray_tensorboard():
    """Ray Tune adds a TensorBoard logger of its own unless this variable is set; its event
    files (every config key as an HParam) would sit beside nasforge's in the run folder and
    confuse ``tensorboard --logdir runs``. Ray's CSV and JSON trial logs are passed explicitly."""
    with _environ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"):
        yield


def _describe_goal(goal: Goal) -> str:
    text = "objectives " + ",".join(map(str, goal.objectives))
    return text + (" with constraints " + ", ".join(map(str, goal.constraints))
                   if goal.constraints else " without constraints")


def describe_infeasible(config: SearchConfig, budget: int | None = None,
                        before: str = "training") -> str:
    """One sentence: why a search stopped at the cap on infeasible proposals (``budget``: the
    evaluations the cap is a multiple of, default the trials; ``before``: what the refused
    proposals never got)."""
    cap = infeasible_cap(config.trials if budget is None else budget, config.max_infeasible)
    return (f"{cap} proposals violated the constraints ({', '.join(config.constraints)}) "
            f"before {before}; the space is almost entirely infeasible: loosen the constraints "
            f"or raise max_infeasible")


def failure_report(run: RunFolder, broken: BrokenSearch) -> dict:
    """The summary's ``broken``: the error, its trial and that trial's traceback file."""
    path = run.traceback_path(broken.trial)
    return {"message": describe_broken(broken), "error": broken.error, "trial": broken.trial,
            "count": broken.count, "first_trials": broken.first_trials,
            "traceback": str(path) if path.is_file() else None}


def _summary(run: RunFolder, recorder: SearchRecorder, config: SearchConfig, stop) -> dict:
    p = recorder.progress()
    best = recorder.best
    return SearchSummary(
        run_dir=str(run.path), searcher=config.searcher, budget=config.trials,
        objective=str(config.goal.primary), finished=p.finished, failed=p.failed,
        pruned=p.pruned, infeasible=p.infeasible, best=p.best,
        best_val_acc=trial_score(best) if best else None, best_trial=p.best_trial,
        best_hash=best.hash if best else None,
        best_cell=str(run.best_path) if run.best_path.is_file() else None,
        pareto_front=[r.trial for r in recorder.front] if config.goal.multi else None,
        stopped=stop.reason,
        infeasible_message=describe_infeasible(config)
        if stop.reason == StopReason.INFEASIBLE else None,
        broken=failure_report(run, stop.broken) if stop.broken else None,
        wall_s=p.elapsed_s, device_s=p.device_s).to_json()
