"""CIFAR families of the CNN-design surveys as DSL chains: FractalNet, CondenseNet,
Merge-and-Run (DMRNet), Interleaved Group Convolutions (IGC) and Highway networks.

Each builder writes its paper's (or its authors' code's) layout literally; docs/zoo.md lists
the published figures each entry is checked against and where they come from.
"""
from __future__ import annotations

from functools import partial

from nasforge.dsl import Cell, CellChain
from nasforge.zoo.registry import ZooEntry, register_model
from nasforge.zoo.resnet import classifier_head, conv_bn_act

CIFAR = {"cifar": {}}


# ------------------------------------------------------------------------------ FractalNet
def fractal_block(c_in: int, width: int, columns: int, dropout: float, name: str) -> Cell:
    """One fractal block, wired as the authors' generator (gustavla/fractalnet,
    generation/fractalnet.py) wires it: column c (0 = shallowest) has 2^c convs; after step l
    of the deepest column, the ``2 + k`` deepest columns are joined (element-wise mean) when
    ``l % 2^(k+2) == 2^(k+1) - 1`` for the first such k; every column is 2x2 max-pooled
    before the block's last join, which merges all columns."""
    cell = Cell(name)
    lasts = [cell.input(0)] * columns
    ordinals = [0] * columns
    steps = 2 ** (columns - 1)
    for step in range(steps):
        for c in reversed(range(columns)):
            if (step + 1) % 2 ** (columns - c - 1) == 0:
                lasts[c] = cell.op("fractal_conv", lasts[c], channels=width, dropout=dropout,
                                   node_id=f"conv{c}_{ordinals[c]}")
                ordinals[c] += 1
        if step == steps - 1:
            lasts = [cell.op("max_pool", last, stride=2, kernel=2, node_id=f"pool{c}")
                     for c, last in enumerate(lasts)]
        for c in range(columns):
            if step % 2 ** (2 + c) == 2 ** (1 + c) - 1:
                joined = cell.combine("mean", *lasts[-(2 + c):], node_id=f"join{step}")
                lasts[-(2 + c):] = [joined] * (2 + c)
                break
    cell.set_output([lasts[0]])
    return cell


def fractalnet(num_classes: int = 10, columns: int = 3,
               widths=(64, 128, 256, 512, 512),
               dropouts=(0.0, 0.1, 0.2, 0.3, 0.4)) -> CellChain:
    """Larsson et al. 2017 for CIFAR: B = 5 fractal blocks of C = ``columns`` columns, each
    ending in a 2x2 max pool (32 px -> 1 px), then a fully connected layer. Depth
    B * 2^(C-1): 20 layers at C = 3, the generator's setting. Drop-path (local and global)
    is a training rule of the join and is not part of this architecture."""
    cells, c_in = [], 3
    for b, (width, dropout) in enumerate(zip(widths, dropouts)):
        cells.append(fractal_block(c_in, width, columns, dropout, f"block{b + 1}"))
        c_in = width
    head = Cell("head")
    head.set_output([head.op("linear", head.input(0), channels=num_classes, node_id="fc")])
    depth = len(widths) * 2 ** (columns - 1)
    return CellChain(cells + [head], name=f"fractalnet{depth}", family="FractalNet")


# ----------------------------------------------------------------------------- CondenseNet
def condense_block(layers: int, growth: int, bottleneck: int, groups: int,
                   condense_factor: int, name: str) -> Cell:
    """Dense layers of CondenseNet: learned group 1x1 conv (test-time form: index select +
    grouped conv + shuffle) to ``bottleneck * growth``, then BN-ReLU-grouped 3x3 conv to
    ``growth``, concatenated after everything before it (oldest first)."""
    cell = Cell(name)
    x = cell.input(0)
    for i in range(1, layers + 1):
        y = cell.op("condense_conv", x, channels=bottleneck * growth, groups=groups,
                    condense_factor=condense_factor, node_id=f"denselayer{i}_1")
        y = cell.op("bn_act_conv", y, channels=growth, kernel=3, groups=groups,
                    node_id=f"denselayer{i}_2")
        x = cell.combine("concat", x, y, node_id=f"concat{i}")
    cell.set_output([x])
    return cell


def condensenet(num_classes: int = 10, stages=(14, 14, 14), growth=(8, 16, 32),
                bottleneck: int = 4, groups: int = 4, condense_factor: int = 4) -> CellChain:
    """Huang et al. 2018, CondenseNet for CIFAR in its converted (test-time) form, the
    network the paper counts: 3x3 stem conv to 2 * growth[0], dense blocks joined by 2x2
    average pools only (fully dense connectivity, growth rate doubling per stage), BN-ReLU,
    global average pool, and a linear layer over half of the features."""
    stem = Cell("stem")
    stem.set_output([stem.op("conv", stem.input(0), channels=2 * growth[0], kernel=3,
                             bn=False, act="none", node_id="init_conv")])
    cells = [stem]
    for i, (layers, k) in enumerate(zip(stages, growth)):
        cells.append(condense_block(layers, k, bottleneck, groups, condense_factor,
                                    f"denseblock{i + 1}"))
        if i < len(stages) - 1:
            pool = Cell(f"transition{i + 1}")
            pool.set_output([pool.op("avg_pool", pool.input(0), stride=2, kernel=2,
                                     node_id="pool")])
            cells.append(pool)
    head = Cell("head")
    x = head.op("bn_act", head.input(0), node_id="norm_last")
    x = head.op("global_avg_pool", x, node_id="pool_last")
    head.set_output([head.op("condense_linear", x, channels=num_classes, keep=0.5,
                             node_id="classifier")])
    depth = 2 * sum(stages) + 2
    return CellChain(cells + [head], name=f"condensenet{depth}", family="CondenseNet")


# ---------------------------------------------------------------------- Merge-and-Run
def merge_and_run_block(c_in: int, c_out: int, stride: int, first: bool = False) -> Cell:
    """Zhao et al. 2018: two residual branches (conv3x3-BN-ReLU-conv3x3-BN) on streams a and
    b; the identity of both is their average: a' = ReLU(F_a(a) + (a+b)/2), likewise b'. The
    streams travel between blocks as one tensor [a, b] (``first``: both streams are the
    single stem output). Where the shape changes the average is projected (1x1 conv + BN,
    shared by the two streams)."""
    cell = Cell(f"merge_run_{c_in}_{c_out}_s{stride}")
    h0 = cell.input(0)
    if first:  # both streams are h0, and so is their average
        a = b = merged = h0
    else:
        a = cell.op("channel_split", h0, channels=c_in, parts=2, index=0, node_id="stream_a")
        b = cell.op("channel_split", h0, channels=c_in, parts=2, index=1, node_id="stream_b")
        merged = cell.combine("mean", a, b, node_id="merge")
    if stride != 1 or c_in != c_out:
        merged = conv_bn_act(cell, merged, c_out, 1, stride, act="none", padding=0,
                             node_id="projection")
    outputs = []
    for stream, x in (("a", a), ("b", b)):
        y = conv_bn_act(cell, x, c_out, 3, stride, node_id=f"conv{stream}1")
        y = conv_bn_act(cell, y, c_out, 3, act="none", node_id=f"conv{stream}2")
        y = cell.combine("add", y, merged, node_id=f"add_{stream}")
        outputs.append(cell.op("act", y, node_id=f"relu_{stream}"))
    cell.set_output(outputs)
    return cell


def dmrnet(depth: int = 56, num_classes: int = 10, widths=(16, 32, 64)) -> CellChain:
    """DMRNet for CIFAR: 3x3 stem conv, three stages of (depth - 2) / 6 merge-and-run blocks
    (two layers deep along each stream), the two streams averaged, global average pool,
    fully connected layer."""
    n = (depth - 2) // 6
    stem = Cell("stem")
    stem.set_output([conv_bn_act(stem, stem.input(0), widths[0], 3, node_id="conv1")])
    cells, c_in = [stem], widths[0]
    for stage, width in enumerate(widths):
        for j in range(n):
            cells.append(merge_and_run_block(c_in, width, 2 if stage and j == 0 else 1,
                                             first=len(cells) == 1))
            c_in = width
    merge = Cell("merge_streams")
    h0 = merge.input(0)
    a = merge.op("channel_split", h0, channels=c_in, parts=2, index=0, node_id="stream_a")
    b = merge.op("channel_split", h0, channels=c_in, parts=2, index=1, node_id="stream_b")
    merge.set_output([merge.combine("mean", a, b, node_id="merge")])
    return CellChain(cells + [merge, classifier_head(num_classes)], name=f"dmrnet{depth}",
                     family="DMRNet")


# ---------------------------------------------------------- Interleaved group convolutions
IGC_BN_EPS = 2e-5  # the authors' MXNet BatchNorm eps


def igc_unit(cell, x, c_out, stride, primary, secondary, act, name):
    """Adds one interleaved group convolution after node ``x`` of ``cell``; returns its
    output node. Primary grouped 3x3 conv (``primary`` partitions), permutation, secondary
    grouped 1x1 conv (``secondary`` partitions), permutation back, BN (-> ReLU): the authors'
    get_igc, whose Reorder(branch_factor=g) is ShuffleNet's channel shuffle with g groups."""
    x = cell.op("conv", x, stride=stride, channels=c_out, kernel=3, groups=primary, bn=False,
                act="none", node_id=f"{name}_conv1")
    x = cell.op("channel_shuffle", x, groups=primary, node_id=f"{name}_reorder1")
    x = cell.op("conv", x, channels=c_out, kernel=1, padding=0, groups=secondary, bn=False,
                act="none", node_id=f"{name}_conv2")
    x = cell.op("channel_shuffle", x, groups=secondary, node_id=f"{name}_reorder2")
    return cell.op("bn_act", x, act=act, bn_eps=IGC_BN_EPS, node_id=f"{name}_bn")


def igc_block(c_in: int, c_out: int, primary: int) -> Cell:
    """The authors' get_fusion: two IGCs (the first strided where the width doubles, its
    secondary partitions counted on its input) plus a shortcut (identity, or a strided
    grouped 1x1 conv + BN), added, ReLU."""
    stride = 1 if c_in == c_out else 2
    cell = Cell(f"igc_{c_in}_{c_out}_L{primary}")
    h0 = cell.input(0)
    x = igc_unit(cell, h0, c_out, stride, primary, c_in // primary, "relu", "two1")
    x = igc_unit(cell, x, c_out, 1, primary, c_out // primary, "none", "two2")
    shortcut = h0 if stride == 1 else conv_bn_act(
        cell, h0, c_out, 1, stride, groups=primary, padding=0, act="none", bn_eps=IGC_BN_EPS,
        node_id="line")
    total = cell.combine("add", x, shortcut, node_id="add")
    cell.set_output([cell.op("act", total, node_id="relu")])
    return cell


def igc_resnet(primary: int, secondary: int, depth: int = 20,
               num_classes: int = 10) -> CellChain:
    """Zhang et al. 2017, IGC-L{primary}M{secondary}: the authors' resnet_igc.py for CIFAR.
    Stem 3x3 conv to L*M channels, three stages of (depth - 2) / 6 blocks at L*M, 2L*M and
    4L*M channels (M doubles, L stays), global average pool, fully connected layer."""
    width = primary * secondary
    stem = Cell("stem")
    stem.set_output([conv_bn_act(stem, stem.input(0), width, 3, bn_eps=IGC_BN_EPS,
                                 node_id="g0")])
    cells, c_in = [stem], width
    for stage in range(3):
        for _ in range((depth - 2) // 6):
            cells.append(igc_block(c_in, width * 2 ** stage, primary))
            c_in = width * 2 ** stage
    return CellChain(cells + [classifier_head(num_classes)],
                     name=f"igc_l{primary}m{secondary}", family="IGC")


# ------------------------------------------------------------------------ Highway networks
# Srivastava, Greff & Schmidhuber 2015's 19-layer CIFAR network as the authors released it
# (flukeskywalker/highway-networks, examples/highways/cifar10-19layers/cifar10_network.prototxt):
# per stage (output channels, highway layers after the stage's plain 3x3 conv)
HIGHWAY_CIFAR_STAGES = ((32, 4), (80, 5), (128, 5))
HIGHWAY_CIFAR_PRE_POOL = 100  # conv18: 1x1 conv to 100 maps (ReLU) before the average pool
HIGHWAY_CIFAR_DROPOUT = 0.2  # on the input, after each pool, before the classifier
HIGHWAY_GATE_BIAS = -2.0  # transform_bias_filler: fresh layers mostly carry their input


def highway_layer(cell: Cell, x: str, channels: int, name: str) -> str:
    """Adds one convolutional highway layer after node ``x`` of ``cell`` (the authors'
    CuDNNHighway layer): y = H(x) T(x) + x (1 - T(x)), H = ReLU(3x3 conv + b), T = sigmoid(3x3
    conv + b_T); returns its output node."""
    transform = cell.op("conv", x, channels=channels, kernel=3, bias=True, bn=False,
                        node_id=f"{name}_h")
    gate = cell.op("highway_gate", x, channels=channels, kernel=3, bias_init=HIGHWAY_GATE_BIAS,
                   node_id=f"{name}_t")
    return cell.combine("highway", transform, gate, x, node_id=name)


def highway_cifar(num_classes: int = 10) -> CellChain:
    """The 19-layer highway network for CIFAR (Srivastava et al. 2015, Table 1, "Highway B"):
    three stages of a plain 3x3 conv (ReLU) followed by 4, 5 and 5 highway layers at 32, 80
    and 128 channels, 2x2 max pools between the stages, a 1x1 conv to 100 maps, average pool,
    fully connected layer; dropout 0.2 on the input, after each pool and before the classifier.
    Layers (conv1..conv18, ip2) are numbered as in the authors' prototxt."""
    cells, layer = [], 0
    for stage, (width, highways) in enumerate(HIGHWAY_CIFAR_STAGES):
        cell = Cell(f"stage{stage + 1}")
        x = cell.op("dropout", cell.input(0), p=HIGHWAY_CIFAR_DROPOUT, node_id=f"drop{stage + 1}")
        layer += 1
        x = cell.op("conv", x, channels=width, kernel=3, bias=True, bn=False,
                    node_id=f"conv{layer}")
        for _ in range(highways):
            layer += 1
            x = highway_layer(cell, x, width, f"conv{layer}")
        if stage < len(HIGHWAY_CIFAR_STAGES) - 1:
            x = cell.op("max_pool", x, stride=2, kernel=2, node_id=f"pool{stage + 1}")
        cell.set_output([x])
        cells.append(cell)
    head = Cell("head")
    x = head.op("conv", head.input(0), channels=HIGHWAY_CIFAR_PRE_POOL, kernel=1, padding=0,
                bias=True, bn=False, node_id=f"conv{layer + 1}")
    # Caffe's 8x8 average pool over the 8x8 map at 32 px: a global average pool
    x = head.op("global_avg_pool", x, node_id="pool3")
    x = head.op("dropout", x, p=HIGHWAY_CIFAR_DROPOUT, node_id="drop4")
    head.set_output([head.op("linear", x, channels=num_classes, node_id="ip2")])
    return CellChain(cells + [head], name="highway19", family="Highway")


register_model(ZooEntry(
    "fractalnet20", "FractalNet", settings=CIFAR, build_chain=fractalnet,
    reference="gustavla/fractalnet generation/fractalnet.py (the authors' generator: "
              "COLUMNS=3, 5 blocks, widths 64-128-256-512-512); paper: Larsson et al. 2017, "
              "Table 1 prints 38.6M for it, the layout it describes has 33.7M",
    doc="Larsson et al. 2017, FractalNet (C=3, B=5, 20 layers), CIFAR"))
register_model(ZooEntry(
    "condensenet86", "CondenseNet", settings=CIFAR, build_chain=condensenet,
    reference="ShichenLiu/CondenseNet models/condensenet_converted.py (--stages 14-14-14 "
              "--growth 8-16-32, G=C=4); paper: Huang et al. 2018, CIFAR table (0.52M, 65M FLOPs)",
    doc="Huang et al. 2018, CondenseNet-86 (G=C=4), converted test-time network, CIFAR"))
register_model(ZooEntry(
    "dmrnet56", "DMRNet", settings=CIFAR, build_chain=partial(dmrnet, 56),
    reference="paper: Zhao et al. 2018, Deep Convolutional Neural Networks with "
              "Merge-and-Run Mappings, CIFAR table (DMRNet, depth 56, 1.7M)",
    doc="Zhao et al. 2018, merge-and-run network DMRNet-56, CIFAR"))
register_model(ZooEntry(
    "igc_l32m26", "IGC", settings=CIFAR, build_chain=partial(igc_resnet, 32, 26),
    reference="hellozting/InterleavedGroupConvolutions network/resnet_igc.py (depth 20, "
              "L=32, M=26); paper: Zhang et al. 2017, state-of-the-art comparison on CIFAR (24.1M)",
    doc="Zhang et al. 2017, IGC-L32M26 residual network (depth 20), CIFAR"))
register_model(ZooEntry(
    "highway19", "Highway", settings=CIFAR, build_chain=highway_cifar,
    reference="flukeskywalker/highway-networks examples/highways/cifar10-19layers "
              "(the authors' Caffe prototxt; its log: 2,256,838 parameters); paper: "
              "Srivastava et al. 2015, Table 1, Highway B (19 layers, 2.3M)",
    doc="Srivastava et al. 2015, 19-layer convolutional highway network, CIFAR"))
