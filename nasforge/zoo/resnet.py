"""Residual networks as DSL chains: ResNet, ResNeXt, wide ResNet, and their CIFAR variants.

Blocks are cells with one input; op node ids follow torchvision's module names (``conv1``,
``conv2``, ``conv3``, ``downsample``) so weight import is a name lookup.
"""
from __future__ import annotations

import math
from functools import partial

from nasforge.dsl import Cell, CellChain
from nasforge.weights import load_resnet_state
from nasforge.zoo.registry import ZooEntry, register_model


def conv_bn_act(cell, src, channels, kernel, stride=1, act="relu", node_id=None, **kw):
    """Add a ``conv`` op node (conv -> BN -> act) to ``cell``; returns its id."""
    return cell.op("conv", src, stride=stride, channels=channels, node_id=node_id,
                   kernel=kernel, act=act, **kw)


def imagenet_stem(width: int = 64) -> Cell:
    """7x7/2 conv -> BN -> ReLU -> 3x3/2 max pool."""
    cell = Cell("stem")
    h0 = cell.input(0)
    x = conv_bn_act(cell, h0, width, 7, stride=2, padding=3, node_id="conv1")
    cell.set_output([cell.op("max_pool", x, stride=2, kernel=3, padding=1, node_id="maxpool")])
    return cell


def classifier_head(num_classes: int, name: str = "head", dropout: float = 0.0) -> Cell:
    """global average pool -> (dropout) -> fully connected."""
    cell = Cell(name)
    x = cell.op("global_avg_pool", cell.input(0), node_id="avgpool")
    if dropout:
        x = cell.op("dropout", x, p=dropout, node_id="dropout")
    cell.set_output([cell.op("linear", x, channels=num_classes, node_id="fc")])
    return cell


def _residual_output(cell, branch, shortcut, act="relu"):
    total = cell.combine("add", branch, shortcut, node_id="add")
    cell.set_output([cell.op("act", total, act=act, node_id="relu") if act != "none" else total])


def basic_block(c_in: int, c_out: int, stride: int, survival: float = 1.0) -> Cell:
    """Two 3x3 convs; projection shortcut (1x1 conv + BN) when shape changes. ``survival``
    < 1 ends the residual branch in a ``stochastic_depth`` op (Huang et al. 2016)."""
    cell = Cell(f"basic_{c_in}_{c_out}_s{stride}")
    h0 = cell.input(0)
    x = conv_bn_act(cell, h0, c_out, 3, stride, node_id="conv1")
    x = conv_bn_act(cell, x, c_out, 3, act="none", node_id="conv2")
    if survival < 1.0:
        x = cell.op("stochastic_depth", x, survival=survival, node_id="stochastic_depth")
    shortcut = h0 if stride == 1 and c_in == c_out else \
        conv_bn_act(cell, h0, c_out, 1, stride, act="none", padding=0, node_id="downsample")
    _residual_output(cell, x, shortcut)
    return cell


def bottleneck_block(c_in: int, width: int, c_out: int, stride: int, groups: int = 1,
                     se_reduction: int | None = None) -> Cell:
    """1x1 -> 3x3 (stride, groups) -> 1x1 (-> squeeze-excite), ResNet v1.5 as in torchvision
    and timm's SE-ResNet."""
    cell = Cell(f"bottleneck_{c_in}_{width}x{groups}_{c_out}_s{stride}")
    h0 = cell.input(0)
    x = conv_bn_act(cell, h0, width, 1, padding=0, node_id="conv1")
    x = conv_bn_act(cell, x, width, 3, stride, groups=groups, node_id="conv2")
    x = conv_bn_act(cell, x, c_out, 1, act="none", padding=0, node_id="conv3")
    if se_reduction:
        x = cell.op("squeeze_excite", x, reduction=se_reduction, node_id="se")
    shortcut = h0 if stride == 1 and c_in == c_out else \
        conv_bn_act(cell, h0, c_out, 1, stride, act="none", padding=0, node_id="downsample")
    _residual_output(cell, x, shortcut)
    return cell


def resnet(layers, bottleneck: bool, num_classes: int = 1000, groups: int = 1,
           width_per_group: int = 64, se_reduction: int | None = None,
           name: str = "resnet") -> CellChain:
    """torchvision's ResNet/ResNeXt/wide ResNet layout (timm's SE-ResNet with se_reduction)."""
    cells, c_in = [imagenet_stem()], 64
    for stage, blocks in enumerate(layers):
        planes = 64 * 2 ** stage
        for j in range(blocks):
            stride = 2 if stage > 0 and j == 0 else 1
            if bottleneck:
                width = int(planes * width_per_group / 64) * groups
                cell = bottleneck_block(c_in, width, planes * 4, stride, groups, se_reduction)
                c_in = planes * 4
            else:
                cell = basic_block(c_in, planes, stride)
                c_in = planes
            cell.name = f"layer{stage + 1}.{j}"
            cells.append(cell)
    cells.append(classifier_head(num_classes))
    return CellChain(cells, name=name, family="ResNet")


# ------------------------------------------------------------------------------ CIFAR nets
def cifar_stem(width: int, act: str = "relu") -> Cell:
    cell = Cell("stem")
    cell.set_output([conv_bn_act(cell, cell.input(0), width, 3, act=act, bn=act != "none",
                           node_id="conv1")])
    return cell


def preact_basic_block(c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> Cell:
    """Wide ResNet block: BN-ReLU-conv3x3(stride) -> BN-ReLU-(dropout)-conv3x3; the projection
    shortcut reads the pre-activated input."""
    cell = Cell(f"preact_basic_{c_in}_{c_out}_s{stride}")
    h0 = cell.input(0)
    pre = cell.op("bn_act", h0, node_id="bn1")
    x = cell.op("conv", pre, stride=stride, channels=c_out, kernel=3, bn=False, act="none",
                node_id="conv1")
    x = cell.op("bn_act", x, node_id="bn2")
    if dropout:
        x = cell.op("dropout", x, p=dropout, node_id="dropout")
    x = cell.op("conv", x, channels=c_out, kernel=3, bn=False, act="none", node_id="conv2")
    shortcut = h0 if stride == 1 and c_in == c_out else cell.op(
        "conv", pre, stride=stride, channels=c_out, kernel=1, padding=0, bn=False, act="none",
        node_id="shortcut")
    _residual_output(cell, x, shortcut, act="none")
    return cell


def preact_bottleneck_block(c_in: int, planes: int, stride: int) -> Cell:
    """Pre-activation bottleneck (He et al. 2016): BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 (x4)."""
    cell = Cell(f"preact_bottleneck_{c_in}_{planes}_s{stride}")
    h0 = cell.input(0)
    pre = cell.op("bn_act", h0, node_id="bn1")
    x = cell.op("conv", pre, channels=planes, kernel=1, padding=0, bn=False, act="none",
                node_id="conv1")
    x = cell.op("bn_act_conv", x, stride=stride, channels=planes, kernel=3, node_id="conv2")
    x = cell.op("bn_act_conv", x, channels=planes * 4, kernel=1, padding=0, node_id="conv3")
    shortcut = h0 if stride == 1 and c_in == planes * 4 else cell.op(
        "conv", pre, stride=stride, channels=planes * 4, kernel=1, padding=0, bn=False,
        act="none", node_id="shortcut")
    _residual_output(cell, x, shortcut, act="none")
    return cell


def stochastic_depth_survival(block: int, blocks: int, final_survival: float) -> float:
    """Huang et al. 2016's linear decay rule: block l of L (1-based) survives with
    probability p_l = 1 - l / L * (1 - p_L)."""
    return 1.0 - block / blocks * (1.0 - final_survival)


def cifar_resnet(depth: int, num_classes: int = 10, stochastic_depth: float = 1.0) -> CellChain:
    """He et al. 2016 CIFAR ResNet (6n+2 layers, widths 16/32/64); projection shortcuts
    (option B) where the shape changes, instead of the paper's zero padding (option A).

    ``stochastic_depth`` = p_L < 1 trains it with stochastic depth (Huang et al. 2016): the
    residual branch of block l survives with probability ``stochastic_depth_survival``."""
    n = (depth - 2) // 6
    cells, c_in = [cifar_stem(16)], 16
    for stage, width in enumerate((16, 32, 64)):
        for j in range(n):
            survival = stochastic_depth_survival(stage * n + j + 1, 3 * n, stochastic_depth)
            cells.append(basic_block(c_in, width, 2 if stage and j == 0 else 1, survival))
            c_in = width
    cells.append(classifier_head(num_classes))
    return CellChain(cells, name=f"resnet{depth}", family="ResNet")


def _closing_bn_relu() -> Cell:
    cell = Cell("final_bn")
    cell.set_output([cell.op("bn_act", cell.input(0), node_id="bn")])
    return cell


def preact_resnet(depth: int, num_classes: int = 10) -> CellChain:
    """Pre-activation bottleneck ResNet for CIFAR (9n+2 layers, widths 16/32/64 x 4)."""
    n = (depth - 2) // 9
    cells, c_in = [cifar_stem(16, act="none")], 16
    for stage, planes in enumerate((16, 32, 64)):
        for j in range(n):
            cells.append(preact_bottleneck_block(c_in, planes, 2 if stage and j == 0 else 1))
            c_in = planes * 4
    cells += [_closing_bn_relu(), classifier_head(num_classes)]
    return CellChain(cells, name=f"preact_resnet{depth}", family="ResNet")


def wide_resnet(depth: int, widen: int, num_classes: int = 10,
                dropout: float = 0.0) -> CellChain:
    """Zagoruyko & Komodakis 2016, WRN-depth-widen (pre-activation basic blocks)."""
    n = (depth - 4) // 6
    cells, c_in = [cifar_stem(16, act="none")], 16
    for stage, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
        for j in range(n):
            cells.append(preact_basic_block(c_in, width, 2 if stage and j == 0 else 1, dropout))
            c_in = width
    cells += [_closing_bn_relu(), classifier_head(num_classes)]
    return CellChain(cells, name=f"wrn_{depth}_{widen}", family="WideResNet")


def pyramid_block(c_in: int, c_out: int, stride: int) -> Cell:
    """PyramidNet basic unit (Han et al. 2017): BN-conv3x3(stride)-BN-ReLU-conv3x3-BN; the
    shortcut is parameter-free: 2x2 average pool when striding, zero-padded channels."""
    cell = Cell(f"pyramid_{c_in}_{c_out}_s{stride}")
    h0 = cell.input(0)
    x = cell.op("bn_act", h0, act="none", node_id="bn1")
    x = cell.op("conv", x, stride=stride, channels=c_out, kernel=3, act="relu", node_id="conv1")
    x = cell.op("conv", x, channels=c_out, kernel=3, act="none", node_id="conv2")
    shortcut = h0
    if stride != 1:
        shortcut = cell.op("avg_pool", shortcut, stride=2, kernel=2, ceil_mode=True,
                           node_id="downsample")
    if c_out != c_in:
        shortcut = cell.op("pad_channels", shortcut, channels=c_out, node_id="pad")
    _residual_output(cell, x, shortcut, act="none")
    return cell


def pyramidnet(depth: int, alpha: float, num_classes: int = 10) -> CellChain:
    """Additive PyramidNet for CIFAR: unit k has floor(16 + alpha * k / 3n) channels.

    Floor, as the authors' Torch code, whose counts the paper reports (1.7M for 110/alpha=48,
    3.8M for alpha=84); their later PyTorch port rounds instead (1.77M / 3.90M).
    """
    n = (depth - 2) // 6
    cells, c_in = [cifar_stem(16, act="none")], 16
    for stage in range(3):
        for j in range(n):
            k = stage * n + j + 1
            width = math.floor(16 + alpha * k / (3 * n) + 1e-9)  # 1e-9: no 63.999... -> 63
            cells.append(pyramid_block(c_in, width, 2 if stage and j == 0 else 1))
            c_in = width
    cells += [_closing_bn_relu(), classifier_head(num_classes)]
    return CellChain(cells, name=f"pyramidnet{depth}_a{alpha:g}", family="PyramidNet")


def resnet9(num_classes: int = 10, width: float = 1.0) -> CellChain:
    """Page's DAWNBench ResNet-9 for CIFAR (widths 64/128/256/512 x ``width``): prep conv,
    then three conv + 2x2 max-pool stages, residual pairs of convs after the first and last;
    global max pool and a linear classifier."""
    w = [max(8, int(c * width)) for c in (64, 128, 256, 512)]
    cells = [cifar_stem(w[0])]
    for stage, (c_in, c_out) in enumerate(zip(w, w[1:])):
        cell = Cell(f"layer{stage + 1}")
        x = conv_bn_act(cell, cell.input(0), c_out, 3, node_id="conv")
        x = cell.op("max_pool", x, stride=2, kernel=2, node_id="pool")
        if stage != 1:
            r = conv_bn_act(cell, x, c_out, 3, node_id="res1")
            r = conv_bn_act(cell, r, c_out, 3, node_id="res2")
            x = cell.combine("add", x, r, node_id="add")
        cell.set_output([x])
        cells.append(cell)
    head = Cell("head")
    x = head.op("global_max_pool", head.input(0), node_id="pool")
    head.set_output([head.op("linear", x, channels=num_classes, bias=False, node_id="fc")])
    return CellChain(cells + [head], name="resnet9", family="ResNet")


IMAGENET = {"imagenet": {}}
for _name, _family, _layers, _bottleneck, _kw in [
        ("resnet18", "ResNet", (2, 2, 2, 2), False, {}),
        ("resnet34", "ResNet", (3, 4, 6, 3), False, {}),
        ("resnet50", "ResNet", (3, 4, 6, 3), True, {}),
        ("resnet101", "ResNet", (3, 4, 23, 3), True, {}),
        ("resnext50_32x4d", "ResNeXt", (3, 4, 6, 3), True, dict(groups=32, width_per_group=4)),
        ("wide_resnet50_2", "WideResNet", (3, 4, 6, 3), True, dict(width_per_group=128)),
        ("seresnet50", "SENet", (3, 4, 6, 3), True, dict(se_reduction=16))]:
    register_model(ZooEntry(
        _name, _family, settings=IMAGENET, import_weights=load_resnet_state,
        reference=f"timm {_name}" if _name == "seresnet50" else f"torchvision.models.{_name}",
        build_chain=partial(resnet, _layers, _bottleneck, name=_name, **_kw),
        doc="He et al. 2016 / Xie et al. 2017 / Zagoruyko & Komodakis 2016 / Hu et al. 2018; "
            "torchvision layout (timm's for seresnet50)"))

register_model(ZooEntry("resnet110", "ResNet", settings={"cifar": {}},
                        build_chain=partial(cifar_resnet, 110),
                        doc="He et al. 2016, CIFAR; option stochastic_depth=p_L (Huang et al. "
                            "2016; the recipe cifar-stochastic-depth sets p_L = 0.5)",
                        reference="paper: He et al. 2016, Table 6 (1.7M)"))
register_model(ZooEntry("preact_resnet164", "ResNet", settings={"cifar": {}},
                        build_chain=partial(preact_resnet, 164),
                        doc="He et al. 2016 (identity mappings), CIFAR, bottleneck",
                        reference="paper: He et al. 2016b, Table 3 (1.7M)"))
register_model(ZooEntry("wrn_28_10", "WideResNet", settings={"cifar": {}},
                        build_chain=partial(wide_resnet, 28, 10),
                        doc="Zagoruyko & Komodakis 2016, CIFAR",
                        reference="paper: Zagoruyko & Komodakis 2016, Table 5 (36.5M)"))
register_model(ZooEntry("resnet9", "ResNet", settings={"cifar": {"options": {"width": 0.25}}},
                        build_chain=resnet9,
                        doc="Page 2018 (DAWNBench) ResNet-9 for CIFAR; default width 0.25 "
                            "(16/32/64/128 channels) for fast CPU training (cifar-fast)"))
register_model(ZooEntry("pyramidnet110_a48", "PyramidNet", settings={"cifar": {}},
                        build_chain=partial(pyramidnet, 110, 48),
                        doc="Han et al. 2017, additive PyramidNet-110 (alpha=48), CIFAR",
                        reference="paper: Han et al. 2017, Table 4 (1.7M)"))
