"""Objectives and constraints in one-shot searches (issue 13, part 5): spos's search phase
screens every path with the black-box search's constraint screen (an infeasible path is never
evaluated on the supernet, is recorded as infeasible and told to the searcher so, and counts
toward the cap), its best cell follows the primary objective within the constraints, several
objectives write pareto.json; enas, darts and gdas refuse objectives and constraints in one
line. Tiny supernet (the test recipe of test_oneshot_search), synthetic data, CPU."""
import functools
import json
from dataclasses import replace

import pytest
import torch

from nasforge.cli import main
from nasforge.compiler.network import Network
from nasforge.dsl import CellPair
from nasforge.flops import count_mult_adds
from nasforge.oneshot.evaluate import SupernetEvaluator
from nasforge.oneshot.run import SEARCH_PHASE_DONE, run_oneshot
from nasforge.zoo import SETTINGS

from test_oneshot_search import METHOD_OPTIONS, OPTIONS, TEST_RECIPE, oneshot_config

# the stand-alone child of a path under the test recipe's macro, built here by hand: N=1, F=4,
# CIFAR layout, 10 classes, no auxiliary head (the supernet has none)
MACRO = replace(SETTINGS["cifar"], N=1, filters=4, num_classes=10, drop_path_keep_prob=1.0,
                aux_head=False)
# some paths of the test space meet it, some do not (the tests check both kinds occur)
BOUND = 1.2e6


def mult_adds(arch: dict) -> int:
    """A record's cell counted independently: nasforge's flop counter on the network."""
    return _count(json.dumps(arch, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _count(arch_json: str) -> int:
    return count_mult_adds(Network(CellPair.from_dict(json.loads(arch_json)), MACRO), 32, 3)[0]


def records(run_dir) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "trials.jsonl").read_text().splitlines()]


def spos_config(candidates=4, **kw):
    options = {**OPTIONS, **METHOD_OPTIONS["spos"], "candidates": candidates,
               **kw.pop("options", {})}
    return oneshot_config("spos", searcher_options=options, **kw)


class Spy:
    """Wraps ``SupernetEvaluator.evaluate`` and ``goal_searcher``: every path the supernet
    scores, and the searcher of the search phase."""

    def __init__(self, monkeypatch):
        import nasforge.oneshot.run as runner  # the driver's own binding of goal_searcher

        self.evaluated, self.searcher = [], None
        evaluate, make = SupernetEvaluator.evaluate, runner.goal_searcher

        def spy_evaluate(evaluator, arch):
            self.evaluated.append(evaluator.space.to_graph(arch))
            return evaluate(evaluator, arch)

        def spy_searcher(*args, **kwargs):
            self.searcher = make(*args, **kwargs)
            return self.searcher

        monkeypatch.setattr(SupernetEvaluator, "evaluate", spy_evaluate)
        monkeypatch.setattr(runner, "goal_searcher", spy_searcher)


@pytest.fixture(scope="module")
def constrained(tmp_path_factory):
    """A spos search under mult_adds <= BOUND: (run folder, summary, spy)."""
    mp = pytest.MonkeyPatch()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spy = Spy(mp)
        path = tmp_path_factory.mktemp("constrained") / "run"
        summary = run_oneshot(spos_config(constraints=(f"mult_adds<={BOUND!r}",)), path)
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return path, summary, spy


def test_spos_never_evaluates_an_infeasible_path_on_the_supernet(constrained):
    run, summary, spy = constrained
    recs = records(run)
    phase = [r for r in recs if r["origin"].get("phase") == "search"]
    refused = [r for r in phase if r["status"] == "infeasible"]
    evaluated = [r for r in phase if r["status"] == "ok"]
    assert refused and len(evaluated) == 4  # the test can fail both ways
    # the supernet scored exactly the evaluated records' paths, each within the bound
    assert [p.canonical_hash() for p in spy.evaluated] == [r["hash"] for r in evaluated]
    assert all(mult_adds(r["arch"]) <= BOUND for r in evaluated)
    for r in refused:  # recorded with the measured value and why, never scored
        assert r["metrics"]["mult_adds"] == r["mult_adds"] == mult_adds(r["arch"]) > BOUND
        assert r["feasible"] is False and r["error"] == \
            f"mult_adds={r['mult_adds']:.4g} violates mult_adds<={BOUND!r}"
        assert r["constraints"][f"mult_adds<={BOUND!r}"] > 0
    # told to the searcher as infeasible (what it learns to avoid), nothing left in flight
    assert spy.searcher.counts["infeasible"] == len(refused)
    assert spy.searcher.counts["ok"] == 4 and spy.searcher.in_flight() == []
    assert summary["infeasible"] == len(refused) and summary["stopped"] is None
    done = json.loads((run / SEARCH_PHASE_DONE).read_text())
    assert (done["evaluated"], done["infeasible"]) == (4, len(refused))


def test_spos_best_cell_is_within_the_constraint(constrained):
    run, summary, _ = constrained
    best = json.loads((run / "best_cell.json").read_text())
    assert mult_adds(best) <= BOUND
    for r in records(run):  # every epoch's derived cell is judged too, never ranked if over
        if r["origin"].get("phase") is None:
            assert r["feasible"] is (mult_adds(r["arch"]) <= BOUND)
    best_record = next(r for r in records(run) if r["trial"] == summary["best_trial"])
    assert CellPair.from_dict(best_record["arch"]).canonical_hash() == \
        CellPair.from_dict(best).canonical_hash()
    ok = [r for r in records(run) if r["status"] == "ok" and r["feasible"]]
    assert best_record["metrics"]["val_acc"] == max(r["metrics"]["val_acc"] for r in ok)
    assert best_record["params"] is not None and best_record["mult_adds"] == mult_adds(best)


def test_spos_minimizing_mult_adds_picks_the_smallest_evaluated_cell(tmp_path, one_thread):
    summary = run_oneshot(spos_config(objectives=("mult_adds:min",)), tmp_path / "run")
    recs = [r for r in records(tmp_path / "run") if r["status"] == "ok"]
    counts = {r["trial"]: mult_adds(r["arch"]) for r in recs}
    assert summary["objective"] == "mult_adds:min"
    assert summary["best"] == min(counts.values()) == counts[summary["best_trial"]]
    best = json.loads((tmp_path / "run" / "best_cell.json").read_text())
    assert mult_adds(best) == min(counts.values())


def test_multi_objective_spos_writes_the_pareto_front(tmp_path, one_thread):
    run = tmp_path / "run"
    summary = run_oneshot(spos_config(candidates=6, objectives=("val_acc:max", "mult_adds:min"),
                                      options={"evaluator": "random"}), run)
    points = {r["trial"]: (r["metrics"]["val_acc"], mult_adds(r["arch"]))
              for r in records(run) if r["status"] == "ok"}
    # the front by brute force: no other point at least as good in both and better in one
    front = sorted(t for t, (a, m) in points.items()
                   if not any(a2 >= a and m2 <= m and (a2, m2) != (a, m)
                              for a2, m2 in points.values())
                   and not any(points[u] == (a, m) and u < t for u in points))
    doc = json.loads((run / "pareto.json").read_text())
    assert doc["objectives"] == ["val_acc:max", "mult_adds:min"]
    assert [m["trial"] for m in doc["members"]] == front == summary["pareto_front"]
    assert all(m["values"]["mult_adds"] == points[m["trial"]][1] for m in doc["members"])
    assert main(["compare", str(run), "--json"]) == 0


def test_spos_stops_at_the_infeasible_cap_with_the_black_box_message(tmp_path, monkeypatch,
                                                                     one_thread, capsys):
    from nasforge.cli.search import _report_end

    spy = Spy(monkeypatch)
    summary = run_oneshot(spos_config(constraints=("mult_adds<=1",), max_infeasible=3),
                          tmp_path / "run")
    assert spy.evaluated == [] and summary["stopped"] == "infeasible"
    assert summary["infeasible"] == 3 and summary["best_cell"] is None
    assert _report_end(summary, tmp_path / "run") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nasforge: error: search stopped after 2 of 6 trials: 3 proposals violated "
                   "the constraints (mult_adds<=1.0) before evaluation on the supernet; the "
                   "space is almost entirely infeasible: loosen the constraints or raise "
                   "max_infeasible"]


def test_a_search_phase_cut_short_reruns_on_resume(constrained, tmp_path, one_thread):
    """Records of a phase without its end marker are dropped and the phase runs again (the
    same candidates: it is seeded); a finished phase is kept as it is."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(constrained[0], run)
    whole = (run / "trials.jsonl").read_text().splitlines()
    (run / SEARCH_PHASE_DONE).unlink()
    (run / "trials.jsonl").write_text("\n".join(whole[:5]) + "\n")  # killed mid-phase
    run_oneshot(run_dir=run, resume=True)
    strip = [{k: v for k, v in json.loads(ln).items()
              if k not in ("wall_s", "started_at", "finished_at")} for ln in whole]
    again = [{k: v for k, v in r.items() if k not in ("wall_s", "started_at", "finished_at")}
             for r in records(run)]
    assert again == strip
    run_oneshot(run_dir=run, resume=True)  # finished: nothing runs, nothing changes
    assert len(records(run)) == len(whole)


@pytest.mark.parametrize("method", ["enas", "darts", "gdas"])
@pytest.mark.parametrize("flag", [["--constraint", "mult_adds<=1e6"],
                                  ["--objective", "mult_adds:min"]])
def test_other_one_shot_methods_refuse_objectives_and_constraints(method, flag, tmp_path,
                                                                  capsys):
    rc = main(["search", "--searcher", method, "--recipe", TEST_RECIPE.name, "--data",
               "synthetic", "--runs-dir", str(tmp_path), "--name", "bad", *flag])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert f"{method} derives its cell from a trained distribution" in err
    assert "supported with spos" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("args, message", [
    (["--objectives", "val_acc:max,mult_adds:min"], "need a multi-objective searcher"),
    (["--constraint", "mult_adds=1"], "is malformed"),
    (["--constraint", "flops<=1"], "unknown metric 'flops'"),
    (["--objective", "val_acc:up"], "direction 'up' is not max or min"),
])
def test_spos_bad_goal_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    rc = main(["search", "--searcher", "spos", "--searcher-option", "evaluator=evolution",
               "--recipe", TEST_RECIPE.name, "--data", "synthetic", "--runs-dir",
               str(tmp_path), "--name", "bad", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err, err
    assert not (tmp_path / "bad").exists()
