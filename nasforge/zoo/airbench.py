"""Keller Jordan's airbench94 network for CIFAR-10 (Jordan 2024, "94% on CIFAR-10 in 3.29
seconds on a single GPU"; KellerJordan/cifar10-airbench, ``make_net``) as a DSL chain.

Layer list: a fixed 2x2 patch-whitening conv (3 -> 24 channels, no padding; op
``patch_whiten``, initialised from training patches by the trainer when the recipe sets
``data_init_images``) -> GELU; three conv groups, each conv 3x3 -> 2x2 max pool -> BN -> GELU
-> conv 3x3 -> BN -> GELU (convs without bias, partial Dirac init); 3x3 max pool; a linear
classifier without bias; the logits times 1/9. airbench's widths are 64/256/256; the ``cifar``
setting uses 32/128/128 (about a quarter of the mult-adds), which the ``cifar-fast`` recipe
trains (its ``model_overrides``) to fit 2 CPU cores.

The BatchNorm scales are ordinary parameters here; airbench fixes them at 1, which the trainer
does for any model when the recipe sets ``bn_scale=False``.
"""
from __future__ import annotations

from nasforge.dsl import Cell, CellChain
from nasforge.zoo.registry import ZooEntry, register_model

WHITEN_KERNEL = 2  # pixels: side of the whitened patches
LOGIT_SCALE = 1 / 9  # airbench's ``scaling_factor`` on the logits
AIRBENCH_WIDTHS = (64, 256, 256)  # channels of the three conv groups in airbench94


def airbench(num_classes: int = 10, widths=AIRBENCH_WIDTHS, in_channels: int = 3) -> CellChain:
    """The airbench94 network at conv-group ``widths`` (see the module docstring)."""
    whiten_width = 2 * in_channels * WHITEN_KERNEL ** 2
    stem = Cell("whiten")
    x = stem.op("patch_whiten", stem.input(0), channels=whiten_width, kernel=WHITEN_KERNEL,
                node_id="whiten")
    stem.set_output([stem.op("act", x, act="gelu", node_id="act")])
    cells = [stem]
    for i, width in enumerate(widths):
        cell = Cell(f"group{i + 1}")
        x = cell.op("conv", cell.input(0), channels=width, kernel=3, bn=False, act="none",
                    init="dirac", node_id="conv1")
        x = cell.op("max_pool", x, stride=2, kernel=2, node_id="pool")
        x = cell.op("bn_act", x, act="gelu", node_id="norm1")
        x = cell.op("conv", x, channels=width, kernel=3, act="gelu", init="dirac",
                    node_id="conv2")
        cell.set_output([x])
        cells.append(cell)
    head = Cell("head")
    x = head.op("max_pool", head.input(0), stride=3, kernel=3, node_id="pool")
    x = head.op("linear", x, channels=num_classes, bias=False, node_id="fc")
    head.set_output([head.op("residual_scale", x, factor=LOGIT_SCALE, node_id="scale")])
    return CellChain(cells + [head], name="airbench", family="airbench")


register_model(ZooEntry(
    "airbench", "airbench", settings={"cifar": {"options": {"widths": (32, 128, 128)}}},
    build_chain=airbench,
    doc="Jordan 2024, airbench94 network (whitening conv, 3 conv groups, GELU); cifar setting "
        "at widths 32/128/128 (cifar-fast trains it at these widths)",
    reference="airbench94 make_net layer list (KellerJordan/cifar10-airbench)"))
