"""benchmarks/merge_nb201_seeds.py: bench searchers JSON run over seed chunks, merged by seed
(searchers from different files on the same seeds, a disagreement refused)."""
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "merge_nb201_seeds.py"
_spec = importlib.util.spec_from_file_location("merge_nb201_seeds", _PATH)
merge_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge_mod)


def entry(first, tests, tops):
    """A searcher's summary as bench searchers writes it: per-seed test accuracy at @10 and
    queries to the top 1% / 0.1% (same list for both here)."""
    return {"settings": {"first_seed": first}, "seeds": len(tests), "wall_s": 1.0,
            "checkpoints": {"10": {"test_per_seed": tests}},
            "top_1pct": {"per_seed": tops}, "top_0.1pct": {"per_seed": tops}}


def test_searchers_from_different_files_merge_by_seed():
    a0 = {"random": entry(0, [1.0, 2.0], [5, None]), "evo": entry(0, [3.0, 4.0], [2, 3])}
    a1 = {"random": entry(2, [5.0], [7]), "evo": entry(2, [6.0], [4])}
    b = {"random": entry(0, [1.0, 2.0, 5.0], [5, None, 7]),
         "new": entry(0, [7.0, 8.0, 9.0], [1, 1, 6])}
    out = merge_mod.merge([a0, a1, b], "evo")
    assert set(out) == {"random", "evo", "new"}
    assert out["evo"]["checkpoints"]["10"]["per_seed"] == [3.0, 4.0, 6.0]
    assert out["new"]["checkpoints"]["10"]["per_seed"] == [7.0, 8.0, 9.0]
    assert out["random"]["top_1pct"]["per_seed"] == [5, None, 7]
    assert out["random"]["top_1pct"]["share_reached"] == pytest.approx(2 / 3)
    paired = out["new"]["top_0.1pct"]["paired_fewer_than_evo"]  # evo - new: 1, 2, -2
    assert paired == {"seeds_both": 3, "median_difference": 1.0, "seeds_fewer": 2}
    # a searcher missing a seed of the union is left out
    assert set(merge_mod.merge([a0, b], "evo")) == {"random", "new"}


def test_a_searcher_that_disagrees_with_itself_on_a_seed_stops_the_merge():
    a = {"random": entry(0, [1.0], [5])}
    b = {"random": entry(0, [1.5], [5])}
    with pytest.raises(ValueError, match="random, seed 0"):
        merge_mod.merge([a, b], "evo")
