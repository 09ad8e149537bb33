"""One-shot (weight-sharing) search: a supernet compiled from the same search space and op
registry as the stand-alone children (docs/reference.md section 9)."""
from nasforge.oneshot.supernet import (ArchitectureParameters, Candidate, Supernet,
                                       SupernetError, check_shareable, inherit_weights,
                                       path_one_hot, slot_candidates)
from nasforge.oneshot.choices import ChoiceLayout, Slot, SupernetFamily, choice_layout, family_of
from nasforge.oneshot.nas_bench_201 import Nb201Macro, Nb201Supernet
from nasforge.oneshot.darts_space import DartsMacro, DartsSupernet
from nasforge.oneshot.evaluate import (PathModel, SupernetEvaluator, recalibrate_batchnorm,
                                       search_with_supernet)

__all__ = ["ArchitectureParameters", "Candidate", "Supernet", "SupernetError", "check_shareable",
           "inherit_weights", "path_one_hot", "slot_candidates", "PathModel",
           "SupernetEvaluator", "recalibrate_batchnorm", "search_with_supernet",
           "ChoiceLayout", "Slot", "SupernetFamily", "choice_layout", "family_of", "Nb201Macro",
           "Nb201Supernet", "DartsMacro", "DartsSupernet"]
