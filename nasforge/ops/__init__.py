"""Registered ops and combines. Importing this package fills the registries."""
from nasforge.ops import classic, combines, extended, nasnet  # noqa: F401 (registers)
from nasforge.ops.extended import EXTENDED_OPS, NASNET_EXT_OPS
from nasforge.ops.nasnet import NASNET_OPS
from nasforge.registry import COMBINES, OPS, create_op, register_combine, register_op

__all__ = ["NASNET_OPS", "EXTENDED_OPS", "NASNET_EXT_OPS", "OPS", "COMBINES", "create_op",
           "register_op", "register_combine"]
