"""Objectives, constraints and Pareto fronts of a search (nasforge/search/objectives.py), and
how the searchers, the adapter's pre-training screen, the run folder, TensorBoard, compare and
export follow them. No Ray here (the Ray searches are in test_search.py); CPU, seconds."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from nasforge.cli import main
from nasforge.controllers import Result, get_searcher
from nasforge.search import RunFolder, SearchConfig, SearchError, best_trial, ranked_trials
from nasforge.search.objectives import (METRICS, Constraint, Goal, ModelSetting,
                                        ObjectiveError, Objective, hypervolume, parse_constraint,
                                        parse_objective, parse_objectives)
from nasforge.search_spaces import get_space


# ----------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text,expected", [
    ("val_acc", Objective("val_acc", "max")),
    ("mult_adds", Objective("mult_adds", "min")),  # a metric's natural direction
    ("val_acc:min", Objective("val_acc", "min")),
    (" params : max ", Objective("params", "max")),
])
def test_parse_objective(text, expected):
    assert parse_objective(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("mult_adds<=600e6", Constraint("mult_adds", "<=", 600e6)),
    ("params < 3.3e6", Constraint("params", "<", 3.3e6)),
    ("val_acc>=0.9", Constraint("val_acc", ">=", 0.9)),
    ("val_loss>1", Constraint("val_loss", ">", 1.0)),
])
def test_parse_constraint(text, expected):
    c = parse_constraint(text)
    assert c == expected
    assert parse_constraint(str(c)) == c  # the saved form parses back to the same


@pytest.mark.parametrize("args,match", [
    (["--objective", "top5"], "unknown metric 'top5'"),
    (["--objective", "val_acc:up"], "direction 'up' is not max or min"),
    (["--objectives", "val_acc:max,,mult_adds:min"], "separated by commas"),
    (["--objectives", "val_acc,val_acc:min"], "names a metric twice"),
    (["--constraint", "mult_adds=600e6"], "is malformed"),
    (["--constraint", "mult_adds<=lots"], "is not a number"),
    (["--constraint", "flops<=1e9"], "unknown metric 'flops'"),
    (["--objective", "val_acc", "--objectives", "val_acc,mult_adds"], "not both"),
    (["--objectives", "val_acc:max,mult_adds:min", "--searcher", "evolution"],
     "need a multi-objective searcher"),
])
def test_search_cli_refuses_bad_objectives_in_one_line(args, match, tmp_path, capsys):
    code = main(["search", "--recipe", "smoke", "--data", "synthetic", "--runs-dir",
                 str(tmp_path), "--gpus", "0", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and match in err[0], err
    assert not list(tmp_path.glob("*/config.json"))


def test_search_config_keeps_objectives_canonical_through_json():
    config = SearchConfig(objectives=("val_acc", "mult_adds"),
                          constraints=("params<=3.3e6",))
    assert config.objectives == ("val_acc:max", "mult_adds:min")
    assert config.constraints == ("params<=3300000.0",)
    again = SearchConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.goal.primary == Objective("val_acc", "max")
    with pytest.raises(SearchError, match="unknown metric"):
        SearchConfig(objectives=("accuracy",))


def test_every_metric_has_a_direction_and_the_static_ones_a_function():
    from nasforge.search.objectives import STATIC_METRICS

    assert {"val_acc", "params", "mult_adds"} <= set(METRICS)
    assert all(m.direction in ("max", "min") for m in METRICS.values())
    assert {n for n, m in METRICS.items() if m.static} == set(STATIC_METRICS)


# ------------------------------------------------------------------ feasibility and violation
def test_constraint_violation_is_zero_when_met_and_relative_to_the_bound_otherwise():
    c = parse_constraint("mult_adds<=600e6")
    assert c.violation(600e6) == 0.0 and c.violation(1.0) == 0.0
    assert c.violation(660e6) == pytest.approx(0.1)  # 10% over
    strict = parse_constraint("val_acc>0.5")
    assert strict.violation(0.5) > 0  # a strict bound hit exactly is violated
    assert strict.violation(0.4) == pytest.approx(0.2)


def test_static_metrics_match_nasforge_info_of_the_same_child(tmp_path):
    """The pre-training counts (meta device) equal those of ``nasforge.api.model_info`` for
    the same cell pair and network settings (the counter ``nasforge info`` prints)."""
    from nasforge.api import model_info
    from nasforge.search.objectives import measure_static

    space = get_space("nasnet")
    pair = space.to_graph(space.sample(np.random.default_rng(1)))
    setting = ModelSetting("cifar", 10, 32, 3, (("N", 1), ("filters", 8)))
    path = tmp_path / "child.json"
    path.write_text(pair.to_json())
    info = model_info(str(path), "cifar", N=1, filters=8, num_classes=10)
    assert measure_static(("params", "mult_adds"), pair, setting) == {
        "params": float(info["params"]), "mult_adds": float(info["mult_adds"])}


# -------------------------------------------------------------------- dominance, front, HV
def _r(trial, acc, ma, status="ok", feasible=None):
    rec = {"trial": trial, "status": status, "metrics": {"val_acc": acc, "mult_adds": ma}}
    if feasible is not None:
        rec["feasible"] = feasible
    return rec


GOAL2 = Goal.parse(["val_acc:max", "mult_adds:min"])
# A(0.9, 300) B(0.8, 200) C(0.85, 250) F(0.95, 400) are mutually non-dominated; D(0.7, 250) is
# dominated by C (same mult-adds, less accurate), E(0.9, 350) by A; G duplicates A; H is
# infeasible and I failed, whatever their values
RECORDS = [_r(0, 0.9, 300), _r(1, 0.8, 200), _r(2, 0.85, 250), _r(3, 0.7, 250),
           _r(4, 0.9, 350), _r(5, 0.95, 400), _r(6, 0.9, 300), _r(7, 0.99, 1, feasible=False),
           _r(8, 0.99, 1, status="failed")]


def test_dominance():
    assert GOAL2.dominates((0.85, 250), (0.7, 250))
    assert not GOAL2.dominates((0.9, 300), (0.9, 300))  # equal: neither
    assert not GOAL2.dominates((0.9, 300), (0.8, 200))
    assert not GOAL2.dominates((0.8, 200), (0.9, 300))


def test_front_by_hand():
    assert [r["trial"] for r in GOAL2.front(RECORDS)] == [0, 1, 2, 5]


def test_front_members_are_exactly_the_non_dominated_ones_on_random_points():
    """Property against a brute-force O(n^2) definition, on 3 objectives of random values."""
    rng = np.random.default_rng(0)
    goal = Goal.parse(["val_acc:max", "mult_adds:min", "params:min"])
    recs = [{"trial": i, "status": "ok",
             "metrics": {"val_acc": float(a), "mult_adds": float(b), "params": float(c)}}
            for i, (a, b, c) in enumerate(rng.integers(0, 6, size=(60, 3)))]
    vec = {r["trial"]: (r["metrics"]["val_acc"], -r["metrics"]["mult_adds"],
                        -r["metrics"]["params"]) for r in recs}
    expected = set()
    for i, v in vec.items():
        beaten = any(all(x >= y for x, y in zip(w, v)) and w != v for w in vec.values())
        first = min(j for j, w in vec.items() if w == v) == i
        if not beaten and first:
            expected.add(i)
    assert {r["trial"] for r in goal.front(recs)} == expected


def test_hypervolume_2d_by_hand():
    # the front A, B, C, F above with reference (val_acc 0, mult_adds 500): strips sorted by
    # accuracy: F 0.95 x (500-400) + A 0.9 x (400-300) + C 0.85 x (300-250) + B 0.8 x (250-200)
    assert GOAL2.hypervolume(RECORDS, (0.0, 500.0)) == pytest.approx(95 + 90 + 42.5 + 40)
    # points outside the reference box add nothing
    assert hypervolume([[1.0, 1.0], [5.0, 0.0]], [2.0, 2.0]) == pytest.approx(1.0)
    assert hypervolume([], [1.0, 1.0]) == 0.0


def test_hypervolume_2d_matches_a_grid_count():
    """Independent of the sweep: count the cells of a fine grid dominated by a point."""
    rng = np.random.default_rng(3)
    pts = rng.integers(0, 40, size=(12, 2)).tolist()
    ref = [40, 40]
    grid = sum(1 for x, y in itertools.product(range(40), range(40))
               if any(px <= x and py <= y for px, py in pts))
    assert hypervolume(pts, ref) == pytest.approx(grid)


def test_hypervolume_3d_by_hand():
    # two boxes of volume 2 overlapping in a unit cube: 2 + 2 - 1
    assert hypervolume([[1, 2, 2], [2, 1, 2]], [3, 3, 3]) == pytest.approx(3.0)


def test_reference_point_is_the_natural_bound_or_the_worst_value():
    assert GOAL2.reference_point(RECORDS) == (0.0, 400.0)  # accuracy 0; worst feasible MA
    assert GOAL2.reference_point(RECORDS, {"mult_adds": 1e3}) == (0.0, 1e3)


# ------------------------------------------------------------ the best-trial rule follows it
def test_best_and_ranking_follow_the_objective_and_skip_infeasible_trials():
    assert best_trial(RECORDS)["trial"] == 5  # 0.99s are infeasible / failed
    assert best_trial(RECORDS, "mult_adds:min")["trial"] == 1
    assert [r["trial"] for r in ranked_trials(RECORDS, "mult_adds")][:3] == [1, 2, 3]
    assert best_trial(RECORDS, "val_acc:min")["trial"] == 3


# ----------------------------------------------------------------------------- searchers
def test_optuna_gets_the_directions_and_learns_constraints():
    """Several objectives reach Optuna's study as its directions (NSGA-II by default); an
    infeasible result becomes a complete trial with its constraint values, which Optuna's
    samplers read (``FrozenTrial.constraints``), and never one of the study's best trials."""
    space = get_space("nasnet")
    s = get_searcher("optuna", space, seed=0, dedup=False,
                     objectives=(("val_acc", "maximize"), ("mult_adds", "minimize")))
    import optuna

    assert [d.name for d in s.study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert isinstance(s.sampler, optuna.samplers.NSGAIISampler)
    p, q = s.ask(2)
    s.tell(p, Result.infeasible({"mult_adds<=1.0": 5.0}, "too big", mult_adds=6.0))
    s.tell(q, Result("ok", {"val_acc": 0.5, "mult_adds": 1.0}, constraints={"mult_adds<=1.0":
                                                                            0.0}))
    t0, t1 = s.study.get_trials()
    assert t0.state.name == "COMPLETE" and t0.constraints == {"mult_adds<=1.0": 5.0}
    assert t1.constraints == {"mult_adds<=1.0": 0.0}
    assert [t.number for t in s.study.best_trials] == [t1.number]
    restored = get_searcher("optuna", space, seed=0, dedup=False,
                            objectives=(("val_acc", "maximize"), ("mult_adds", "minimize")))
    restored.load_state_dict(s.state_dict())  # constraint values survive the saved state
    assert restored.study.get_trials()[0].constraints == {"mult_adds<=1.0": 5.0}


def test_infeasible_results_rank_below_every_feasible_one_in_evolution_and_rl():
    space = get_space("nasnet")
    evo = get_searcher("evolution", space, seed=0, dedup=False, population_size=4,
                       sample_size=2)
    a, b = evo.ask(2)
    evo.tell(a, Result.infeasible({"params<=1.0": 1.0}, "too big", params=2.0))
    evo.tell(b, Result.ok(val_acc=0.1))
    assert [m["id"] for m in evo.population] == [b.id]  # never a parent
    assert evo.best()[0].id == b.id and evo.counts["infeasible"] == 1
    rl = get_searcher("rl", space, seed=0, dedup=False, direction="minimize",
                      objective="mult_adds")
    p, q = rl.ask(2)
    rl.tell(p, Result.ok(mult_adds=3e6))
    rl.tell(q, Result.infeasible({"params<=1.0": 1.0}))
    assert rl.reward(Result.infeasible({"params<=1.0": 1.0})) < rl.reward(
        Result.ok(mult_adds=3e6)) == -3e6


# ------------------------------------------------------------------- the pre-training screen
class _Recorder:
    def __init__(self):
        self.records, self.told_ids = [], []

    def asked(self, searcher, proposal, ray_trial_id):
        pass

    def epoch(self, proposal, metrics):
        pass

    def finished(self, record, traceback=None):
        self.records.append(record)

    def told(self, searcher, record):
        self.told_ids.append(record["trial"])


TINY_SETTING = ModelSetting("cifar", 10, 32, 3, (("N", 1), ("filters", 8)))


def _params_of_first(n: int, seed: int = 0) -> list[float]:
    from nasforge.search.objectives import measure_static

    space = get_space("nasnet")
    s = get_searcher("random", space, seed=seed, dedup=False)
    return [measure_static(("params",), space.to_graph(p.arch), TINY_SETTING)["params"]
            for p in s.ask(n)]


def test_adapter_never_hands_an_infeasible_proposal_to_ray(monkeypatch):
    """Ray trains only what ``suggest`` returns; every proposal over the params bound is
    recorded as infeasible (with its measured params and why), told to the searcher, and
    skipped without using the budget; the feasible ones go to Ray with their measurement."""
    from nasforge.search.adapter import TuneSearcherAdapter

    params = _params_of_first(8)
    bound = float(np.median(params))
    space = get_space("nasnet")
    searcher = get_searcher("random", space, seed=0, dedup=False)
    rec = _Recorder()
    adapter = TuneSearcherAdapter(searcher, space, rec, budget=3, resources={"cpu": 1},
                                  goal=Goal.parse(["val_acc"], [f"params<={bound!r}"]),
                                  model_setting=TINY_SETTING, infeasible_cap=100)
    configs = [adapter.suggest(f"r{i}") for i in range(4)]
    assert configs[3] == "FINISHED"
    handed = [c["nasforge"]["trial"] for c in configs[:3]]
    expected_feasible = [i for i, p in enumerate(params) if p <= bound][:3]
    assert handed == expected_feasible
    assert all(c["nasforge"]["static"]["params"] <= bound for c in configs[:3])
    refused = [i for i in range(max(handed)) if i not in handed]
    assert [r["trial"] for r in rec.records] == refused == rec.told_ids
    for r in rec.records:
        assert r["status"] == "infeasible" and r["ray_trial_id"] is None
        assert r["metrics"]["params"] == params[r["trial"]] > bound
        assert r["error"] == f"params={params[r['trial']]:.4g} violates params<={bound!r}"
    assert searcher.counts["infeasible"] == len(refused)


def test_adapter_stops_at_the_infeasible_cap():
    from nasforge.search.adapter import TuneSearcherAdapter

    space = get_space("nasnet")
    searcher = get_searcher("random", space, seed=0, dedup=False)
    rec = _Recorder()
    adapter = TuneSearcherAdapter(searcher, space, rec, budget=3, resources={"cpu": 1},
                                  goal=Goal.parse(["val_acc"], ["params<=1"]),
                                  model_setting=TINY_SETTING, infeasible_cap=3)
    assert adapter.suggest("r0") == "FINISHED"
    assert len(rec.records) == 3 and adapter.stop_request.reason == "infeasible"
    assert searcher.in_flight() == []


def test_a_trained_child_under_an_accuracy_floor_is_infeasible_for_ranking():
    from nasforge.search.adapter import TuneSearcherAdapter

    space = get_space("nasnet")
    searcher = get_searcher("random", space, seed=0, dedup=False)
    rec = _Recorder()
    goal = Goal.parse(["mult_adds:min"], ["val_acc>=0.5"])
    adapter = TuneSearcherAdapter(searcher, space, rec, budget=2, resources={"cpu": 1},
                                  goal=goal, model_setting=TINY_SETTING)
    adapter.suggest("a"), adapter.suggest("b")
    adapter.on_trial_complete("a", {"epoch": 1, "val_acc": 0.4, "final_status": "ok",
                                    "params": 1, "mult_adds": 2})
    adapter.on_trial_complete("b", {"epoch": 1, "val_acc": 0.6, "final_status": "ok",
                                    "params": 1, "mult_adds": 3})
    low, high = rec.records
    assert low["feasible"] is False and "val_acc=0.4 violates val_acc>=0.5" in low["error"]
    assert high["feasible"] is True
    assert best_trial(rec.records, goal.primary)["trial"] == high["trial"]
    assert searcher.counts == {"ok": 1, "failed": 0, "pruned": 0, "infeasible": 1}


# ------------------------------------------------- recorder: pareto.json, board, compare, export
def _run_with_records(tmp_path, goal: Goal, records: list[dict], board: bool = False):
    """A run folder whose trials went through the search's recorder (as in a search)."""
    from nasforge.search.board import SearchBoard
    from nasforge.search.runner import SearchRecorder

    space = get_space("nasnet")
    rng = np.random.default_rng(0)
    config = SearchConfig(searcher="random", trials=len(records), **goal.spec())
    run = RunFolder(tmp_path / "run").create({"format": "nasforge.search/1",
                                              "search": config.to_dict(), "setting": "cifar"})
    recorder = SearchRecorder(run, SearchBoard(run, "random", goal) if board else None, [],
                              len(records), 1, None, goal=goal)
    searcher = get_searcher("random", space, seed=0)
    for rec in records:
        p = searcher.ask(1)[0]
        pair = space.to_graph(space.sample(rng))
        rec.update(trial=p.id, hash=pair.canonical_hash(), arch=pair.to_dict(), tokens=[],
                   origin={"origin": "random"}, params=rec.get("params", 1),
                   mult_adds=rec["metrics"]["mult_adds"], wall_s=1.0, started_at=0.0,
                   finished_at=float(p.id), resources={"cpu": 1, "gpu": 0}, epochs=1)
        recorder.asked(searcher, p, "x")
        recorder.finished(rec)
        searcher.tell(p, Result.failed("not trained"))
        recorder.told(searcher, rec)
    if recorder.board is not None:
        recorder.board.close()
    return run, recorder


def test_pareto_json_holds_the_front_and_tensorboard_draws_it(tmp_path, monkeypatch):
    """pareto.json (replaced as the front changes) holds the front's members with their
    values and cells; TensorBoard gets the front image and, with no Graphviz, a matplotlib
    drawing of the best cell."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import nasforge.search.board as board_module  # the board's binding of dsl.cell.render

    def no_dot(dot_text, fmt):
        raise RuntimeError("rendering needs Graphviz's 'dot' program")

    monkeypatch.setattr(board_module, "render", no_dot)
    records = [_r(None, a, m) for _, a, m in
               [(0, 0.9, 300), (1, 0.8, 200), (2, 0.85, 250), (3, 0.7, 250)]]
    run, recorder = _run_with_records(tmp_path, GOAL2, records, board=True)
    doc = json.loads((run.path / "pareto.json").read_text())
    assert doc["objectives"] == ["val_acc:max", "mult_adds:min"]
    assert [m["trial"] for m in doc["members"]] == [0, 1, 2]
    assert doc["members"][1]["values"] == {"val_acc": 0.8, "mult_adds": 200}
    from nasforge.dsl import CellPair

    assert CellPair.from_dict(doc["members"][2]["arch"]).canonical_hash() == records[2]["hash"]
    events = EventAccumulator(str(run.path), size_guidance={"images": 0}).Reload()
    images = events.Tags()["images"]
    assert {"search/pareto_front", "search/best_cell"} <= set(images)
    assert len(events.Images("search/pareto_front")) == 3  # trials 0, 1, 2 changed the front
    assert {"search/best_val_acc", "search/pareto_front_size"} <= set(events.Tags()["scalars"])


def test_single_objective_mult_adds_min_is_followed_by_best_board_compare_export(tmp_path,
                                                                               capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nasforge.cli.compare import summarize
    from nasforge.dsl import CellPair

    goal = Goal.parse(["mult_adds:min"], ["val_acc>=0.5"])
    records = [_r(None, 0.9, 300), _r(None, 0.6, 200), _r(None, 0.4, 100, feasible=False),
               _r(None, 0.7, 250)]
    run, recorder = _run_with_records(tmp_path, goal, records, board=True)
    # best_cell.json: the fewest mult-adds among the trials that meet the accuracy floor
    best = CellPair.from_json((run.path / "best_cell.json").read_text())
    assert best.canonical_hash() == records[1]["hash"]
    scalars = EventAccumulator(str(run.path)).Reload()
    best_curve = [e.value for e in scalars.Scalars("search/best_mult_adds")]
    assert best_curve == [300, 200, 200, 200]
    assert "search/mult_adds_vs_val_acc" in scalars.Tags()["images"]
    row = summarize(run.path)
    assert row["objective"] == "mult_adds:min" and row["best"] == 200
    assert row["trials_to_best"] == 2 and row["best_val_acc"] == 0.9
    assert main(["compare", str(run.path)]) == 0
    assert "best mult_adds" in capsys.readouterr().out
    out = tmp_path / "best.json"
    assert main(["export", "best_cell", "--run", str(run.path), "--format", "json",
                 "-o", str(out)]) == 0
    assert CellPair.from_json(out.read_text()).canonical_hash() == records[1]["hash"]
    assert "mult_adds 200" in capsys.readouterr().err


def test_export_pareto_writes_every_front_member_and_compare_prints_the_hypervolume(
        tmp_path, capsys):
    from nasforge.dsl import CellPair

    records = [_r(None, a, m) for a, m in [(0.9, 300), (0.8, 200), (0.85, 250), (0.7, 250),
                                           (0.95, 400)]]
    run, _ = _run_with_records(tmp_path, GOAL2, records)
    assert main(["export", "best_cell", "--run", str(run.path), "--pareto", "--format",
                 "json"]) == 0
    paths = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "pareto_1_trial_0.json", "pareto_2_trial_1.json", "pareto_3_trial_2.json",
        "pareto_4_trial_4.json"]
    assert [CellPair.from_json(open(p).read()).canonical_hash() for p in paths] == \
        [records[i]["hash"] for i in (0, 1, 2, 4)]
    assert main(["compare", str(run.path), "--reference", "val_acc=0,mult_adds=500"]) == 0
    out = capsys.readouterr().out
    assert "hypervolume reference point: val_acc=0.0000 (given), mult_adds=500.0000 (given)" \
        in out
    assert f"{95 + 90 + 42.5 + 40:.4f}" in out  # the hand-computed value above
    assert main(["compare", str(run.path), "--json"]) == 0
    row, = json.loads(capsys.readouterr().out)
    assert row["front_size"] == 4 and row["reference"] == {"val_acc": 0.0, "mult_adds": 400}
    assert row["hypervolume"] == pytest.approx(0.9 * 100 + 0.85 * 50 + 0.8 * 50)
    # a single-objective run has no front to export
    one, _ = _run_with_records(tmp_path / "one", Goal(), [_r(None, 0.5, 1)])
    assert main(["export", "best_cell", "--run", str(one.path), "--pareto", "-f", "json"]) == 2
    assert "searched one objective" in capsys.readouterr().err


def test_cell_drawing_without_graphviz_is_a_png():
    from nasforge.dsl.draw import draw_png

    space = get_space("nasnet")
    png = draw_png(space.to_graph(space.sample(np.random.default_rng(0))))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_infinite_values_never_count():
    assert GOAL2.values(_r(0, math.nan, 1)) is None
    with pytest.raises(ObjectiveError, match=r"NAME\[:max\|min\]"):
        parse_objectives("")


def test_a_search_stopped_at_the_infeasible_cap_says_so_and_exits_1(tmp_path, capsys):
    from nasforge.cli.search import _report_end
    from nasforge.search.runner import describe_infeasible

    config = SearchConfig(trials=4, constraints=("params<=1",))
    summary = {"stopped": "infeasible", "broken": None, "finished": 1, "budget": 4,
               "infeasible_message": describe_infeasible(config)}
    assert _report_end(summary, tmp_path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nasforge: error: search stopped after 1 of 4 trials: 80 proposals violated "
                   "the constraints (params<=1.0) before training; the space is almost "
                   "entirely infeasible: loosen the constraints or raise max_infeasible"]


# ------------------------------------------------------------------ latency_ms (a table)
def _unit_table(tmp_path, monkeypatch, space_name="nasnet"):
    """A latency table for a tiny setting whose every entry is 1 ms: a network's predicted
    latency is then the number of its parts."""
    from nasforge.compiler.network import NetworkConfig
    from nasforge.latency import LatencyTable
    from nasforge.latency.measure import device_name
    from nasforge.latency.table import table_parts
    from nasforge.zoo import SETTINGS

    monkeypatch.setitem(SETTINGS, "tiny", NetworkConfig(stem="cifar", N=1, filters=4,
                                                        num_classes=10, input_size=32))
    space = get_space("nasnet")
    table = LatencyTable(device="cpu", device_name=device_name("cpu"), torch_version="any",
                         onnxruntime_version=None, threads=1, backend="torch", batch=1,
                         space=space_name, setting="tiny", input_size=32,
                         entries={p.key: 1.0 for p in table_parts(space, "tiny")})
    path = tmp_path / f"{space_name}.json"
    table.save(path)
    return space, str(path)


def test_latency_ms_is_the_tables_sum_over_the_childs_parts(tmp_path, monkeypatch):
    from nasforge.api import resolve
    from nasforge.latency.table import network_parts
    from nasforge.search.objectives import STATIC_METRICS

    space, path = _unit_table(tmp_path, monkeypatch)
    config = SearchConfig(constraints=("latency_ms<=100",), latency_table=path)
    assert config.goal.static_metrics() == ("latency_ms",)
    setting = ModelSetting("cifar", 10, 32, 3, (), path)
    pair = space.to_graph(space.sample(np.random.default_rng(3)))
    parts = network_parts(pair, resolve(pair, "tiny")[1])
    assert STATIC_METRICS["latency_ms"](pair, setting) == pytest.approx(len(parts))


def test_latency_ms_without_a_matching_table_is_bad_input(tmp_path, monkeypatch, capsys):
    _, other_space = _unit_table(tmp_path, monkeypatch, space_name="nasnet-ext")
    with pytest.raises(SearchError, match="latency_ms needs a per-op latency table"):
        SearchConfig(constraints=("latency_ms<=10",))
    with pytest.raises(SearchError, match="no objective or constraint uses latency_ms"):
        SearchConfig(latency_table=other_space)
    with pytest.raises(SearchError, match="built for space 'nasnet-ext'"):
        SearchConfig(constraints=("latency_ms<=10",), latency_table=other_space)
    assert main(["search", "--constraint", "latency_ms<=10", "--runs-dir", str(tmp_path),
                 "--latency-table", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.json" in err
