"""Registered ops, combines and activations. Importing this package fills the registries.

One module per kind of op: ``nasnet`` (NASNet's 13 and DARTS' dilated separable convs, TF
'SAME' padding, on ``layers``), ``conv_pool_linear`` (the single layers of hand-designed
networks), ``channel_groups`` (channel shuffle/split/slice/pad, grouped convs), ``attention``
(SE/CBAM/BAM gates, residual attention), ``selective_kernel``, ``deformable``, ``residual``
(stochastic depth, residual scaling, highway), ``lenet``, ``whitening``, ``nas_bench_201``
(NAS-Bench-201's none, skip_connect and ReLU-conv-BN edges), ``darts`` (the DARTS space's
ops as DARTS' own network builds them, ``darts_*``); ``combines`` and
``activations`` hold the generic combines and every activation.
"""
# imported for their side effect: filling the registries
from nasforge.ops import (activations, attention, channel_groups, combines,  # noqa: F401
                          conv_pool_linear, darts, deformable, lenet, nas_bench_201, nasnet,
                          residual, selective_kernel, whitening)
from nasforge.ops.nasnet import EXTENDED_OPS, NASNET_EXT_OPS, NASNET_OPS
from nasforge.registry import (ACTIVATIONS, COMBINES, OPS, create_activation, create_op,
                               register_activation, register_combine, register_op)

__all__ = ["NASNET_OPS", "EXTENDED_OPS", "NASNET_EXT_OPS", "OPS", "COMBINES", "ACTIVATIONS",
           "create_op", "create_activation", "register_op", "register_combine",
           "register_activation"]
