"""Published cells as literal data (docs/reference.md section 3).

State indices (all but DARTS_V2, which keeps DARTS' genotype form): 0 = h_i, 1 = h_{i-1},
2 + k = block k. Block k applies ops[2k], ops[2k+1] to
states idx[2k], idx[2k+1] and adds the results. ``output`` lists the concatenated states.
"""
from nasforge.dsl import CellPair, cell_from_blocks, unused_from_used

SEP3, SEP5, SEP7 = "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7"
AVG3, MAX3, ID = "avg_pool_3x3", "max_pool_3x3", "identity"

# NASNet-A [P][TF]
NASNET_A = dict(
    normal=dict(ops=[SEP5, SEP3, SEP5, SEP3, AVG3, ID, AVG3, AVG3, SEP3, ID],
                idx=[0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
                output=[1, 2, 3, 4, 5, 6]),
    reduction=dict(ops=[SEP5, SEP7, MAX3, SEP7, AVG3, SEP5, ID, AVG3, SEP3, MAX3],
                   idx=[0, 1, 0, 1, 0, 1, 3, 2, 2, 0],
                   output=[3, 4, 5, 6]),
)

# AmoebaNet-A [TPU]; the paper's figure differs (the TPU maintainers call it a drawing mistake).
AMOEBANET_A = dict(
    normal=dict(ops=[AVG3, MAX3, SEP3, ID, ID, AVG3, SEP3, SEP5, AVG3, SEP3],
                idx=[0, 0, 1, 1, 0, 1, 0, 2, 5, 0],
                output=unused_from_used([1, 0, 1, 0, 0, 1, 0])),
    reduction=dict(ops=[SEP3, AVG3, MAX3, SEP7, MAX3, MAX3, SEP3, "conv_1x7_7x1", AVG3, SEP7],
                   idx=[1, 0, 0, 2, 1, 0, 4, 0, 1, 0],
                   output=unused_from_used([1, 1, 0, 0, 0, 0, 0])),
)

# PNASNet-5 [TF]: one cell; the reduction cell is the same cell run with stride 2.
_PNAS = dict(ops=[SEP5, MAX3, SEP7, MAX3, SEP5, SEP3, SEP3, MAX3, SEP3, ID],
             idx=[1, 1, 0, 0, 0, 0, 4, 0, 1, 0],
             output=unused_from_used([1, 1, 0, 0, 0, 0, 0]))
PNASNET_5 = dict(normal=_PNAS, reduction=_PNAS)

# DARTS-V2 [D] genotypes.py, in DARTS' own form: (op, input) per edge, two edges per node,
# inputs 0 = c_{k-2}, 1 = c_{k-1}, 2.. = earlier nodes; ops are DARTS' (search_spaces.darts).
DARTS_V2 = dict(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
)


def pair_from_blocks(name: str, spec: dict, network: dict | None = None,
                     op_args: dict | None = None) -> CellPair:
    return CellPair(
        cell_from_blocks(f"{name}/normal", reduction=False, op_args=op_args, **spec["normal"]),
        cell_from_blocks(f"{name}/reduction", reduction=True, op_args=op_args,
                         **spec["reduction"]),
        name=name, network=network)
