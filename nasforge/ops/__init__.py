"""Registered ops and combines. Importing this package fills the registries."""
from nasforge.ops import classic, classic_ext, combines, nasnet  # noqa: F401  (registration side effects)
from nasforge.ops.nasnet import NASNET_OPS
from nasforge.registry import COMBINES, OPS, create_op, register_combine, register_op

__all__ = ["NASNET_OPS", "OPS", "COMBINES", "create_op", "register_op", "register_combine"]
