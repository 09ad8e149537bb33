"""Mutation check: how many small edits of the DSL and the searcher base do the tests catch?

    python benchmarks/mutation.py [--targets dsl,controllers_base] [--max-children 2]
                                  [--time-limit SECONDS] [--workdir /tmp/nasforge-mutation]

Runs mutmut (3.x) once per target below: every mutant (an operator, constant or call changed
in one function) is run against the target's fast tests; a mutant is *killed* when a test
fails, *survived* when they all pass, *timeout* when they run past mutmut's limit, *no_tests*
when none of the target's tests executes its function. Prints one JSON object per target and
file: killed / survived / timeout / no_tests / not_checked / total, ``score`` = (killed +
timeout) / total and ``score_covered`` = the same over mutants some test executes. Not part of
the default suite: it takes tens of minutes on 2 cores (``--time-limit`` stops a target early;
its figures then cover the mutants checked so far and say ``"complete": false``).

Why a staged copy and not ``mutmut run`` in the repository: ``controllers/`` and
``search_spaces/`` install as ``nasforge.controllers`` / ``nasforge.search_spaces``, while
mutmut names a mutant by its file path and imports the mutated copy from ``mutants/``; so the
script copies the package into ``WORKDIR/<target>/nasforge/`` with those two folders moved
inside it (file path == import path), copies ``tests/`` and ``pyproject.toml`` and writes the
target's ``[tool.mutmut]`` section there. The repository itself is never modified.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    mutate: tuple[str, ...]  # file globs in the staged layout (mutmut's only_mutate)
    tests: tuple[str, ...]  # test file globs relative to the repository root
    deselect: str = ""  # pytest -k expression: tests left out for speed (they cover other code)


TARGETS = {
    # tests/test_dsl*.py: every DSL test module, including property-based ones added later
    "dsl": Target(("nasforge/dsl/*",), ("tests/test_dsl*.py",)),
    # the two Optuna tests below take 50 s of a 90 s module and exercise Optuna, not the base
    "controllers_base": Target(("nasforge/controllers/base.py",), ("tests/test_controllers.py",),
                               deselect="not sqlite and not fast_tpe"),
}


def stage(target: Target, where: Path) -> list[str]:
    """Copy the package (import-path layout), tests and config into ``where``; returns the
    test files the target runs."""
    if where.exists():
        shutil.rmtree(where)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "nasforge", where / "nasforge", ignore=ignore)
    shutil.copytree(ROOT / "controllers", where / "nasforge" / "controllers", ignore=ignore)
    shutil.copytree(ROOT / "search_spaces", where / "nasforge" / "search_spaces", ignore=ignore)
    shutil.copytree(ROOT / "tests", where / "tests", ignore=ignore)
    tests = sorted(os.path.relpath(p, ROOT) for pattern in target.tests
                   for p in glob.glob(str(ROOT / pattern)))
    if not tests:
        raise SystemExit(f"no test files match {target.tests}")
    pytest_args = ["-x", "-q", "-p", "no:cacheprovider"]
    if target.deselect:
        pytest_args += ["-k", target.deselect]
    section = "\n".join([
        "",
        "[tool.mutmut]",
        'source_paths = ["nasforge"]',
        f"only_mutate = {json.dumps(list(target.mutate))}",
        f"pytest_add_cli_args = {json.dumps(pytest_args)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        "use_git_change_detection = false",
        "",
    ])
    (where / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + section)
    return tests


def run_target(name: str, target: Target, workdir: Path, max_children: int,
               time_limit: float | None) -> list[dict]:
    """Stage, run mutmut, and return the figures of each mutated file and of the target."""
    where = workdir / name
    tests = stage(target, where)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    log = open(where / "mutmut-run.log", "w")
    proc = subprocess.Popen(cmd, cwd=where, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        complete = proc.wait(timeout=time_limit) == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # mutmut and its forked workers
        proc.wait()
        complete = False
    log.close()
    rows = [_figures(f"{name}:{meta.name[:-len('.meta')]}", json.loads(meta.read_text()))
            for meta in sorted((where / "mutants").rglob("*.py.meta"))]
    rows = [r for r in rows if r["total"]]
    total = {k: sum(r[k] for r in rows) for k in COUNTS}
    return [dict(r, complete=complete) for r in rows] + [
        dict(_scores({"target": name, **total}), tests=tests, complete=complete)]


# mutmut's exit codes (mutmut.stats.status_by_exit_code); anything else counts as suspicious
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no_tests", 33: "no_tests",
          34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", None: "not_checked"}
COUNTS = ("killed", "survived", "timeout", "no_tests", "skipped", "suspicious", "not_checked",
          "total")


def _figures(label: str, meta: dict) -> dict:
    counts = dict.fromkeys(COUNTS, 0)
    for code in meta.get("exit_code_by_key", {}).values():
        counts[STATUS.get(code, "suspicious")] += 1
        counts["total"] += 1
    return _scores({"target": label, **counts})


def _scores(row: dict) -> dict:
    caught = row["killed"] + row["timeout"]
    checked = row["total"] - row["skipped"] - row["not_checked"]
    covered = checked - row["no_tests"]
    row["score"] = round(caught / checked, 4) if checked else None
    row["score_covered"] = round(caught / covered, 4) if covered else None
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help=f"comma-separated, of {', '.join(TARGETS)}")
    ap.add_argument("--max-children", type=int, default=2, help="mutants run in parallel")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds per target before mutmut is stopped (default: none)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nasforge-mutation"))
    args = ap.parse_args(argv)
    names = [n for n in args.targets.split(",") if n]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"unknown target(s) {', '.join(unknown)} (known: {', '.join(TARGETS)})",
              file=sys.stderr)
        return 2
    for name in names:
        for row in run_target(name, TARGETS[name], args.workdir, args.max_children,
                              args.time_limit):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
