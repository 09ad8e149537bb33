"""``--prescreen PROXY:K`` in spos's search phase (issue 25): each candidate evaluated on the
supernet is the best of K proposals by the proxy; the others are recorded as ``screened`` with
their score and never evaluated; one-shot methods without a search phase refuse a prescreen
in one line. Tiny supernet (the test recipe of test_oneshot_search), synthetic data, CPU."""
import json

import pytest

from nasforge.cli import main
from nasforge.compiler.network import Network
from nasforge.dsl import CellPair
from nasforge.oneshot.run import SEARCH_PHASE_DONE, run_oneshot

from test_oneshot_constraints import MACRO, Spy, records, spos_config
from test_oneshot_search import TEST_RECIPE


def child_params(arch: dict) -> int:
    """A record's cell counted independently: the stand-alone child built by hand."""
    return sum(p.numel() for p in Network(CellPair.from_dict(arch), MACRO).parameters())


def test_spos_prescreen_records_screened_candidates_never_evaluated(tmp_path, monkeypatch,
                                                                      one_thread):
    spy = Spy(monkeypatch)
    run = tmp_path / "run"
    summary = run_oneshot(spos_config(candidates=3, prescreen="params:3"), run)
    phase = [r for r in records(run) if r["origin"].get("phase") == "search"]
    screened = [r for r in phase if r["status"] == "screened"]
    evaluated = [r for r in phase if r["status"] == "ok"]
    assert len(evaluated) == 3 and len(screened) == 2 * 3  # K - 1 per evaluated candidate
    # the supernet scored exactly the evaluated paths, none of the screened ones
    assert [p.canonical_hash() for p in spy.evaluated] == [r["hash"] for r in evaluated]
    assert not {r["hash"] for r in screened} & {r["hash"] for r in evaluated}
    by_trial = {r["trial"]: r for r in phase}
    epochs = TEST_RECIPE.schedule.epochs
    for r in screened:  # its score, and the candidate preferred to it has at least as many
        assert r["metrics"]["params"] == child_params(r["arch"])
        chosen = by_trial[epochs + 1 + int(r["error"].rsplit("candidate ", 1)[1].split()[0])]
        assert chosen["status"] == "ok"
        assert child_params(chosen["arch"]) >= r["metrics"]["params"]
    assert summary["finished"] == epochs + 3 and summary["infeasible"] == 0
    done = json.loads((run / SEARCH_PHASE_DONE).read_text())
    assert (done["evaluated"], done["screened"]) == (3, 6)
    assert len((run / "proxy_scores.jsonl").read_text().splitlines()) == 9


@pytest.mark.parametrize("method", ["darts"])
def test_one_shot_methods_without_a_search_phase_refuse_a_prescreen(method, tmp_path, capsys):
    rc = main(["search", "--searcher", method, "--recipe", TEST_RECIPE.name, "--data",
               "synthetic", "--runs-dir", str(tmp_path), "--name", "bad", "--prescreen",
               "synflow:4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert f"{method} has no candidates to prescreen" in err and "--prescreen" in err
    assert not (tmp_path / "bad").exists()
