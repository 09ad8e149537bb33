"""Distributed architecture search on Ray Tune (``nasforge search``).

``run_search(SearchConfig(...), "runs/name")`` runs a searcher (nasforge.controllers) over a
search space, one Ray Tune trial per child training (nasforge.train), and keeps the run folder
(``run_folder.py``): trials.jsonl, best_cell.json, the searcher's state, TensorBoard events.
Ray is imported only when a search runs.
"""
from nasforge.search.config import SearchConfig, SearchError
from nasforge.search.objectives import Goal, ModelSetting, register_static_metric
from nasforge.search.run_folder import (RunFolder, best_trial, is_run, ranked_trials,
                                        read_trials)
from nasforge.search.runner import SearchProgress, run_search

__all__ = ["SearchConfig", "SearchError", "RunFolder", "read_trials", "best_trial", "is_run",
           "ranked_trials", "run_search", "SearchProgress", "Goal", "ModelSetting",
           "register_static_metric"]

