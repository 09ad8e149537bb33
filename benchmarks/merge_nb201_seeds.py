"""Merge ``nasforge bench searchers --benchmark nas-bench-201 --json`` outputs run over
seed ranges (``--first-seed``), e.g. a slow searcher run in chunks of a few seeds.

    python benchmarks/merge_nb201_seeds.py A.json B.json ... [--against evolution] [--json]

Results are keyed by seed (``settings.first_seed`` + position): a searcher may come from
different files than another (e.g. bananas from one set of runs, a prescreened searcher from
another, on the same seeds); a searcher run twice on one seed must agree there (it is
seeded), else the merge stops. Searchers are kept when they cover every seed of the union.
Per searcher kept: the pick's test accuracy at each checkpoint (mean, std
over all seeds), the queries to the table's top 1% and 0.1% (median over the seeds that got
there, share of seeds), and for every other searcher a one-sided Mann-Whitney U test
(``controllers.bench_table.mann_whitney_greater``) that its picks' test accuracy beats
``--against``'s, and the paired per-seed difference in queries to the top 0.1% (seeds where
both got there). Seeds are paired: every searcher ran the same seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nasforge.controllers.bench_table import TOP_FRACTIONS, mann_whitney_greater  # noqa: E402


def per_seed(files: list[dict]) -> dict[str, dict[int, dict]]:
    """``{searcher: {seed: {"test": {q: value}, "top_<f>pct": queries or None}}}`` from every
    file; ValueError where two files disagree on a searcher's seed."""
    out: dict[str, dict[int, dict]] = {}
    for f in files:
        for name, entry in f.items():
            first = entry["settings"]["first_seed"]
            for i in range(entry["seeds"]):
                rec = {"test": {q: cp["test_per_seed"][i]
                                for q, cp in entry["checkpoints"].items()},
                       **{f"top_{frac * 100:g}pct":
                          entry[f"top_{frac * 100:g}pct"]["per_seed"][i]
                          for frac in TOP_FRACTIONS}}
                seen = out.setdefault(name, {}).get(first + i)
                if seen is not None and seen != rec:
                    raise ValueError(f"{name}, seed {first + i}: two files disagree")
                out[name][first + i] = rec
    return out


def merge(files: list[dict], against: str) -> dict:
    seeds_of = per_seed(files)
    seeds = sorted(set().union(*(set(v) for v in seeds_of.values())))
    names = [n for n, v in seeds_of.items() if set(v) == set(seeds)]
    walls = {n: sum(f[n]["wall_s"] for f in files if n in f) for n in names}
    out = {}
    for name in names:
        runs = [seeds_of[name][s] for s in seeds]
        entry: dict = {"seeds": len(seeds), "seed_list": seeds, "checkpoints": {}}
        for q in runs[0]["test"]:
            test = [r["test"][q] for r in runs]
            cp = {"mean": round(float(np.mean(test)), 3),
                  "std": round(float(np.std(test, ddof=1)), 3), "per_seed": test}
            if name != against and against in names:
                ref = [seeds_of[against][s]["test"][q] for s in seeds]
                cp[f"p_greater_than_{against}"] = mann_whitney_greater(test, ref)[1]
            entry["checkpoints"][q] = cp
        for frac in TOP_FRACTIONS:
            key = f"top_{frac * 100:g}pct"
            reach = [r[key] for r in runs]
            got = [r for r in reach if r is not None]
            entry[key] = {"median_queries": float(np.median(got)) if got else None,
                          "share_reached": len(got) / len(reach), "per_seed": reach}
            if name != against and against in names:
                ref = [seeds_of[against][s][key] for s in seeds]
                both = [(a, b) for a, b in zip(reach, ref) if a is not None and b is not None]
                entry[key][f"paired_fewer_than_{against}"] = {
                    "seeds_both": len(both),
                    "median_difference": float(np.median([b - a for a, b in both]))
                    if both else None,
                    "seeds_fewer": sum(a < b for a, b in both)}
        entry["wall_s"] = round(walls[name], 1)  # summed over its files (repeats included)
        out[name] = entry
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--against", default="evolution")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    merged = merge([json.loads(Path(p).read_text()) for p in args.files], args.against)
    if args.json:
        print(json.dumps(merged, indent=1))
        return 0
    for name, e in merged.items():
        cps = ", ".join(f"@{q} {c['mean']:.2f} +- {c['std']:.2f}" +
                        (f" (p {c[f'p_greater_than_{args.against}']:.2g})"
                         if f"p_greater_than_{args.against}" in c else "")
                        for q, c in e["checkpoints"].items())
        tops = ", ".join(f"{k}: {v['median_queries']} ({v['share_reached']:.0%})"
                         for k, v in e.items() if k.startswith("top_"))
        print(f"{name} ({e['seeds']} seeds, {e['wall_s']} s): {cps}; {tops}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
