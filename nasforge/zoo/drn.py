"""Dilated Residual Networks (Yu, Koltun & Funkhouser 2017) as DSL chains: output stride 8.

* ``drn_a_50``: ResNet-50 with the strides of conv4/conv5 replaced by dilation 2/4, exactly
  torchvision's ``resnet50(replace_stride_with_dilation=[False, True, True])`` (the reference
  for parameters, 25,557,032, and weight import): the first block of a dilated stage keeps the
  previous dilation, the others use the new one.
* ``drn_c_26`` and ``drn_d_54``: the paper's Fig. 2 / Table 1 networks as in the authors' code
  (fyu/drn ``drn.py``, whose README lists 21.1M and 35.8M parameters): a stride-1 7x7 stem with
  16 channels, levels 1-2 of basic blocks (DRN-C) or plain 3x3 convs (DRN-D), levels 3-4 of
  residual blocks at strides 2, level 5 dilated by 2 and level 6 by 4, then the degridding
  levels 7 (dilation 2) and 8 (dilation 1) without residual connections; global average pool
  and a 1x1 conv classifier with bias. Op ids follow fyu/drn's module names.
"""
from __future__ import annotations

import copy
from functools import partial

from nasforge.dsl import Cell, CellChain
from nasforge.weights import load_resnet_state
from nasforge.zoo.registry import ZooEntry, register_model
from nasforge.zoo.resnet import basic_block, bottleneck_block, conv_bn_act, resnet

DRN_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)  # levels 1-8 (fyu/drn ``channels``)


def _dilate_cell(cell: Cell, dilation: int, drop_stride: bool = False) -> Cell:
    """The cell with ``dilation`` on its 3x3 convs, and stride 1 everywhere when
    ``drop_stride``."""
    for _, data in cell.graph.nodes(data=True):
        if data["kind"] != "op":
            continue
        if drop_stride:
            data["stride"] = 1
        if data["op"] == "conv" and data["args"].get("kernel") == 3 and dilation != 1:
            data["args"]["dilation"] = dilation
    return cell


def replace_stride_with_dilation(chain: CellChain, stages: tuple[bool, bool, bool]) -> CellChain:
    """torchvision's ``replace_stride_with_dilation`` on a ResNet chain (cells ``layerS.J``):
    for each flagged stage of layer2..layer4 the stride becomes dilation; its first block keeps
    the dilation before the stage, the later blocks use the doubled one."""
    chain = copy.deepcopy(chain)
    dilation = 1
    for stage, dilate in enumerate(stages, start=2):
        blocks = [c for c in chain.cells if c.name.startswith(f"layer{stage}.")]
        previous = dilation
        if dilate:
            dilation *= 2
        for j, cell in enumerate(blocks):
            _dilate_cell(cell, previous if j == 0 else dilation, drop_stride=dilate)
    return chain


def drn_a_50(num_classes: int = 1000) -> CellChain:
    """DRN-A-50: torchvision's dilated ResNet-50 (see the module doc)."""
    chain = replace_stride_with_dilation(resnet((3, 4, 6, 3), True, num_classes),
                                         (False, True, True))
    chain.name, chain.family = "drn_a_50", "DRN"
    return chain


def _drn_stem(arch: str) -> Cell:
    cell = Cell("layer0")
    node = "conv1" if arch == "C" else "layer0"
    cell.set_output([conv_bn_act(cell, cell.input(0), DRN_CHANNELS[0], 7, node_id=node)])
    return cell


def _conv_level(c_out: int, convs: int, stride: int, dilation: int, name: str) -> Cell:
    """DRN-D's plain levels: ``convs`` x (3x3 conv, dilation -> BN -> ReLU)."""
    cell = Cell(name)
    x = cell.input(0)
    for i in range(convs):
        x = conv_bn_act(cell, x, c_out, 3, stride if i == 0 else 1, dilation=dilation,
                        node_id=f"conv{i}")
    cell.set_output([x])
    return cell


def _plain_basic_block(channels: int, dilation: int, name: str) -> Cell:
    """DRN-C's degridding block: a basic block without its residual connection."""
    cell = Cell(name)
    x = conv_bn_act(cell, cell.input(0), channels, 3, dilation=dilation, node_id="conv1")
    cell.set_output([conv_bn_act(cell, x, channels, 3, dilation=dilation, node_id="conv2")])
    return cell


def _residual_level(arch_block: str, c_in: int, planes: int, blocks: int, stride: int,
                    dilation: int, level: int) -> tuple[list[Cell], int]:
    """fyu/drn's ``_make_layer`` with ``new_level=False`` dilations (levels 5-6 start at the
    level's own dilation); a projection shortcut where the shape changes."""
    cells = []
    for j in range(blocks):
        s = stride if j == 0 else 1
        if arch_block == "basic":
            cell, c_out = basic_block(c_in, planes, s), planes
        else:
            cell, c_out = bottleneck_block(c_in, planes, planes * 4, s), planes * 4
        cell.name = f"layer{level}.{j}"
        cells.append(_dilate_cell(cell, dilation))
        c_in = c_out
    return cells, c_in


def _drn_head(c_in: int, num_classes: int) -> Cell:
    cell = Cell("head")
    x = cell.op("global_avg_pool", cell.input(0), node_id="avgpool")
    cell.set_output([cell.op("conv", x, channels=num_classes, kernel=1, bias=True, bn=False,
                             act="none", node_id="fc")])
    return cell


def drn(arch: str, block: str, layers, num_classes: int = 1000, name: str = "drn") -> CellChain:
    """DRN-C or DRN-D (fyu/drn ``DRN``): ``layers`` counts blocks (C) or convs (D, levels 1-2
    and 7-8) per level 1-8; ``block`` is ``basic`` or ``bottleneck`` for levels 3-6."""
    cells, width = [_drn_stem(arch)], DRN_CHANNELS[0]
    for level, stride in ((1, 1), (2, 2)):
        c_out = DRN_CHANNELS[level - 1]
        if arch == "C":
            level_cells, width = _residual_level("basic", width, c_out, layers[level - 1],
                                                 stride, 1, level)
            cells += level_cells
        else:
            cells.append(_conv_level(c_out, layers[level - 1], stride, 1, f"layer{level}"))
            width = c_out
    for level, stride, dilation in ((3, 2, 1), (4, 2, 1), (5, 1, 2), (6, 1, 4)):
        level_cells, width = _residual_level(block, width, DRN_CHANNELS[level - 1],
                                             layers[level - 1], stride, dilation, level)
        cells += level_cells
    for level, dilation in ((7, 2), (8, 1)):
        c_out = DRN_CHANNELS[level - 1]
        for j in range(layers[level - 1]):
            cells.append(_plain_basic_block(c_out, dilation, f"layer{level}.{j}") if arch == "C"
                         else _conv_level(c_out, 1, 1, dilation, f"layer{level}.{j}"))
        width = c_out
    cells.append(_drn_head(width, num_classes))
    return CellChain(cells, name=name, family="DRN")


IMAGENET = {"imagenet": {}}
register_model(ZooEntry(
    "drn_a_50", "DRN", settings=IMAGENET, build_chain=drn_a_50,
    import_weights=load_resnet_state,
    reference="torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])",
    doc="Yu et al. 2017, DRN-A-50: ResNet-50 with conv4/conv5 dilated (output stride 8)"))
register_model(ZooEntry(
    "drn_c_26", "DRN", settings=IMAGENET,
    build_chain=partial(drn, "C", "basic", (1, 1, 2, 2, 2, 2, 1, 1), name="drn_c_26"),
    reference="fyu/drn drn_c_26 (authors' code; README: 21.1M params)",
    doc="Yu et al. 2017, DRN-C-26 (output stride 8)"))
register_model(ZooEntry(
    "drn_d_54", "DRN", settings=IMAGENET,
    build_chain=partial(drn, "D", "bottleneck", (1, 1, 3, 4, 6, 3, 1, 1), name="drn_d_54"),
    reference="fyu/drn drn_d_54 (authors' code; README: 35.8M params)",
    doc="Yu et al. 2017, DRN-D-54 (output stride 8)"))
