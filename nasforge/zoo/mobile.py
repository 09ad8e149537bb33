"""Mobile networks as DSL chains: MobileNet v1/v2 and ShuffleNet v1/v2.

Every block is a single-input cell. Where torchvision provides the network (MobileNet v2,
ShuffleNet v2) cells and op nodes carry torchvision's module names (a cell ``features.3``
holding ops ``conv.0``/``conv.1``/``conv.2``, a cell ``stage2.0`` holding ``branch1.0`` ...
``branch2.5``), so importing its weights is a name lookup: an op ``NAME`` holds torchvision's
module ``NAME`` (a conv-BN-act ``Sequential``), or a bare ``Conv2d`` ``X.k`` plus the
``BatchNorm2d`` ``X.(k+1)`` that follows it.
"""
from __future__ import annotations

from functools import partial

from torch import nn

from nasforge.dsl import Cell, CellChain
from nasforge.weights import cell_prefix, load_chain_state
from nasforge.zoo.registry import ZooEntry, register_model
from nasforge.zoo.resnet import conv_bn_act


def _dw(cell, src, channels, stride=1, act="relu", node_id=None, kernel=3):
    """Depthwise k x k conv -> BN -> act (channels = its input's)."""
    return conv_bn_act(cell, src, channels, kernel, stride, act=act, groups="depthwise",
                 node_id=node_id)


def _pw(cell, src, channels, act="relu", node_id=None, groups=1):
    """Pointwise (1x1, optionally grouped) conv -> BN -> act."""
    return conv_bn_act(cell, src, channels, 1, act=act, padding=0, groups=groups, node_id=node_id)


def _head(num_classes: int, dropout: float = 0.0, fc: str = "fc", bias: bool = True,
          pre: tuple | None = None) -> Cell:
    """(1x1 conv ``pre`` = (node id, channels, act)) -> global average pool -> (dropout) -> FC."""
    cell = Cell("head")
    x = cell.input(0)
    if pre is not None:
        node_id, channels, act = pre
        x = _pw(cell, x, channels, act=act, node_id=node_id)
    x = cell.op("global_avg_pool", x, node_id="avgpool")
    if dropout:
        x = cell.op("dropout", x, p=dropout, node_id="dropout")
    cell.set_output([cell.op("linear", x, channels=num_classes, bias=bias, node_id=fc)])
    return cell


# ------------------------------------------------------------------------------ MobileNet v1
MOBILENET_V1_LAYERS = [  # (output channels, stride) of the 13 depthwise-separable layers
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def depthwise_separable(c_in: int, c_out: int, stride: int, act: str = "relu") -> Cell:
    """MobileNet v1 layer: dw 3x3 (stride) -> BN -> act, pw 1x1 -> BN -> act."""
    cell = Cell(f"dw_sep_{c_in}_{c_out}_s{stride}")
    x = _dw(cell, cell.input(0), c_in, stride, act=act, node_id="dw")
    cell.set_output([_pw(cell, x, c_out, act=act, node_id="pw")])
    return cell


def mobilenet_v1(num_classes: int = 1000, act: str = "relu") -> CellChain:
    """Howard et al. 2017, Table 1: conv 3x3/2 (32) then 13 depthwise-separable layers, global
    average pool, FC with bias. The last layer has stride 1 (the table's "s2" there is a typo:
    the output is 7x7), as in every implementation. ``act="relu6"`` is TF-slim's/timm's variant.
    """
    stem = Cell("stem")
    stem.set_output([conv_bn_act(stem, stem.input(0), 32, 3, 2, act=act, node_id="conv1")])
    cells, c_in = [stem], 32
    for i, (c_out, stride) in enumerate(MOBILENET_V1_LAYERS):
        cell = depthwise_separable(c_in, c_out, stride, act)
        cell.name = f"layers.{i}"
        cells.append(cell)
        c_in = c_out
    cells.append(_head(num_classes))
    return CellChain(cells, name="mobilenet_v1", family="MobileNet")


# ------------------------------------------------------------------------------ MobileNet v2
MOBILENET_V2_SETTING = [  # expansion t, channels c, repeats n, first stride s (paper Table 2)
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
    (6, 160, 3, 2), (6, 320, 1, 1)]


def inverted_residual(c_in: int, c_out: int, stride: int, expand: int) -> Cell:
    """MobileNet v2 block: (1x1 expand -> BN -> ReLU6) -> dw 3x3 -> BN -> ReLU6 -> 1x1 -> BN
    (linear bottleneck); identity added when stride 1 and c_in == c_out. Op ids are
    torchvision's ``conv.k`` indices."""
    cell = Cell(f"inverted_residual_{c_in}_{c_out}_t{expand}_s{stride}")
    h0 = cell.input(0)
    hidden, k, x = c_in * expand, 0, h0
    if expand != 1:
        x = _pw(cell, x, hidden, act="relu6", node_id="conv.0")
        k = 1
    x = _dw(cell, x, hidden, stride, act="relu6", node_id=f"conv.{k}")
    x = _pw(cell, x, c_out, act="none", node_id=f"conv.{k + 1}")
    if stride == 1 and c_in == c_out:
        x = cell.combine("add", h0, x, node_id="add")
    cell.set_output([x])
    return cell


def mobilenet_v2(num_classes: int = 1000, dropout: float = 0.2) -> CellChain:
    """Sandler et al. 2018, width 1.0, torchvision's layout (cells ``features.1`` ..
    ``features.17``; the 1x1 conv to 1280 (``features.18``) opens the head)."""
    stem = Cell("stem")
    stem.set_output([conv_bn_act(stem, stem.input(0), 32, 3, 2, act="relu6", node_id="features.0")])
    cells, c_in = [stem], 32
    for t, c, n, s in MOBILENET_V2_SETTING:
        for j in range(n):
            cell = inverted_residual(c_in, c, s if j == 0 else 1, t)
            cell.name = f"features.{len(cells)}"
            cells.append(cell)
            c_in = c
    cells.append(_head(num_classes, dropout, fc="classifier.1",
                       pre=(f"features.{len(cells)}", 1280, "relu6")))
    return CellChain(cells, name="mobilenet_v2", family="MobileNet")


# ------------------------------------------------------------------------------ ShuffleNet v1
SHUFFLENET_V1_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                          4: (272, 544, 1088), 8: (384, 768, 1536)}  # 1x, paper Table 1

def shufflenet_v1_unit(c_in: int, c_out: int, stride: int, groups: int,
                       group_first: bool = True) -> Cell:
    """Zhang et al. 2017, Fig. 2 (b)/(c), exactly as Megvii's ShuffleNet-Series
    ``ShuffleV1Block`` (the authors' code): 1x1 GConv (bottleneck = c_out / 4) -> BN -> ReLU ->
    dw 3x3 (stride) -> BN -> channel shuffle -> 1x1 GConv -> BN; stride 1: ReLU(x + branch);
    stride 2: concat(avg_pool 3x3/2 pad 1 (x), ReLU(branch)), the branch giving c_out - c_in
    channels.

    Two details follow Megvii's code rather than the paper's figure, so that Megvii's weights
    would load unchanged; neither changes the family of functions or any count: the shuffle
    comes after the depthwise conv (the figure puts it before; a per-channel conv and BN commute
    with a channel permutation up to permuting their weights), and it is Megvii's permutation:
    reshape the C channels to (C/g, g), transpose, flatten, i.e. our ``channel_shuffle`` with
    C/g groups (the paper's text describes the inverse permutation, (g, C/g)).
    """
    cell = Cell(f"shuffle_v1_{c_in}_{c_out}_g{groups}_s{stride}")
    h0 = cell.input(0)
    mid = c_out // 4
    branch_out = c_out - c_in if stride == 2 else c_out
    x = _pw(cell, h0, mid, groups=groups if group_first else 1, node_id="branch_main_1.0")
    x = _dw(cell, x, mid, stride, act="none", node_id="branch_main_1.3")
    if groups > 1:
        x = cell.op("channel_shuffle", x, groups=mid // groups, node_id="shuffle")
    x = _pw(cell, x, branch_out, act="none", groups=groups, node_id="branch_main_2.0")
    if stride == 1:
        total = cell.combine("add", h0, x, node_id="add")
        cell.set_output([cell.op("act", total, act="relu", node_id="relu")])
    else:
        shortcut = cell.op("avg_pool", h0, stride=2, kernel=3, padding=1, node_id="branch_proj")
        x = cell.op("act", x, act="relu", node_id="relu")
        cell.set_output([cell.combine("concat", shortcut, x, node_id="concat")])
    return cell


def shufflenet_v1(groups: int = 3, num_classes: int = 1000) -> CellChain:
    """ShuffleNet v1 (Zhang et al. 2017, Table 1), Megvii's ShuffleNet-Series layout: conv
    3x3/2 (24) -> BN -> ReLU, max pool 3x3/2, stages of 4/8/4 units (the first of each with
    stride 2) with 240/480/960 output channels (g = 3, 1x), the first 1x1 of stage 2 not
    grouped, global average pool, FC without bias (as Megvii's). Other ``groups`` use the
    paper's Table 1 widths."""
    stage_channels = SHUFFLENET_V1_CHANNELS[groups]
    stem_width = 24
    stem = Cell("stem")
    x = conv_bn_act(stem, stem.input(0), stem_width, 3, 2, node_id="first_conv")
    stem.set_output([stem.op("max_pool", x, stride=2, kernel=3, padding=1, node_id="maxpool")])
    cells, c_in = [stem], stem_width
    for stage, (c_out, repeats) in enumerate(zip(stage_channels, (4, 8, 4))):
        for j in range(repeats):
            cell = shufflenet_v1_unit(c_in, c_out, 2 if j == 0 else 1, groups,
                                      group_first=not (stage == 0 and j == 0))
            cell.name = f"features.{len(cells) - 1}"
            cells.append(cell)
            c_in = c_out
    cells.append(_head(num_classes, fc="classifier.0", bias=False))
    return CellChain(cells, name=f"shufflenet_v1_g{groups}", family="ShuffleNet")


# ------------------------------------------------------------------------------ ShuffleNet v2
SHUFFLENET_V2_CHANNELS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024),
                          1.5: (24, 176, 352, 704, 1024), 2.0: (24, 244, 488, 976, 2048)}


def shufflenet_v2_unit(c_in: int, c_out: int, stride: int) -> Cell:
    """Ma et al. 2018, Fig. 3 (c)/(d), torchvision's ``InvertedResidual``. Stride 1: split the
    channels in halves x1, x2; concat(x1, branch2(x2)). Stride 2: concat(branch1(x),
    branch2(x)). branch1 = dw 3x3/2 -> BN -> 1x1 -> BN -> ReLU; branch2 = 1x1 -> BN -> ReLU ->
    dw 3x3 (stride) -> BN -> 1x1 -> BN -> ReLU. Then channel shuffle with 2 groups."""
    cell = Cell(f"shuffle_v2_{c_in}_{c_out}_s{stride}")
    h0 = cell.input(0)
    half = c_out // 2
    if stride == 1:
        if c_in != c_out:
            raise ValueError(f"a stride-1 ShuffleNet v2 unit keeps its width ({c_in} -> {c_out})")
        left = cell.op("channel_split", h0, channels=half, parts=2, index=0, node_id="x1")
        x = cell.op("channel_split", h0, channels=half, parts=2, index=1, node_id="x2")
    else:
        left = _dw(cell, h0, c_in, stride, act="none", node_id="branch1.0")
        left = _pw(cell, left, half, node_id="branch1.2")
        x = h0
    x = _pw(cell, x, half, node_id="branch2.0")
    x = _dw(cell, x, half, stride, act="none", node_id="branch2.3")
    x = _pw(cell, x, half, node_id="branch2.5")
    out = cell.combine("concat", left, x, node_id="concat")
    cell.set_output([cell.op("channel_shuffle", out, groups=2, node_id="shuffle")])
    return cell


def shufflenet_v2(width: float = 1.0, num_classes: int = 1000) -> CellChain:
    """torchvision's ShuffleNetV2 (stages of 4/8/4 units; cells ``stage2.0`` .. ``stage4.3``)."""
    channels = SHUFFLENET_V2_CHANNELS[width]
    stem = Cell("stem")
    x = conv_bn_act(stem, stem.input(0), channels[0], 3, 2, node_id="conv1")
    stem.set_output([stem.op("max_pool", x, stride=2, kernel=3, padding=1, node_id="maxpool")])
    cells, c_in = [stem], channels[0]
    for stage, (c_out, repeats) in enumerate(zip(channels[1:4], (4, 8, 4))):
        for j in range(repeats):
            cell = shufflenet_v2_unit(c_in, c_out, 2 if j == 0 else 1)
            cell.name = f"stage{stage + 2}.{j}"
            cells.append(cell)
            c_in = c_out
    cells.append(_head(num_classes, pre=("conv5", channels[4], "relu")))
    name = f"shufflenet_v2_x{str(width).replace('.', '_')}"
    return CellChain(cells, name=name, family="ShuffleNet")


# ------------------------------------------------------------------------------ MnasNet
# (expansion t, kernel k, channels c, repeats n, first stride s): torchvision's MNASNet at
# depth multiplier 1.0 (the MnasNet-B1 of the authors' TF release: no squeeze-excite)
MNASNET_SETTING = [(3, 3, 24, 3, 2), (3, 5, 40, 3, 2), (6, 5, 80, 3, 2), (6, 3, 96, 2, 1),
                   (6, 5, 192, 4, 2), (6, 3, 320, 1, 1)]


def mnasnet_block(c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> Cell:
    """torchvision's ``_InvertedResidual``: 1x1 expand -> BN -> ReLU -> dw k x k (stride) ->
    BN -> ReLU -> 1x1 -> BN, identity added when the shape allows (op ids ``layers.0/3/6``,
    the reference's Sequential indices)."""
    cell = Cell(f"mnasnet_{c_in}_{c_out}_k{kernel}_t{expand}_s{stride}")
    h0 = cell.input(0)
    x = _pw(cell, h0, c_in * expand, node_id="layers.0")
    x = _dw(cell, x, c_in * expand, stride, node_id="layers.3", kernel=kernel)
    x = _pw(cell, x, c_out, act="none", node_id="layers.6")
    if stride == 1 and c_in == c_out:
        x = cell.combine("add", x, h0, node_id="add")
    cell.set_output([x])
    return cell


def mnasnet(num_classes: int = 1000, dropout: float = 0.2) -> CellChain:
    """Tan et al. 2019, torchvision ``mnasnet1_0``: conv 3x3/2 (32), depthwise-separable 3x3
    (16, no skip), six stacks of inverted residuals (cells ``layers.8.0`` .. ``layers.13.0``),
    1x1 conv to 1280, global average pool, dropout, FC."""
    stem = Cell("stem")
    x = conv_bn_act(stem, stem.input(0), 32, 3, 2, node_id="layers.0")
    x = _dw(stem, x, 32, node_id="layers.3")
    stem.set_output([_pw(stem, x, 16, act="none", node_id="layers.6")])
    cells, c_in = [stem], 16
    for stack, (t, k, c, n, s) in enumerate(MNASNET_SETTING, 8):
        for j in range(n):
            cell = mnasnet_block(c_in, c, k, s if j == 0 else 1, t)
            cell.name = f"layers.{stack}.{j}"
            cells.append(cell)
            c_in = c
    cells.append(_head(num_classes, dropout, fc="classifier.1", pre=("layers.14", 1280, "relu")))
    return CellChain(cells, name="mnasnet1_0", family="MnasNet")


# ------------------------------------------------------------------------------ weight import
def _torchvision_sources(state: dict, path: str, op: nn.Module) -> list[str]:
    """torchvision's modules for our op at ``path``: the conv-BN-act Sequential ``path``, or a
    bare Conv2d ``X.k`` and the BatchNorm2d ``X.(k+1)`` after it."""
    has_bn = isinstance(op, nn.Sequential) and any(isinstance(m, nn.BatchNorm2d) for m in op)
    if has_bn and f"{path}.weight" in state:
        head, _, index = path.rpartition(".")
        return [path, f"{head}.{int(index) + 1}"]
    return [path]


def _load_torchvision(model, state: dict):
    """Our op node ``a.b`` in cell ``C`` is torchvision's ``C.a.b`` (``a.b`` in the stem and
    head cells)."""
    return load_chain_state(model, state, lambda cell, node, op: _torchvision_sources(
        state, cell_prefix(cell) + node, op))


def load_torchvision_mobilenet_v2(model, state: dict):
    """Copy a torchvision ``mobilenet_v2`` state dict into the zoo's DSL ``mobilenet_v2``."""
    return _load_torchvision(model, state)


def load_torchvision_mnasnet(model, state: dict):
    """Copy a torchvision ``mnasnet1_0`` state dict into the zoo's DSL ``mnasnet1_0``."""
    return _load_torchvision(model, state)


def load_torchvision_shufflenet_v2(model, state: dict):
    """Copy a torchvision ``shufflenet_v2_x*`` state dict into the zoo's DSL version."""
    return _load_torchvision(model, state)


# ------------------------------------------------------------------------------ zoo entries
IMAGENET = {"imagenet": {}}
register_model(ZooEntry("mobilenet_v1", "MobileNet", settings=IMAGENET, build_chain=mobilenet_v1,
                        doc="Howard et al. 2017, 1.0 width, 224 px (Table 1)",
                        reference="timm mobilenetv1_100"))
register_model(ZooEntry("mobilenet_v2", "MobileNet", settings=IMAGENET, build_chain=mobilenet_v2,
                        import_weights=load_torchvision_mobilenet_v2,
                        reference="torchvision.models.mobilenet_v2",
                        doc="Sandler et al. 2018, 1.0 width, torchvision layout"))
register_model(ZooEntry("shufflenet_v1_g3", "ShuffleNet", settings=IMAGENET,
                        build_chain=partial(shufflenet_v1, 3),
                        doc="Zhang et al. 2017, 1x, g = 3, Megvii ShuffleNet-Series layout",
                        reference="Megvii ShuffleNet-Series ShuffleNetV1(group=3)"))
register_model(ZooEntry("shufflenet_v2_x1_0", "ShuffleNet", settings=IMAGENET,
                        build_chain=partial(shufflenet_v2, 1.0),
                        import_weights=load_torchvision_shufflenet_v2,
                        reference="torchvision.models.shufflenet_v2_x1_0",
                        doc="Ma et al. 2018, 1x, torchvision layout"))
register_model(ZooEntry("mnasnet1_0", "MnasNet", settings=IMAGENET, build_chain=mnasnet,
                        import_weights=load_torchvision_mnasnet,
                        reference="torchvision.models.mnasnet1_0",
                        doc="Tan et al. 2019, torchvision's MNASNet 1.0 (MnasNet-B1, no SE); "
                            "4,383,312 params; 0.314G mult-adds at 224 px as torchvision "
                            "states (the paper's MnasNet-A1: 312M, 3.9M params)"))
