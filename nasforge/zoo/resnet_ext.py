"""ResNet-50 with the literature's building blocks: deformable convolutions (DCN), CBAM and BAM.

All three are torchvision's ResNet-50 layout (v1.5: the stride on the 3x3 conv, which the
authors' CBAM/BAM code also uses) with one change each, written with the registered ops of
``nasforge.ops.deformable`` and ``nasforge.ops.attention``; op node ids follow the reference
implementations' module names, so weight import is a name lookup
(``nasforge.weights.load_resnet_state``).

* ``dcn_resnet50``: the 3x3 convs of stages conv3-conv5 (``layer2``-``layer4``) deformable, the
  placement of DCNv2 (Zhu et al. 2019, section 4) and mmdetection's ``stage_with_dcn``; the
  offsets come from a 3x3 conv per deformable layer (mmdetection's ``conv2.conv_offset``).
  Option ``modulated=True`` makes them DCNv2's modulated convolutions. Reference: torchvision
  ``resnet50`` plus the offset convs; a torchvision ResNet-50 state dict imports with zero
  offsets, which gives torchvision's function exactly (DCN's initialisation).
* ``cbam_resnet50``: CBAM (Woo et al. 2018) in every bottleneck after ``bn3``, before the
  residual add, as the authors' code (Jongchan/attention-module). Reference: timm ``resnet50``
  with ``CbamModule(mlp_bias=True)`` as its attention layer (timm's default drops the MLP
  biases the paper's code has); 28,089,624 parameters, the paper's 28.09M.
* ``bam_resnet50``: BAM (Park et al. 2018) after stages conv2-conv4 (``layer1``-``layer3``),
  the "bottlenecks" where the resolution drops next, as the authors' code. No library has it;
  checked against the paper's 25.92M (the authors' code gives 25,915,099). BAM's paper sums
  the channel and spatial maps; the authors' code multiplies them, and so does the op.

The papers' GFLOPs (3.86 for ResNet-50 in CBAM/BAM tables) count ResNet v1 (stride on the first
1x1 conv), not the v1.5 layout their code builds (4.09G multiply-adds here), so multiply-adds are
not compared with them.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch

from nasforge.dsl import Cell, CellChain
from nasforge.ops.deformable import DeformConv
from nasforge.weights import load_resnet_state
from nasforge.zoo.registry import ZooEntry, register_model
from nasforge.zoo.resnet import classifier_head, conv_bn_act, imagenet_stem

RESNET50_LAYERS = (3, 4, 6, 3)
DEFORMABLE_STAGES = (2, 3, 4)  # torchvision's layer2..layer4 = the paper's conv3..conv5
BAM_AFTER_STAGES = (1, 2, 3)  # BAM after layer1..layer3 (the authors' bam1..bam3)
ATTENTION_REDUCTION = 16  # CBAM's and BAM's r


def attention_bottleneck(c_in: int, width: int, c_out: int, stride: int,
                         deformable: bool = False, modulated: bool = False,
                         block_gate: str | None = None) -> Cell:
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (stride; deformable if asked) -> 1x1 (-> gate op,
    node ``cbam`` as the authors' module) + shortcut -> ReLU."""
    cell = Cell(f"bottleneck_{c_in}_{width}_{c_out}_s{stride}" + ("_dcn" if deformable else ""))
    h0 = cell.input(0)
    x = conv_bn_act(cell, h0, width, 1, padding=0, node_id="conv1")
    if deformable:
        x = cell.op("deform_conv", x, stride=stride, channels=width, kernel=3,
                    modulated=modulated, node_id="conv2")
    else:
        x = conv_bn_act(cell, x, width, 3, stride, node_id="conv2")
    x = conv_bn_act(cell, x, c_out, 1, act="none", padding=0, node_id="conv3")
    if block_gate:
        x = cell.op(block_gate, x, reduction=ATTENTION_REDUCTION, node_id="cbam")
    shortcut = h0 if stride == 1 and c_in == c_out else \
        conv_bn_act(cell, h0, c_out, 1, stride, act="none", padding=0, node_id="downsample")
    total = cell.combine("add", x, shortcut, node_id="add")
    cell.set_output([cell.op("act", total, node_id="relu")])
    return cell


def stage_gate(name: str, op: str) -> Cell:
    """A one-op cell between stages (BAM's placement)."""
    cell = Cell(name)
    cell.set_output([cell.op(op, cell.input(0), reduction=ATTENTION_REDUCTION, node_id=name)])
    return cell


def resnet50_with(num_classes: int = 1000, deformable_stages=(), modulated: bool = False,
                  block_gate: str | None = None, gate_after_stages=(), stage_gate_op="bam_gate",
                  name: str = "resnet50", family: str = "ResNet") -> CellChain:
    """torchvision's ResNet-50 with deformable 3x3 convs in ``deformable_stages`` (1-based
    layer numbers), ``block_gate`` in every bottleneck, and ``stage_gate_op`` cells named
    ``bam{S}`` after the layers in ``gate_after_stages``."""
    cells, c_in = [imagenet_stem()], 64
    for stage, blocks in enumerate(RESNET50_LAYERS, start=1):
        planes = 64 * 2 ** (stage - 1)
        for j in range(blocks):
            cell = attention_bottleneck(c_in, planes, planes * 4, 2 if stage > 1 and j == 0
                                        else 1, stage in deformable_stages, modulated,
                                        block_gate)
            cell.name = f"layer{stage}.{j}"
            cells.append(cell)
            c_in = planes * 4
        if stage in gate_after_stages:
            cells.append(stage_gate(f"bam{stage}", stage_gate_op))
    cells.append(classifier_head(num_classes))
    return CellChain(cells, name=name, family=family)


# ---------------------------------------------------------------------------- weight import
def load_dcn_resnet_state(model, state: dict):
    """Copy a deformable ResNet-50 state dict (mmdetection layout: ``layerS.J.conv2.weight`` +
    ``layerS.J.conv2.conv_offset.{weight,bias}``) into the zoo's ``dcn_resnet50``. A plain
    torchvision ResNet-50 state dict has no offset convs: they are imported as zeros, DCN's
    initialisation, so the model computes torchvision's function."""
    offset_channels = next(m.conv_offset.out_channels for m in model.modules()
                           if isinstance(m, DeformConv))
    deformable = tuple(f"layer{s}." for s in DEFORMABLE_STAGES)
    full = OrderedDict()
    for key, value in state.items():
        full[key] = value
        prefix = key[:-len("conv2.weight")]
        if key.endswith(".conv2.weight") and key.startswith(deformable) and \
                f"{prefix}conv2.conv_offset.weight" not in state:
            full[f"{prefix}conv2.conv_offset.weight"] = value.new_zeros(
                offset_channels, value.shape[1], *value.shape[2:])
            full[f"{prefix}conv2.conv_offset.bias"] = value.new_zeros(offset_channels)
    return load_resnet_state(model, full)


def load_timm_cbam_resnet_state(model, state: dict):
    """Copy timm's ``resnet50`` built with ``CbamModule(mlp_bias=True)`` attention into the zoo's
    ``cbam_resnet50``: timm's 1x1-conv MLP becomes our linears, and its spatial conv's two input
    channels ([mean, max] there, the authors' [max, mean] here) swap."""
    ours = OrderedDict()
    for key, value in state.items():
        if ".se." in key:
            key = key.replace(".se.", ".cbam.")
            if ".channel.fc" in key and key.endswith("weight"):
                value = value[:, :, 0, 0]
            elif key.endswith("spatial.conv.conv.weight"):
                value = torch.flip(value, [1])
        ours[key] = value
    return load_resnet_state(model, ours)


IMAGENET = {"imagenet": {}}
register_model(ZooEntry(
    "dcn_resnet50", "DCN", settings=IMAGENET, import_weights=load_dcn_resnet_state,
    reference="torchvision.models.resnet50 + zero-initialised offset convs (mmdetection layout)",
    build_chain=partial(resnet50_with, deformable_stages=DEFORMABLE_STAGES,
                        name="dcn_resnet50", family="DCN"),
    doc="Dai et al. 2017 (DCN); conv3-conv5 3x3 convs deformable as DCNv2 (Zhu et al. 2019); "
        "option modulated=True: DCNv2's modulated convolutions"))
register_model(ZooEntry(
    "cbam_resnet50", "CBAM", settings=IMAGENET, import_weights=load_timm_cbam_resnet_state,
    reference="timm resnet50 with CbamModule(mlp_bias=True) attention; paper 28.09M",
    build_chain=partial(resnet50_with, block_gate="cbam_gate", name="cbam_resnet50",
                        family="CBAM"),
    doc="Woo et al. 2018 (CBAM) on ResNet-50, the authors' code"))
register_model(ZooEntry(
    "bam_resnet50", "BAM", settings=IMAGENET,
    reference="the BAM paper's 25.92M (Park et al. 2018; no library implementation)",
    build_chain=partial(resnet50_with, gate_after_stages=BAM_AFTER_STAGES, name="bam_resnet50",
                        family="BAM"),
    doc="Park et al. 2018 (BAM) on ResNet-50, the authors' code (channel x spatial maps)"))
