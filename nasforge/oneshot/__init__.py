"""One-shot (weight-sharing) search: a supernet compiled from the same search space and op
registry as the stand-alone children (docs/reference.md section 9)."""
from nasforge.oneshot.supernet import (ArchitectureParameters, Candidate, Supernet,
                                       SupernetError, check_shareable, inherit_weights,
                                       path_one_hot, slot_candidates)
from nasforge.oneshot.evaluate import (PathModel, SupernetEvaluator, recalibrate_batchnorm,
                                       search_with_supernet)

__all__ = ["ArchitectureParameters", "Candidate", "Supernet", "SupernetError", "check_shareable",
           "inherit_weights", "path_one_hot", "slot_candidates", "PathModel",
           "SupernetEvaluator", "recalibrate_batchnorm", "search_with_supernet"]
