"""``nasforge search``: run an architecture search on Ray Tune into ``runs/<name>/``."""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

from nasforge.cli import UsageError
from nasforge.cli.options import add_dataset_option
from nasforge.cluster import ResourceError
from nasforge.errors import NasforgeError
from nasforge.faults import faults_from_env
from nasforge.oneshot.methods import default_recipe
from nasforge.oneshot.run import is_oneshot, run_oneshot
from nasforge.safe_load import read_json
from nasforge.search.backends import BACKENDS, default_space
from nasforge.search.config import SCHEDULERS, SearchConfig
from nasforge.search.objectives import METRICS, Goal, ObjectiveError, parse_objectives
from nasforge.search.run_folder import PARETO
from nasforge.search.runner import run_search
from nasforge.search_spaces.nas_bench_201 import is_cell_record
from nasforge.timefmt import format_duration
from nasforge.trials import SearchSummary, Status, StopReason, metric_value


def add_arguments(p):
    d = SearchConfig()
    p.add_argument("--space", help=f"search space (default: {d.space}; with --benchmark "
                                   f"nas-bench-201, nas-bench-201)")
    p.add_argument("--searcher", default=d.searcher,
                   help=f"rl | evolution | optuna | random, or a one-shot method: enas | darts "
                        f"| gdas | spos | rsps (default: {d.searcher})")
    p.add_argument("--searcher-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a field of the searcher's config, VALUE as JSON (repeatable), e.g. "
                        "population_size=50 or storage='\"sqlite:///s.db\"'")
    p.add_argument("--benchmark", "--backend", dest="benchmark", default=d.backend,
                   choices=tuple(BACKENDS),
                   help="how a trial gets its figures: train (train the child) or "
                        "nas-bench-201 (look the cell up in NAS-Bench-201's 12-epoch table: "
                        "no training, no data; needs --space nas-bench-201; default: train)")
    add_dataset_option(p, "the nas-bench-201 space's classes and input size and the "
                          "table's columns")
    p.add_argument("--table", metavar="PATH",
                   help="a NAS-Bench-201 table file with the shipped one's columns (arch_index, "
                        "cell, cifar10_valid, ...; CSV, plain or gzip) instead of the shipped one")
    p.add_argument("--trials", type=int, default=d.trials,
                   help=f"finished trials to run (default: {d.trials})")
    p.add_argument("--recipe", help=f"child training recipe (default: {d.recipe}, or a "
                                    f"one-shot method's own, e.g. gdas-search)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs per child")
    p.add_argument("--data", help="data path or name (default: the recipe's); split into "
                                  "train/validation, the test set is never used")
    p.add_argument("--val-size", type=int, help="validation images (default: the recipe's)")
    p.add_argument("--cache-dir", help="data cache folder")
    p.add_argument("--gpus", type=float,
                   help="GPUs to use (default: every GPU of the Ray cluster; 0 = CPU)")
    p.add_argument("--gpus-per-trial", type=float, default=d.gpus_per_trial,
                   help="GPUs per child, fractions share a GPU (default: 1)")
    p.add_argument("--cpus-per-trial", type=float, default=d.cpus_per_trial,
                   help="CPU cores per child (default: 1)")
    p.add_argument("--scheduler", default=d.scheduler, choices=SCHEDULERS,
                   help="fifo: every child trains to the end; asha: stop weak children early")
    p.add_argument("--max-retries", type=int, default=d.max_retries,
                   help="re-runs of a trial whose worker died (default: 2)")
    p.add_argument("--max-consecutive-failures", type=int, metavar="K",
                   default=d.max_consecutive_failures,
                   help=f"stop the search as broken when K trials in a row fail with the same "
                        f"error, or the first K all fail (children that diverge or run out of "
                        f"memory do not count; 0: never; default: {d.max_consecutive_failures})")
    p.add_argument("--objective", metavar="NAME[:max|min]",
                   help=f"the metric to optimize (default: {d.objectives[0]}; known: "
                        f"{', '.join(METRICS)}); a resumed search refuses a different one")
    p.add_argument("--objectives", metavar="A:max,B:min",
                   help="several objectives: a Pareto search (the first is the primary; the "
                        "front goes to RUN/pareto.json), e.g. val_acc:max,mult_adds:min")
    p.add_argument("--constraint", action="append", metavar="EXPR",
                   help="METRIC OP NUMBER with OP <=, >=, < or > (repeatable), e.g. "
                        "'mult_adds<=600e6'; params and mult-adds are checked before training "
                        "(an infeasible child is never trained)")
    p.add_argument("--latency-table", metavar="FILE",
                   help="per-op latency table (nasforge latency --build-table) that predicts "
                        "latency_ms for objectives and constraints")
    p.add_argument("--max-infeasible", type=int, metavar="K",
                   help="stop after K infeasible proposals (default: 20 x --trials)")
    p.add_argument("--prescreen", metavar="PROXY:K",
                   help="black-box search: each trial is the best of K proposals by a "
                        "zero-cost proxy (e.g. synflow:10, see nasforge proxies); the others "
                        "are recorded as screened in trials.jsonl and never trained")
    p.add_argument("--seed", type=int, default=d.seed, help="search seed (default: 0)")
    p.add_argument("--workers", type=int, default=d.workers,
                   help="one-shot search: data-parallel CPU processes training the supernet "
                        "(default: 1; with --gpus N, one per GPU)")
    p.add_argument("--address", help="Ray cluster: 'auto', 'HOST:PORT' or 'ray://HOST:PORT' "
                                     "(default: start a local Ray)")
    p.add_argument("--storage", help="Ray storage for trial checkpoints, shared by all nodes "
                                     "(a path or s3://, gs://; default: RUN/ray)")
    p.add_argument("--name", help="run folder name (default: <space>-<searcher>-<time>)")
    p.add_argument("--runs-dir", default="runs", help="parent of run folders (default: runs)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the search in RUN_DIR with its saved settings (other search "
                        "flags are ignored)")
    p.add_argument("--json", action="store_true", help="print one final JSON summary")
    p.set_defaults(run=run)


def _fmt_value(v: float | None) -> str:
    """An objective value: accuracies as 0.1234, counts (params, mult-adds) as 1.23e+08."""
    if v is None:
        return "?"
    return f"{v:.4f}" if abs(v) < 1e3 else f"{v:.4g}"


def _fmt_s(s: float | None) -> str:
    return "?" if s is None else format_duration(s)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _options(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--searcher-option needs KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out


def progress_line(p) -> str:
    width = len(str(p.budget))
    parts = []
    if p.last is not None:
        r = p.last
        value = metric_value(r, p.objective)
        what = f"{p.objective} {_fmt_value(value)}" if r["status"] == Status.OK and \
            r.get("feasible") is not False and value is not None else \
            (r.get("error") or r["status"])
        parts.append(f"trial {r['trial']} {r['status']}: {what} ({r['wall_s']:.0f} s)")
    parts.append(f"running {p.running}, failed {p.failed}" +
                 (f", pruned {p.pruned}" if p.pruned else "") +
                 (f", infeasible {p.infeasible}" if p.infeasible else ""))
    if p.best is not None:
        parts.append(f"best {p.objective} {_fmt_value(p.best)} (trial {p.best_trial})")
    if p.front is not None:
        parts.append(f"front {p.front}")
    parts.append(f"elapsed {_fmt_s(p.elapsed_s)}, ETA {_fmt_s(p.eta_s)}")
    return f"[{p.finished:>{width}}/{p.budget}] " + " | ".join(parts)


def _goal(args):
    """The objectives and constraints given on the command line (None: none given)."""
    if args.objective is not None and args.objectives is not None:
        raise UsageError("give --objective or --objectives, not both")
    if args.objective is None and args.objectives is None and not args.constraint:
        return None
    try:
        objectives = parse_objectives(args.objectives) if args.objectives is not None else \
            (args.objective or "val_acc",)
        return Goal.parse(objectives, args.constraint or ())
    except ObjectiveError as e:
        raise UsageError(str(e), options=e.options) from None


def epoch_line(line: dict) -> str:
    """One one-shot epoch: its supernet accuracy, entropy and derived cell (with a table:
    its string, the table's 12-epoch test accuracy and percentile; and its skip share)."""
    acc = line.get("val_acc")
    cell = line.get("cell_string") or line["hash"][:12]
    table = "" if line.get("table_test_acc") is None else \
        f", table test {line['table_test_acc']:.2f}% (percentile {line['table_percentile']:.1f})"
    skip = "" if line.get("skip_share") is None else f", skip {line['skip_share']:.2f}"
    return (f"epoch {line['epoch']}: supernet val_acc "
            f"{'-' if acc is None else format(acc, '.4f')}, entropy {line['entropy']:.3f}, "
            f"derived cell {cell}{table}{skip} ({_fmt_s(line.get('wall_s'))})")


STEP_LINE_EVERY_S = 10.0  # a one-shot epoch's step line: at most one per this many seconds
# a one-shot search silent this long prints what it is doing (one darts mixture step on a
# shared CPU can take a minute: no callback can report inside it)
HEARTBEAT_S = 20.0


def step_line(p) -> str:
    """A one-shot training step (``oneshot.run.StepProgress``): where the epoch is."""
    of = "" if p.steps is None else f"/{p.steps}"
    eta = "" if p.eta_s is None else f", epoch ETA {_fmt_s(p.eta_s)}"
    return f"epoch {p.epoch}/{p.epochs}: step {p.step}{of}, {p.step_s:.1f} s per step{eta}"


class OneShotConsole:
    """A one-shot search's console: ``say`` prints a line (a throttled one only when
    ``every_s`` passed since the last line), ``doing`` records what runs now, and while
    ``beating`` a thread prints that when ``heartbeat_s`` pass without a line."""

    def __init__(self, every_s: float, heartbeat_s: float):
        self.every_s, self.heartbeat_s = every_s, heartbeat_s
        self.last = time.monotonic()
        self.now_doing = "starting"
        self._lock = threading.Lock()
        self._done = threading.Event()

    def say(self, line: str, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if force or now - self.last >= self.every_s:
                self.last = now
                _say(line)

    def doing(self, what: str) -> None:
        self.now_doing = what

    def printed(self) -> None:
        """Called after lines printed elsewhere: the silence starts now."""
        with self._lock:
            self.last = time.monotonic()

    def _beat(self) -> None:
        # check a few times per heartbeat so a silence is reported within a third of it late
        while not self._done.wait(min(1.0, self.heartbeat_s / 3)):
            with self._lock:
                silent = time.monotonic() - self.last
                if silent >= self.heartbeat_s:
                    self.last = time.monotonic()
                    _say(f"... {self.now_doing} ({_fmt_s(silent)} since the last line)")

    @contextlib.contextmanager
    def beating(self):
        thread = threading.Thread(target=self._beat, name="nasforge-heartbeat", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._done.set()
            thread.join()


def run(args) -> int:
    goal = _goal(args)
    if args.resume:
        run_dir = Path(args.resume)
        config = None
    else:
        try:
            faults = faults_from_env()
        except ValueError as e:
            raise UsageError(str(e)) from None
        space = args.space or default_space(args.benchmark)
        config = SearchConfig(
            space=space, searcher=args.searcher,
            searcher_options=_options(args.searcher_option), trials=args.trials,
            recipe=args.recipe or default_recipe(args.searcher, args.space, SearchConfig.recipe),
            epochs=args.epochs,
            data=os.path.abspath(args.data) if args.data and os.path.exists(args.data)
            else args.data,
            val_size=args.val_size, cache_dir=args.cache_dir, gpus=args.gpus,
            gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
            scheduler=args.scheduler, max_retries=args.max_retries,
            max_consecutive_failures=args.max_consecutive_failures, seed=args.seed,
            address=args.address, storage=args.storage, faults=faults,
            **({} if goal is None else goal.spec()), max_infeasible=args.max_infeasible,
            latency_table=None if args.latency_table is None else
            str(Path(args.latency_table).resolve()),
            workers=args.workers, backend=args.benchmark, dataset=args.dataset,
            table=None if args.table is None else str(Path(args.table).resolve()),
            prescreen=args.prescreen)
        name = args.name or f"{space}-{args.searcher}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(args.runs_dir) / name

    def on_start(note: str) -> None:
        verb = "resuming" if args.resume else "searching"
        _say(f"{verb} -> {run_dir}: {note}")
        _say(f"compare runs with: tensorboard --logdir {run_dir.parent}")

    oneshot = is_oneshot(config, run_dir)
    try:
        if oneshot:
            summary = _run_oneshot(config, run_dir, args, on_start)
        else:
            summary = run_search(config, run_dir, resume=bool(args.resume),
                                 on_progress=lambda p: _say(progress_line(p)),
                                 on_start=on_start, expect_goal=goal if args.resume else None)
    except ResourceError as e:  # the library names the resource, the CLI the option
        option = "--gpus" if e.resource == "GPU" else "--workers" if oneshot else \
            "--cpus-per-trial"
        raise UsageError(e.message(f"{option} {e.asked:g}")) from None
    if args.json:
        print(json.dumps(summary))
    return _report_end(summary, run_dir, done_line=not args.json)


def _run_oneshot(config, run_dir: Path, args, on_start) -> dict:
    """A one-shot search with its console: a line per epoch and per search-phase candidate,
    a step line at most every ``STEP_LINE_EVERY_S``, and what it is doing after
    ``HEARTBEAT_S`` without a line."""
    lines = OneShotConsole(STEP_LINE_EVERY_S, HEARTBEAT_S)
    # no line before the inputs are checked: bad input is one line (exit 2)
    lines.doing("loading the data, sizing the supernet")

    def started(note: str) -> None:
        on_start(note)
        lines.printed()
        lines.doing("training the supernet, epoch 1")

    def step(p) -> None:
        lines.doing(f"training epoch {p.epoch}/{p.epochs}, {p.step}"
                    f"{'' if p.steps is None else f'/{p.steps}'} steps done")
        lines.say(step_line(p))

    def epoch(line: dict) -> None:
        lines.doing(f"after epoch {line['epoch']}: the next epoch, or the search phase")
        lines.say(epoch_line(line), True)

    def progress(p) -> None:
        lines.doing(f"search phase: trial {p.finished + 1}/{p.budget}")
        lines.say(progress_line(p), True)

    with lines.beating():
        return run_oneshot(config, run_dir, resume=bool(args.resume), on_epoch=epoch,
                           on_start=started, on_step=step, on_progress=progress)


def _cell_name(best_cell: str | None) -> str:
    """``|...| (arch_index N), `` when ``best_cell`` (best_cell.json) holds a NAS-Bench-201
    cell record, else nothing (a cell pair has no short name)."""
    try:
        data = read_json(best_cell, "best cell") if best_cell else None
    except (OSError, NasforgeError):
        return ""
    if not is_cell_record(data):
        return ""
    index = data.get("arch_index")
    return f"{data.get('cell')}" + ("" if index is None else f" (arch_index {index})") + ", "


def _report_end(summary: dict, run_dir: Path, done_line: bool = True) -> int:
    """The last line of a search and its exit code: 0 done, 1 broken, 130 interrupted."""
    summary = SearchSummary.from_json(summary)
    resume = f"nasforge search --resume {shlex.quote(str(run_dir))}"
    if summary.stopped == StopReason.BROKEN:
        broken = summary.broken
        where = f"traceback: {broken['traceback']}" if broken["traceback"] else \
            f"trial {broken['trial']} in {run_dir / 'trials.jsonl'}"
        _say(f"nasforge: error: search stopped: {broken['message']} ({where}); after a fix, "
             f"continue with: {resume}")
        return 1
    if summary.stopped == StopReason.INFEASIBLE:
        _say(f"nasforge: error: search stopped after {summary.finished} of "
             f"{summary.budget} trials: {summary.infeasible_message}")
        return 1
    if summary.stopped == StopReason.INTERRUPTED:
        _say(f"nasforge: interrupted after {summary.finished} of {summary.budget} "
             f"trials; continue with: {resume}")
        return 130
    if not done_line:
        return 0
    best = summary.best  # of the primary objective
    objective = summary.objective.split(":")[0]
    notes = ""
    if summary.pareto_front is not None:
        notes += f"; Pareto front of {len(summary.pareto_front)}: {run_dir / PARETO}"
    if summary.infeasible:
        notes += f"; {summary.infeasible} infeasible " + \
            ("paths never evaluated" if summary.oneshot else "proposals never trained")
    if summary.oneshot and best is not None:
        trial = summary.best_trial
        where = "search phase" if trial > summary.epochs else f"epoch {trial}"
        _say(f"done: {summary.epochs} epochs in {_fmt_s(summary.wall_s)}; best "
             f"{objective} {_fmt_value(best)} ({where}); best cell: {summary.best_cell}"
             f"{notes}")
        return 0
    outcome = "no trial finished ok, so there is no best cell" if best is None else \
        f"best {objective} {_fmt_value(best)} (trial {summary.best_trial}); best cell: " \
        f"{_cell_name(summary.best_cell)}{summary.best_cell}"
    _say(f"done: {summary.finished} trials ({summary.failed} failed) in "
         f"{_fmt_s(summary.wall_s)}; {outcome}{notes}")
    return 0
