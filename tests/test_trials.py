"""nasforge.trials: the trial record reads and writes the run folders' lines unchanged; Status,
Direction and the search summary keep their JSON forms."""
from __future__ import annotations

import json
import math

import pytest

from nasforge.trials import (Direction, SearchSummary, Status, StopReason, TrialRecord,
                             rank_key)

# lines as run folders hold them (written by the search drivers before TrialRecord existed)
BLACK_BOX_OK = (
    '{"trial": 3, "ray_trial_id": "r3", "status": "ok", "hash": "ab12", "tokens": [1, 0, 2], '
    '"origin": {"origin": "mutation", "parent": 1}, "arch": {"normal": {}, "reduce": {}}, '
    '"metrics": {"val_acc": 0.61, "epoch": 2, "params": 1000.0}, "epochs": 2, "params": 1000, '
    '"mult_adds": 20000, "wall_s": 12.5, "train_s": 11.0, "restored_epoch": 0, '
    '"resources": {"cpu": 1, "gpu": 0.5}, "error": null, "failure": null, '
    '"started_at": 1700000000.0, "finished_at": 1700000012.5, '
    '"constraints": {"params<=2000.0": 0.0}, "feasible": true}')
ONE_SHOT_EPOCH = (
    '{"trial": 4, "status": "ok", "hash": "cd34", "tokens": [0, 1], '
    '"origin": {"origin": "darts", "epoch": 4}, "arch": {"normal": {}}, '
    '"metrics": {"val_acc": 0.4, "val_loss": null, "epoch": 4}, "epochs": 4, "params": 10, '
    '"mult_adds": 20, "wall_s": 3.0, "train_s": null, "restored_epoch": 0, '
    '"resources": {"cpu": 1.0, "gpu": 0.0}, "error": null, "failure": null, '
    '"started_at": 5.0, "finished_at": 8.0}')
FAILED_NAN = (
    '{"trial": 1, "ray_trial_id": "r1", "status": "failed", "hash": "ef", "tokens": [], '
    '"origin": {}, "arch": null, "metrics": {"val_acc": NaN}, "epochs": 0, "params": null, '
    '"mult_adds": null, "wall_s": 1.0, "train_s": 0.0, "restored_epoch": 0, "resources": {}, '
    '"error": "ValueError: bad", "failure": "error", "started_at": 0.0, "finished_at": 1.0}')
# an infeasible proposal as the screen wrote it: constraints/feasible before epochs and
# ray_trial_id last
OLD_REFUSAL = (
    '{"trial": 2, "status": "infeasible", "hash": "gh", "tokens": [3], "origin": {}, '
    '"arch": {}, "metrics": {"params": 5.0}, "constraints": {"params<=1.0": 4.0}, '
    '"feasible": false, "epochs": 0, "params": 5.0, "mult_adds": null, "wall_s": 0.0, '
    '"train_s": 0.0, "restored_epoch": 0, "resources": {"cpu": 1}, '
    '"error": "params=5 violates params<=1.0", "failure": null, "started_at": 9.0, '
    '"finished_at": 9.0, "ray_trial_id": null}')


@pytest.mark.parametrize("line", [BLACK_BOX_OK, ONE_SHOT_EPOCH, FAILED_NAN, OLD_REFUSAL])
def test_a_line_reads_back_and_writes_out_byte_for_byte(line):
    record = TrialRecord.from_json(json.loads(line))
    assert json.dumps(record.to_json(), allow_nan=True) == line


def test_a_new_record_writes_the_drivers_key_order():
    record = TrialRecord.from_json(json.loads(BLACK_BOX_OK))
    rebuilt = TrialRecord(**{f: getattr(record, f) for f in (
        "trial", "ray_trial_id", "status", "hash", "tokens", "origin", "arch", "metrics",
        "epochs", "params", "mult_adds", "wall_s", "train_s", "restored_epoch", "resources",
        "error", "failure", "started_at", "finished_at", "constraints", "feasible")})
    assert json.dumps(rebuilt.to_json()) == BLACK_BOX_OK


def test_a_refusal_line_reads_as_an_infeasible_record():
    record = TrialRecord.from_json(json.loads(OLD_REFUSAL))
    assert record.status is Status.INFEASIBLE and record.feasible is False
    assert record.ray_trial_id is None and not record.rankable


def test_keys_a_line_lacks_stay_absent_and_unknown_keys_stay():
    line = {"trial": 0, "status": "pruned", "metrics": {"val_acc": 0.2}, "note": "kept"}
    out = TrialRecord.from_json(line).to_json()
    assert "ray_trial_id" not in out and "constraints" not in out and "feasible" not in out
    assert out["note"] == "kept" and out["status"] == "pruned"


def test_a_record_reads_like_its_line():
    record = TrialRecord.from_json(json.loads(BLACK_BOX_OK))
    assert record["trial"] == 3 and record.get("feasible") is True
    assert record["status"] == "ok" and record.get("missing") is None
    assert dict(record) == json.loads(BLACK_BOX_OK)


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="'done' is not a valid Status"):
        TrialRecord(trial=0, status="done")


def test_statuses_are_their_json_text():
    assert json.dumps([Status.OK, Status.INFEASIBLE]) == '["ok", "infeasible"]'
    assert f"{Status.PRUNED}" == "pruned" and str(Status.FAILED) == "failed"
    assert Status("diverged") is Status.DIVERGED


@pytest.mark.parametrize("text,expected", [("max", Direction.MAX), ("maximize", Direction.MAX),
                                           ("min", Direction.MIN), ("minimize", Direction.MIN)])
def test_direction_accepts_both_spellings(text, expected):
    assert Direction.parse(text) is expected


def test_direction_sign_worse_and_optuna_name():
    assert (Direction.MAX.sign, Direction.MIN.sign) == (1.0, -1.0)
    assert Direction.MAX.worse(0.3, 0.7) == 0.3 and Direction.MIN.worse(0.3, 0.7) == 0.7
    assert Direction.MAX.worst([2, 5, 1]) == 1 and Direction.MIN.worst([2, 5, 1]) == 5
    assert (Direction.MAX.optuna, Direction.MIN.optuna) == ("maximize", "minimize")
    assert Direction.MAX.worst_value == -math.inf and Direction.MIN.worst_value == math.inf
    with pytest.raises(ValueError, match="direction 'up' is not one of max, min, maximize"):
        Direction.parse("up")


def test_rank_key_orders_best_first_then_lowest_id():
    values = [(0.5, 3), (0.7, 2), (0.7, 1), (0.2, 0)]
    assert [t for _, t in sorted(values, key=lambda v: rank_key(v[0], "max", v[1]))] == \
        [1, 2, 3, 0]
    assert [t for _, t in sorted(values, key=lambda v: rank_key(v[0], "min", v[1]))] == \
        [0, 3, 1, 2]


SUMMARY = {"run_dir": "runs/x", "searcher": "random", "budget": 4, "objective": "val_acc:max",
           "finished": 4, "failed": 1, "pruned": 0, "infeasible": 0, "best": 0.6,
           "best_val_acc": 0.6, "best_trial": 2, "best_hash": "ab", "best_cell": "c.json",
           "pareto_front": None, "stopped": None, "infeasible_message": None, "broken": None,
           "wall_s": 10.0, "device_s": 20.0}


def test_a_black_box_summary_has_no_one_shot_keys():
    summary = SearchSummary.from_json(SUMMARY)
    assert not summary.oneshot and summary.to_json() == SUMMARY


def test_a_one_shot_summary_has_status_and_epochs():
    data = {**SUMMARY, "stopped": "broken", "status": "diverged", "epochs": 3}
    summary = SearchSummary.from_json(data)
    assert summary.oneshot and summary.stopped is StopReason.BROKEN
    assert summary.status is Status.DIVERGED
    assert json.loads(json.dumps(summary.to_json())) == data
