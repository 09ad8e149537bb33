"""Early convolutional networks as DSL chains: LeNet-5, ZFNet and Network in Network.

* ``lenet5``: LeCun et al. 1998 ("Gradient-based learning applied to document recognition"),
  the paper's layout, not the common full-connection variant: C1 (6 @ 5x5) - S2 (trainable
  subsampling) - C3 (16 @ 5x5 with the partial connection table of the paper's Table I) - S4 -
  C5 (120 @ 5x5) - F6 (84) - 10 Euclidean RBF output units with fixed +-1 prototypes, every
  layer up to F6 squashed by 1.7159 tanh(2a/3). Trainable parameters: exactly the paper's
  60,000 (C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164; the RBF prototypes are fixed
  and not counted). 32 x 32 grayscale input (MNIST's 28 x 28 digits padded), 10 classes.
* ``zfnet``: Zeiler & Fergus 2014 (arXiv 2013; "Visualizing and understanding convolutional
  networks"), Fig. 3: 96 @ 7x7/2 - 3x3/2 max pool - contrast normalization - 256 @ 5x5/2 -
  pool - norm - 384, 384, 256 @ 3x3 - pool - FC 4096 - FC 4096 - 1000, dense (single-column)
  connections.
  Paddings and ceil-mode pools reproduce the figure's 110 / 55 / 26 / 13 / 6 map sizes;
  normalization is AlexNet's local response normalization (size 5), dropout 0.5 in the FC
  layers (as AlexNet, which the paper follows). 62,357,608 parameters: Caffe's bvlc_alexnet
  (60,965,224) with conv2/4/5 ungrouped (+1,413,120) and the 7x7 conv1 (-20,736).
* ``nin_cifar10``: Lin et al. 2014 ("Network in network"), the authors' CIFAR-10 model
  (Caffe model zoo, "NIN-CIFAR10"): three mlpconv layers (a conv followed by two 1x1 convs,
  each with ReLU) 192-160-96 @ 5x5, 192-192-192 @ 5x5, 192-192-10 @ 3x3, with 3x3/2 max pool +
  dropout, 3x3/2 average pool + dropout between them and a global average pool as the
  classifier; 966,986 parameters (the paper: 0.97M). Caffe rounds pooled sizes up: ceil mode.
"""
from __future__ import annotations

from nasforge.dsl import Cell, CellChain
from nasforge.zoo.plain import mlp_head
from nasforge.zoo.registry import ZooEntry, register_model

# LeCun et al. 1998, Table I: the S2 maps each C3 map reads
LENET5_C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5))
LENET5_ACT = "lecun_tanh"


def lenet5(num_classes: int = 10) -> CellChain:
    """LeNet-5 of LeCun et al. 1998 (see the module doc); one cell per layer pair."""
    features = Cell("features")
    x = features.op("conv", features.input(0), channels=6, kernel=5, padding=0, bias=True,
                    bn=False, act=LENET5_ACT, node_id="C1")
    x = features.op("trainable_subsample", x, stride=2, act=LENET5_ACT, node_id="S2")
    x = features.op("connection_table_conv", x, channels=16, kernel=5,
                    table=[list(row) for row in LENET5_C3_TABLE], act=LENET5_ACT, node_id="C3")
    x = features.op("trainable_subsample", x, stride=2, act=LENET5_ACT, node_id="S4")
    x = features.op("conv", x, channels=120, kernel=5, padding=0, bias=True, bn=False,
                    act=LENET5_ACT, node_id="C5")
    features.set_output([x])
    head = Cell("head")
    x = head.op("linear", head.input(0), channels=84, node_id="F6")
    x = head.op("act", x, act=LENET5_ACT, node_id="F6_act")
    head.set_output([head.op("rbf_output", x, channels=num_classes, node_id="output")])
    return CellChain([features, head], name="lenet5", family="LeNet")


def zfnet(num_classes: int = 1000) -> CellChain:
    """ZFNet (Zeiler & Fergus 2014, Fig. 3; see the module doc)."""
    cell = Cell("features")
    x = cell.input(0)
    for i, (channels, kernel, stride, padding, pool, norm) in enumerate([
            (96, 7, 2, 1, True, True), (256, 5, 2, 0, True, True), (384, 3, 1, 1, False, False),
            (384, 3, 1, 1, False, False), (256, 3, 1, 1, True, False)]):
        x = cell.op("conv", x, stride=stride, channels=channels, kernel=kernel, padding=padding,
                    bias=True, bn=False, node_id=f"conv{i + 1}")
        if pool:
            x = cell.op("max_pool", x, stride=2, kernel=3, ceil_mode=True, node_id=f"pool{i + 1}")
        if norm:
            x = cell.op("lrn", x, size=5, node_id=f"norm{i + 1}")
    cell.set_output([x])
    return CellChain([cell, mlp_head(6, 4096, num_classes, dropout_first=False)],
                     name="zfnet", family="ZFNet")


NIN_CIFAR10_MLPCONV = (  # (conv channels, kernel, 1x1 channels, 1x1 channels)
    (192, 5, 160, 96), (192, 5, 192, 192), (192, 3, 192, None))


def nin_cifar(num_classes: int = 10) -> CellChain:
    """Network in Network for CIFAR (the authors' Caffe model; see the module doc). The last
    1x1 conv has ``num_classes`` maps, averaged globally into the logits."""
    cells = []
    for i, (channels, kernel, cccp_a, cccp_b) in enumerate(NIN_CIFAR10_MLPCONV):
        cell = Cell(f"mlpconv{i + 1}")
        x = cell.op("conv", cell.input(0), channels=channels, kernel=kernel, bias=True, bn=False,
                    node_id=f"conv{i + 1}")
        x = cell.op("conv", x, channels=cccp_a, kernel=1, bias=True, bn=False,
                    node_id=f"cccp{2 * i + 1}")
        x = cell.op("conv", x, channels=cccp_b or num_classes, kernel=1, bias=True, bn=False,
                    node_id=f"cccp{2 * i + 2}")
        if i < len(NIN_CIFAR10_MLPCONV) - 1:
            x = cell.op("max_pool" if i == 0 else "avg_pool", x, stride=2, kernel=3,
                        ceil_mode=True, node_id=f"pool{i + 1}")
            x = cell.op("dropout", x, p=0.5, node_id=f"drop{i + 1}")
        else:
            x = cell.op("global_avg_pool", x, node_id=f"pool{i + 1}")
        cell.set_output([x])
        cells.append(cell)
    return CellChain(cells, name="nin_cifar10", family="NiN")


register_model(ZooEntry(
    "lenet5", "LeNet", settings={"mnist": {}}, build_chain=lenet5,
    reference="paper: LeCun et al. 1998, Gradient-based learning applied to document "
              "recognition (60,000 trainable parameters)",
    doc="LeCun et al. 1998, LeNet-5 as published: partial C3 connection table, trainable "
        "subsampling, scaled tanh, fixed RBF output; 32x32 grayscale"))
register_model(ZooEntry(
    "zfnet", "ZFNet", settings={"imagenet": {}}, build_chain=zfnet,
    reference="paper: Zeiler & Fergus 2014, Visualizing and understanding convolutional "
              "networks, Fig. 3 (count: Caffe bvlc_alexnet ungrouped, 7x7 conv1)",
    doc="Zeiler & Fergus 2014, Fig. 3 layout, dense connections"))
register_model(ZooEntry(
    "nin_cifar10", "NiN", settings={"cifar": {}}, build_chain=nin_cifar,
    reference="Lin et al. 2014 authors' Caffe model zoo NIN-CIFAR10 (paper: 0.97M)",
    doc="Lin et al. 2014, Network in Network for CIFAR-10, the authors' Caffe layout"))
