"""``nasforge bench searchers``: every searcher on a benchmark that needs no training.

Benchmarks (``BENCHMARKS``, by ``--benchmark``): ``planted``, the planted-cell function
(``controllers.bench``), and ``nas-bench-201``, NAS-Bench-201's table of 15,625 trained cells
(``controllers.bench_table``). Prints a table (or one JSON object keyed by searcher name with
``--json``); progress goes to stderr. Random search always runs: it is the reference.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from nasforge.cli import UsageError
from nasforge.cli.options import add_dataset_option
from nasforge.controllers import SEARCHERS, get_searcher
from nasforge.controllers.bench import PlantedTask, run_search, summarize
from nasforge.controllers.bench_table import (TOP_FRACTIONS, MemoHashSpace, TableTask,
                                              run_table_search, summarize_table)
from nasforge.search_spaces import NasNetSpace
from nasforge.search_spaces.nas_bench_201 import DATASETS as NB201_DATASETS
from nasforge.search_spaces.nas_bench_201 import DEFAULT_DATASET
from nasforge.controllers.prescreen import Prescreen
from nasforge.data import load_data
from nasforge.proxies import PROXIES, ProxyError, data_batch, shape_batch
from nasforge.proxies.prescreen import ScoreCache, nb201_scorer, parse_prescreen
from nasforge.tables import load_sample, load_table

DEFAULT_SEARCHERS = "rl,evolution,optuna,random"
# The RL controller's own default is the paper's Adam lr 0.00035 (RLConfig). At that rate the
# policy barely moves in 1,000 children (50 updates; NASNet trained 20,000), so this benchmark
# runs it at a larger rate, stated in its output; --rl-lr 0.00035 measures the paper setting.
BENCH_RL_LR = 0.0035
PRESCREEN_MARK = "+"  # a prescreened searcher's row: NAME+PROXY:K


def add_arguments(p):
    benches = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    s = benches.add_parser(
        "searchers", help="benchmark of the searchers (no training): planted cell or "
                          "NAS-Bench-201's table",
        description="planted: a hidden target cell pair, score = smooth function of the "
                    "fraction of matching decisions plus seeded noise, simulated asynchronous "
                    "workers. nas-bench-201: the table's 12-epoch validation accuracy is the "
                    "reward, the final pick is reported by its 12-epoch test accuracy; "
                    "queries are unique architectures (repeats answered from the cache). "
                    "Every searcher runs for --budget evaluations over --seeds seeds.")
    s.add_argument("--benchmark", default="planted", choices=list(BENCHMARKS),
                   help="planted (default) or nas-bench-201")
    add_dataset_option(s, "with --benchmark nas-bench-201, the table's columns used",
                       default=DEFAULT_DATASET)
    s.add_argument("--table", default=None, metavar="PATH",
                   help="nas-bench-201: a table file with the shipped table's columns "
                        "(default: the shipped 12-epoch table)")
    s.add_argument("--checkpoints", default="50,100", metavar="Q,Q",
                   help="nas-bench-201: query counts reported besides the budget (50,100)")
    s.add_argument("--plot", default=None, metavar="PATH",
                   help="nas-bench-201: write a PNG of the pick's validation accuracy "
                        "against queries (mean and +-1 std band per searcher)")
    s.add_argument("--budget", type=int, default=None,
                   help="evaluations per search (planted 1000, nas-bench-201 300)")
    s.add_argument("--seeds", type=int, default=10, help="searches per searcher (10)")
    s.add_argument("--first-seed", type=int, default=0, help="seeds are first..first+seeds-1")
    s.add_argument("--searchers", default=DEFAULT_SEARCHERS,
                   help=f"comma-separated registry names ({DEFAULT_SEARCHERS})")
    s.add_argument("--workers", type=int, default=8,
                   help="simulated asynchronous workers, i.e. proposals in flight (8)")
    s.add_argument("--blocks", type=int, default=5, help="blocks per cell B of the space (5)")
    s.add_argument("--noise", type=float, default=0.002,
                   help="std of the seeded score noise, accuracy units (0.002)")
    s.add_argument("--fail-rate", type=float, default=0.0,
                   help="probability that an evaluation fails (0)")
    s.add_argument("--rl-lr", type=float, default=BENCH_RL_LR,
                   help=f"Adam learning rate of the RL controller in this benchmark "
                        f"({BENCH_RL_LR}; the controller's own default is the paper's 0.00035)")
    s.add_argument("--rl-algorithm", choices=("ppo", "reinforce"), default="ppo")
    s.add_argument("--optuna-sampler", default="auto",
                   help="Optuna sampler name (auto = TPE multivariate + constant liar)")
    s.add_argument("--optuna-sampler-kwargs", default="{}", metavar="JSON",
                   help="extra sampler arguments, e.g. '{\"n_ei_candidates\": 8}'")
    s.add_argument("--optuna-stock-tpe", action="store_true",
                   help="Optuna's own TPESampler instead of nasforge's FastTPESampler "
                        "(same proposals, slower; for comparing the overhead)")
    s.add_argument("--prescreen", default=None, metavar="PROXY:K",
                   help="nas-bench-201: also run each listed searcher with a zero-cost proxy "
                        "prescreen (each query the best of K candidates by PROXY; the others "
                        "are screened, never queried), reported as NAME+PROXY:K")
    s.add_argument("--data", default=None, metavar="DIR",
                   help="--prescreen: the data the proxy's batch is drawn from (not needed "
                        "for synflow, params, flops)")
    s.add_argument("--prescreen-cache", default=None, metavar="PATH",
                   help="--prescreen: a JSON-lines file of proxy scores, read and extended "
                        "(each cell is scored once)")
    s.add_argument("--prescreen-seed", type=int, default=0,
                   help="--prescreen: the seed of the scored networks' weights and of the "
                        "proxy's batch (0), the same for every search seed, so runs over "
                        "other --first-seed ranges share the score cache")
    s.add_argument("--no-dedup", action="store_true", help="turn the duplicate cache off")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(run=run_searchers)


def _check(args):
    if args.budget is None:
        args.budget = BENCHMARKS[args.benchmark].default_budget
    for flag in ("budget", "seeds", "workers", "blocks"):
        if getattr(args, flag) < 1:
            raise UsageError(f"bench searchers: --{flag} must be >= 1, got {getattr(args, flag)}")
    if args.noise < 0 or not 0 <= args.fail_rate < 1 or args.rl_lr <= 0:
        raise UsageError("bench searchers: need --noise >= 0, 0 <= --fail-rate < 1, --rl-lr > 0")
    names = [n.strip() for n in args.searchers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SEARCHERS]
    if unknown or not names:
        raise UsageError(f"bench searchers: unknown searcher(s) {', '.join(unknown) or '(none)'}"
                         f" (known: {', '.join(SEARCHERS)})")
    try:
        kwargs = json.loads(args.optuna_sampler_kwargs)
        assert isinstance(kwargs, dict)
    except (ValueError, AssertionError):
        raise UsageError("bench searchers: --optuna-sampler-kwargs must be a JSON object") \
            from None
    if args.prescreen is not None and args.benchmark != "nas-bench-201":
        raise UsageError("bench searchers: --prescreen needs --benchmark nas-bench-201 (the "
                         "planted benchmark has no networks to score)")
    if "random" in names:
        names.remove("random")
    return ["random"] + names, kwargs


def searcher_settings(name: str, args, optuna_kwargs: dict) -> dict:
    """Config overrides of a searcher in this benchmark (everything else: its defaults)."""
    name = name.partition(PRESCREEN_MARK)[0]
    if name == "rl":
        return {"learning_rate": args.rl_lr, "algorithm": args.rl_algorithm}
    if name == "optuna":
        return {"sampler": args.optuna_sampler, "sampler_kwargs": optuna_kwargs,
                "fast_tpe": not args.optuna_stock_tpe}
    return {}


def run_searchers(args) -> int:
    import warnings

    import optuna

    names, optuna_kwargs = _check(args)
    bench = BENCHMARKS[args.benchmark]
    if args.plot and bench.plot is None:
        raise UsageError(f"bench searchers: --plot is not available for --benchmark "
                         f"{args.benchmark}")
    if bench.check is not None:
        bench.check(args)
    # quiet Optuna for this run only (restored, so in-process callers are unaffected)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            summary = bench.run(args, names, optuna_kwargs)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if bench.plot is not None and getattr(args, "plot", None):
        bench.plot(summary, args)
    if args.json:
        print(json.dumps(summary))
    else:
        print(bench.format(summary, args))
    return 0


def _over_seeds(args, names: list[str], optuna_kwargs: dict, run_one, describe) -> dict:
    """Every searcher over every seed of the benchmark: ``run_one(name, seed, settings)`` per
    search, then one progress line on stderr (``describe(result)``); ``{name: [result, ...]}``."""
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    results, start = {}, time.perf_counter()
    for name in names:
        settings = searcher_settings(name, args, optuna_kwargs)
        results[name] = []
        for k, seed in enumerate(seeds):
            result = run_one(name, seed, settings)
            results[name].append(result)
            if not args.quiet:
                print(f"bench: {name} seed {seed} ({k + 1}/{len(seeds)}): {describe(result)} "
                      f"[elapsed {time.perf_counter() - start:.0f} s]", file=sys.stderr,
                      flush=True)
    return results


def _run_all(args, names: list[str], optuna_kwargs: dict) -> dict:
    space = NasNetSpace(num_blocks=args.blocks)

    def run_one(name: str, seed: int, settings: dict):
        searcher = get_searcher(name, space, seed=seed, dedup=not args.no_dedup, **settings)
        task = PlantedTask(space, seed, noise=args.noise, fail_rate=args.fail_rate)
        return run_search(searcher, task, args.budget, args.workers, seed)

    records = _over_seeds(args, names, optuna_kwargs, run_one,
                          lambda rec: f"best {rec.best:.4f}, {rec.ms_per_proposal:.2f} "
                                      f"ms/proposal, {rec.wall_s:.1f} s")
    summary = summarize(records)
    common = {"budget": args.budget, "seeds": args.seeds, "first_seed": args.first_seed,
              "workers": args.workers, "blocks": args.blocks, "noise": args.noise,
              "fail_rate": args.fail_rate, "dedup": not args.no_dedup}
    for name in names:
        summary[name]["settings"] = {**common, **searcher_settings(name, args, optuna_kwargs)}
    return summary


def format_table(summary: dict, args) -> str:
    ref = summary["random"]["median_best"]
    lines = [f"planted-cell benchmark: budget {args.budget}, {args.seeds} seeds, "
             f"{args.workers} async workers, B={args.blocks}, noise {args.noise}, "
             f"RL lr {args.rl_lr} (controller default: the paper's 0.00035), {args.rl_algorithm}; "
             f"Optuna {args.optuna_sampler}{' (stock TPE)' if args.optuna_stock_tpe else ''}; "
             f"random's median best {ref:.4f}",
             "| searcher | median best | evals to random's best | ms/proposal, mean (max "
             "seed) | ms/proposal, last 100 (max seed) | cache hits (median) |",
             "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        reach = s["evals_to_random_best"]
        reached = sum(v is not None for v in s["evals_to_random_best_per_seed"])
        reach_txt = (f"{reach:.0f}" if reach is not None else "not reached") + \
            f" ({reached}/{len(s['evals_to_random_best_per_seed'])} seeds)"
        lines.append(f"| {name} | {s['median_best']:.4f} | {reach_txt} | "
                     f"{s['ms_per_proposal']:.2f} ({s['ms_per_proposal_max']:.2f}) | "
                     f"{s['ms_per_proposal_last100']:.2f} "
                     f"({s['ms_per_proposal_last100_max']:.2f}) | "
                     f"{s['cache_hits_median']:.0f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ nas-bench-201 (table)
def _prescreen(args, names: list[str]) -> list[str]:
    """With ``--prescreen``: the proxy's scorer (``args.scorer``) and the rows to add, one
    per searcher named in ``--searchers``, as NAME+PROXY:K."""
    args.scorer = None
    if args.prescreen is None:
        return []
    try:
        proxy, args.prescreen_k = parse_prescreen(args.prescreen)
    except ProxyError as e:
        raise UsageError(f"bench searchers: {e}") from None
    size = NB201_DATASETS[args.dataset].input_size
    if args.data is not None:
        batch = data_batch(load_data(args.data, split="search", seed=args.prescreen_seed),
                           seed=args.prescreen_seed)
    elif PROXIES[proxy].data_free:
        batch = shape_batch(size)
    else:
        raise UsageError(f"bench searchers: proxy {proxy!r} scores real images: give --data")
    args.scorer = nb201_scorer(proxy, batch, args.dataset, ScoreCache(args.prescreen_cache),
                               seed=args.prescreen_seed)
    listed = [n.strip() for n in args.searchers.split(",") if n.strip()]
    return [f"{n}{PRESCREEN_MARK}{args.prescreen}" for n in listed]


def _check_table(args):
    try:
        points = sorted({int(q) for q in args.checkpoints.split(",") if q.strip()})
    except ValueError:
        raise UsageError(f"bench searchers: --checkpoints must be comma-separated query "
                         f"counts, got {args.checkpoints!r}") from None
    if any(q < 1 for q in points):
        raise UsageError("bench searchers: --checkpoints must be >= 1")
    args.checkpoint_list = [q for q in points if q < args.budget] + [args.budget]
    args.task = TableTask(load_table(args.table), args.dataset)
    args.screened_names = _prescreen(args, [])
    # the 200-epoch sample only describes the shipped table's cells
    args.sample = load_sample(args.dataset) if args.table is None else None


def _run_table(args, names: list[str], optuna_kwargs: dict) -> dict:
    space = MemoHashSpace(args.dataset)
    names = names + args.screened_names

    def run_one(name: str, seed: int, settings: dict):
        base, screened, _ = name.partition(PRESCREEN_MARK)
        searcher = get_searcher(base, space, seed=seed, **settings)
        if screened:
            searcher = Prescreen(searcher, args.scorer, args.prescreen_k, args.scorer.proxy)
        return run_table_search(searcher, args.task, args.budget)

    runs = _over_seeds(args, names, optuna_kwargs, run_one,
                       lambda run: f"pick valid {run.pick_valid[-1]:.2f} test "
                                   f"{run.pick_test[-1]:.2f}, {run.repeats} repeats, "
                                   f"{run.screened} screened, {run.wall_s:.1f} s")
    summary = summarize_table(runs, args.task, args.checkpoint_list, sample=args.sample)
    common = {"benchmark": args.benchmark, "dataset": args.dataset,
              "table": args.task.table.source, "budget": args.budget, "seeds": args.seeds,
              "first_seed": args.first_seed, "reward": args.task.valid,
              "reported": args.task.test, "table_best_valid": args.task.best_valid(),
              "table_best_test": args.task.best_test(), "queries": "unique architectures"}
    for name in names:
        summary[name]["settings"] = {**common, **searcher_settings(name, args, optuna_kwargs)}
        if PRESCREEN_MARK in name:
            summary[name]["settings"].update(prescreen=args.prescreen,
                                             proxy_context=args.scorer.context)
            summary[name]["screened"] = {"mean": _mean_of([r.screened for r in runs[name]]),
                                         "per_seed": [r.screened for r in runs[name]]}
    if args.scorer is not None:  # the cache serves every prescreened searcher and seed
        for name in args.screened_names:
            summary[name]["settings"].update(cells_scored=args.scorer.computed,
                                             score_cache_hits=args.scorer.hits)
    return summary


def _mean_of(values) -> float:
    return float(np.mean(values)) if values else 0.0


def format_table_nb201(summary: dict, args) -> str:
    task = args.task
    lines = [f"NAS-Bench-201 {args.dataset}: reward {task.valid}, reported {task.test} (12-epoch "
             f"table, %); budget {args.budget} unique queries, {args.seeds} seeds; table best "
             f"valid {task.best_valid():.2f}, test {task.best_test():.2f}; p: one-sided "
             f"Mann-Whitney U against random on the pick's test accuracy",
             "| searcher | " + " | ".join(f"test @{q} (p)" for q in args.checkpoint_list) +
             " | valid regret @" + str(args.budget) + " | " +
             " | ".join(f"queries to top {f * 100:g}% (share)" for f in TOP_FRACTIONS) +
             " | repeats (mean) | 200-ep valid of pick (held) |",
             "|---" * (len(args.checkpoint_list) + 6) + "|"]
    for name, s in summary.items():
        cells = []
        for q in args.checkpoint_list:
            cp = s["checkpoints"][str(q)]
            p = cp.get("vs_random", {}).get("p_greater")
            cells.append(f"{cp['test']['mean']:.2f} +- {cp['test']['std']:.2f}" +
                         (f" ({p:.2g})" if p is not None else ""))
        regret = s["checkpoints"][str(args.budget)]["regret_valid"]
        cells.append(f"{regret['mean']:.2f} +- {regret['std']:.2f}")
        for f in TOP_FRACTIONS:
            top = s[f"top_{f * 100:g}pct"]
            med = "-" if top["median_queries"] is None else f"{top['median_queries']:.0f}"
            cells.append(f"{med} ({top['share_reached']:.0%})")
        cells.append(f"{s['repeats']['mean']:.0f}" + (
            f" (+{s['screened']['mean']:.0f} screened)" if "screened" in s else ""))
        ep = s.get("final_pick_200ep_valid")
        cells.append("-" if not ep or not ep["held"] else f"{ep['mean']:.2f} ({ep['held']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_table(summary: dict, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, s in summary.items():
        mean, std = np.array(s["curve"]["valid_mean"]), np.array(s["curve"]["valid_std"])
        q = np.arange(1, len(mean) + 1)
        ax.plot(q, mean, label=name)
        ax.fill_between(q, mean - std, mean + std, alpha=0.2)
    ax.axhline(args.task.best_valid(), color="k", lw=0.8, ls="--", label="table best")
    ax.set_xlabel("unique queries")
    ax.set_ylabel(f"pick's {args.task.valid} (%), mean +- std")
    ax.set_title(f"NAS-Bench-201 {args.dataset}, {args.seeds} seeds")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    plt.close(fig)


@dataclass(frozen=True)
class Benchmark:
    """One ``--benchmark``: how to check its options, run it, format it, plot it."""

    run: Callable
    format: Callable
    default_budget: int
    check: Callable | None = None
    plot: Callable | None = None


BENCHMARKS: dict[str, Benchmark] = {
    "planted": Benchmark(run=_run_all, format=format_table, default_budget=1000),
    "nas-bench-201": Benchmark(run=_run_table, format=format_table_nb201, default_budget=300,
                               check=_check_table, plot=plot_table),
}
