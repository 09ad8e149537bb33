"""Residual Attention Networks (Wang et al. 2017, "Residual attention network for image
classification"): Attention-56 and Attention-92 for ImageNet as DSL chains.

Built from the paper's Table 2 and the authors' Caffe deploy prototxts
(fwang91/residual-attention-network ``Attention-56-deploy.prototxt``/``-92-``):

* pre-activation bottleneck residual units (BN-ReLU-1x1-BN-ReLU-3x3-BN-ReLU-1x1, the
  projection shortcut reading the pre-activated input), written as DSL nodes;
* an attention module is one cell: a residual unit (p = 1), the trunk T of two units (t = 2),
  the soft mask branch M reading the first unit's output (op ``soft_mask_branch``: 3 / 2 / 1
  max-pool levels in stages 1 / 2 / 3, r = 1 unit between poolings), the attention residual
  (1 + M) * T (combine ``attention_residual``) and a closing unit (p = 1);
* stem 7x7/2 conv-BN-ReLU and a 3x3/2 max pool, ceil mode (Caffe's rounding: 112 -> 56);
  stage 4 is three units; a closing BN-ReLU, global average pool and the 1000-way FC.

Attention-56 has 1/1/1 attention modules in stages 1/2/3, Attention-92 1/2/3. Where the paper
and the prototxt differ the prototxt is followed: its mask ends in TanH, where the paper's
text names a sigmoid (no parameters either way). The tengshaofeng PyTorch reimplementation is
not the reference: it adds the upsampled features to the down-path features as well as to the
skip units, and gives every unit a shortcut conv whether used or not, so its counts exceed the
paper's. Checked against the paper's counts (31.9M / 51.3M) and multiply-adds (6.2G / 10.4G).
"""
from __future__ import annotations

from functools import partial

from nasforge.dsl import Cell, CellChain
from nasforge.zoo.registry import ZooEntry, register_model
from nasforge.zoo.resnet import conv_bn_act

STAGE_WIDTHS = (256, 512, 1024, 2048)  # output channels of the units of stages 1-4
MASK_POOLS = (3, 2, 1)  # soft mask branch pooling levels of stages 1-3 (56, 28, 14 px maps)
MASK_ACT = "tanh"  # the authors' prototxt (the paper's text: sigmoid)


def preact_unit(cell: Cell, x: str, c_in: int, c_out: int, stride: int, prefix: str) -> str:
    """Add a pre-activation bottleneck unit (bottleneck width c_out / 4) reading ``x`` to
    ``cell``; returns the id of its sum node."""
    pre = cell.op("bn_act", x, node_id=f"{prefix}.bn")
    y = cell.op("conv", pre, channels=c_out // 4, kernel=1, padding=0, bn=False, act="none",
                node_id=f"{prefix}.conv1")
    y = cell.op("bn_act_conv", y, stride=stride, channels=c_out // 4, kernel=3,
                node_id=f"{prefix}.conv2")
    y = cell.op("bn_act_conv", y, channels=c_out, kernel=1, padding=0, node_id=f"{prefix}.conv3")
    shortcut = x if stride == 1 and c_in == c_out else cell.op(
        "conv", pre, stride=stride, channels=c_out, kernel=1, padding=0, bn=False, act="none",
        node_id=f"{prefix}.shortcut")
    return cell.combine("add", y, shortcut, node_id=prefix)


def unit_cell(c_in: int, c_out: int, stride: int, name: str) -> Cell:
    cell = Cell(name)
    cell.set_output([preact_unit(cell, cell.input(0), c_in, c_out, stride, "res")])
    return cell


def attention_module(channels: int, pools: int, name: str) -> Cell:
    """One attention module (p = 1, t = 2, r = 1; see the module doc)."""
    cell = Cell(name)
    first = preact_unit(cell, cell.input(0), channels, channels, 1, "trunk.res1")
    trunk = preact_unit(cell, first, channels, channels, 1, "trunk.res2")
    trunk = preact_unit(cell, trunk, channels, channels, 1, "trunk.res3")
    mask = cell.op("soft_mask_branch", first, pools=pools, units=1, act=MASK_ACT,
                   node_id="mask")
    fused = cell.combine("attention_residual", trunk, mask, node_id="fusion")
    cell.set_output([preact_unit(cell, fused, channels, channels, 1, "res")])
    return cell


def residual_attention_network(modules, num_classes: int = 1000,
                               name: str = "attention") -> CellChain:
    """``modules``: attention modules in stages 1-3 ((1, 1, 1): Attention-56)."""
    stem = Cell("stem")
    x = conv_bn_act(stem, stem.input(0), 64, 7, stride=2, padding=3, node_id="conv1")
    stem.set_output([stem.op("max_pool", x, stride=2, kernel=3, ceil_mode=True,
                             node_id="pool1")])
    cells, width = [stem], 64
    for stage, (count, pools) in enumerate(zip(modules, MASK_POOLS)):
        c_out = STAGE_WIDTHS[stage]
        cells.append(unit_cell(width, c_out, 1 if stage == 0 else 2, f"pre_res_{stage + 1}"))
        cells += [attention_module(c_out, pools, f"attention{stage + 1}_{i + 1}")
                  for i in range(count)]
        width = c_out
    c_out = STAGE_WIDTHS[3]
    cells += [unit_cell(width if i == 0 else c_out, c_out, 2 if i == 0 else 1, f"res4_{i + 1}")
              for i in range(3)]
    head = Cell("head")
    x = head.op("bn_act", head.input(0), node_id="bn")
    x = head.op("global_avg_pool", x, node_id="avgpool")
    head.set_output([head.op("linear", x, channels=num_classes, node_id="fc")])
    return CellChain(cells + [head], name=name, family="ResidualAttention")


for _name, _modules, _params in [("attention56", (1, 1, 1), "31.9M"),
                                 ("attention92", (1, 2, 3), "51.3M")]:
    register_model(ZooEntry(
        _name, "ResidualAttention", settings={"imagenet": {}},
        build_chain=partial(residual_attention_network, _modules, name=_name),
        reference=f"paper: Wang et al. 2017, Residual attention network for image "
                  f"classification, Table 2 / Table 6 ({_params}); layout from the authors' "
                  f"Caffe prototxt (fwang91/residual-attention-network)",
        doc=f"Wang et al. 2017, {_name.replace('attention', 'Attention-')} for ImageNet"))
