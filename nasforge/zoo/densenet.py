"""DenseNets as DSL chains: a dense block is one cell whose layers read the running concat."""
from __future__ import annotations

from functools import partial

from nasforge.dsl import Cell, CellChain
from nasforge.weights import load_chain_state
from nasforge.zoo.registry import ZooEntry, register_model
from nasforge.zoo.resnet import classifier_head


def dense_block(c_in: int, layers: int, growth: int, bn_size: int, name: str) -> Cell:
    """Each layer: BN-ReLU-1x1 conv (bn_size * growth) -> BN-ReLU-3x3 conv (growth); its
    output is concatenated to everything before it (torchvision's order: oldest first)."""
    cell = Cell(name)
    x = cell.input(0)
    for i in range(1, layers + 1):
        y = cell.op("bn_act_conv", x, channels=bn_size * growth, kernel=1, padding=0,
                    node_id=f"denselayer{i}_1")
        y = cell.op("bn_act_conv", y, channels=growth, kernel=3, node_id=f"denselayer{i}_2")
        x = cell.combine("concat", x, y, node_id=f"concat{i}")
    cell.set_output([x])
    return cell


def transition(c_out: int, name: str) -> Cell:
    """BN-ReLU-1x1 conv (compression) -> 2x2 average pool."""
    cell = Cell(name)
    x = cell.op("bn_act_conv", cell.input(0), channels=c_out, kernel=1, padding=0,
                node_id="transition")
    cell.set_output([cell.op("avg_pool", x, stride=2, kernel=2, node_id="pool")])
    return cell


def _final(num_classes):
    cell = classifier_head(num_classes)
    relu = [n for n in cell.nodes("input")][0]
    cell.graph.remove_edge(relu, "avgpool")
    cell.graph.add_edge(cell.op("bn_act", relu, node_id="norm5"), "avgpool", slot=0)
    cell.name = "head"
    return cell


def densenet(blocks, growth=32, init=64, bn_size=4, compression=0.5, num_classes=1000,
             cifar=False, name="densenet") -> CellChain:
    """torchvision's DenseNet (ImageNet) or DenseNet-BC for CIFAR (3x3 stem, no pooling)."""
    stem = Cell("stem")
    if cifar:
        stem.set_output([stem.op("conv", stem.input(0), channels=init, kernel=3, bn=False,
                                 act="none", node_id="conv0")])
    else:
        x = stem.op("conv", stem.input(0), stride=2, channels=init, kernel=7, padding=3,
                    node_id="conv0")
        stem.set_output([stem.op("max_pool", x, stride=2, kernel=3, padding=1,
                                 node_id="pool0")])
    cells, width = [stem], init
    for b, layers in enumerate(blocks):
        cells.append(dense_block(width, layers, growth, bn_size, f"denseblock{b + 1}"))
        width += layers * growth
        if b < len(blocks) - 1:
            width = int(width * compression)
            cells.append(transition(width, f"transition{b + 1}"))
    cells.append(_final(num_classes))
    return CellChain(cells, name=name, family="DenseNet")


def load_torchvision_densenet(model, state: dict):
    """Copy a torchvision DenseNet state dict (``features.*``, ``classifier``)."""
    def theirs(cell, node, op):
        if node == "conv0":
            return ["features.conv0", "features.norm0"]
        if node.startswith("denselayer"):
            layer, part = node.rsplit("_", 1)
            return [f"features.{cell}.{layer}.norm{part}", f"features.{cell}.{layer}.conv{part}"]
        if node == "transition":
            return [f"features.{cell}.norm", f"features.{cell}.conv"]
        return ["features.norm5"] if node == "norm5" else ["classifier"]

    return load_chain_state(model, state, theirs)


register_model(ZooEntry("densenet121", "DenseNet", settings={"imagenet": {}},
                        build_chain=partial(densenet, (6, 12, 24, 16), name="densenet121"),
                        import_weights=load_torchvision_densenet,
                        reference="torchvision.models.densenet121",
                        doc="Huang et al. 2017, torchvision layout"))
register_model(ZooEntry("densenet_bc_100_12", "DenseNet", settings={"cifar": {}},
                        build_chain=partial(densenet, (16, 16, 16), growth=12, init=24,
                                            cifar=True, name="densenet_bc_100_12"),
                        doc="Huang et al. 2017, DenseNet-BC (L=100, k=12), CIFAR",
                        reference="paper: Huang et al. 2017, Table 2 (0.8M)"))
