"""ImageNet transfer: the found cell's network next to hand-designed baselines, trained
data-parallel on Ray Train with the one trainer, compared in one table.

``run_transfer(TransferConfig(cell=..., data=...), "runs/NAME")`` is what ``nasforge transfer``
runs; ``resolve_cell``, ``cell_spec``/``baseline_specs`` and ``spec_info`` build the networks
and their ``nasforge info`` figures.
"""
from nasforge.transfer.models import (ModelSpec, TransferError, baseline_specs, build, cell_spec,
                                      resolve_cell, spec_info)
from nasforge.transfer.run import (TransferConfig, TransferFailed, plan, plan_workers,
                                   run_transfer, table_markdown)

__all__ = ["TransferConfig", "TransferError", "TransferFailed", "ModelSpec", "run_transfer",
           "plan", "plan_workers", "resolve_cell", "cell_spec", "baseline_specs", "spec_info",
           "build", "table_markdown"]
