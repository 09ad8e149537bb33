"""Registered ops and combines. Importing this package fills the registries."""
# imported for their side effect: filling the registries
from nasforge.ops import (classic, classic_cifar, classic_ext, classic_more, combines,  # noqa: F401
                          extended, nasnet, whitening)
from nasforge.ops import nas_bench_201  # noqa: F401
from nasforge.ops.extended import EXTENDED_OPS, NASNET_EXT_OPS
from nasforge.ops.nasnet import NASNET_OPS
from nasforge.registry import COMBINES, OPS, create_op, register_combine, register_op

__all__ = ["NASNET_OPS", "EXTENDED_OPS", "NASNET_EXT_OPS", "OPS", "COMBINES", "create_op",
           "register_op", "register_combine"]
