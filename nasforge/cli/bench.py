"""``nasforge bench searchers``: the planted-cell benchmark (no training) of every searcher.

Prints a table (or one JSON object keyed by searcher name with ``--json``); progress goes to
stderr. Random search always runs: its median best is the reference of
``evals_to_random_best``.
"""
from __future__ import annotations

import json
import sys
import time

from nasforge.cli import UsageError
from nasforge.controllers import SEARCHERS, get_searcher
from nasforge.controllers.bench import PlantedTask, run_search, summarize
from nasforge.search_spaces import NasNetSpace

DEFAULT_SEARCHERS = "rl,evolution,optuna,random"
# The RL controller's own default is the paper's Adam lr 0.00035 (RLConfig). At that rate the
# policy barely moves in 1,000 children (50 updates; NASNet trained 20,000), so this benchmark
# runs it at a larger rate, stated in its output; --rl-lr 0.00035 measures the paper setting.
BENCH_RL_LR = 0.0035


def add_arguments(p):
    benches = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    s = benches.add_parser(
        "searchers", help="planted-cell benchmark of the searchers (no training)",
        description="Planted-cell benchmark: a hidden target cell pair, score = smooth function "
                    "of the fraction of matching decisions plus seeded noise; every searcher "
                    "runs for --budget evaluations over --seeds seeds with simulated "
                    "asynchronous workers.")
    s.add_argument("--budget", type=int, default=1000, help="evaluations per search (1000)")
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
    s.add_argument("--no-dedup", action="store_true", help="turn the duplicate cache off")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(run=run_searchers)


def _check(args):
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
    if "random" in names:
        names.remove("random")
    return ["random"] + names, kwargs


def searcher_settings(name: str, args, optuna_kwargs: dict) -> dict:
    """Config overrides of a searcher in this benchmark (everything else: its defaults)."""
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
    # quiet Optuna for this run only (restored, so in-process callers are unaffected)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            summary = _run_all(args, names, optuna_kwargs)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_table(summary, args))
    return 0


def _run_all(args, names: list[str], optuna_kwargs: dict) -> dict:
    space = NasNetSpace(num_blocks=args.blocks)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    records, start = {}, time.perf_counter()
    for name in names:
        settings = searcher_settings(name, args, optuna_kwargs)
        records[name] = []
        for k, seed in enumerate(seeds):
            searcher = get_searcher(name, space, seed=seed, dedup=not args.no_dedup, **settings)
            task = PlantedTask(space, seed, noise=args.noise, fail_rate=args.fail_rate)
            rec = run_search(searcher, task, args.budget, args.workers, seed)
            records[name].append(rec)
            if not args.quiet:
                print(f"bench: {name} seed {seed} ({k + 1}/{len(seeds)}): best {rec.best:.4f}, "
                      f"{rec.ms_per_proposal:.2f} ms/proposal, {rec.wall_s:.1f} s "
                      f"[elapsed {time.perf_counter() - start:.0f} s]", file=sys.stderr,
                      flush=True)
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
