"""Plain stacks without shortcuts: VGG and AlexNet (torchvision layouts)."""
from __future__ import annotations

from nasforge.dsl import Cell, CellChain
from nasforge.zoo.registry import ZooEntry, register_model

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def mlp_head(c_in_spatial: int, hidden: int, num_classes: int, dropout_first: bool) -> Cell:
    """adaptive pool -> [dropout] FC-ReLU -> [dropout] FC-ReLU -> (dropout) FC, as
    torchvision's VGG (dropout after each ReLU) and AlexNet (dropout before each hidden FC)."""
    cell = Cell("classifier")
    x = cell.op("global_avg_pool", cell.input(0), size=c_in_spatial, node_id="avgpool")
    for i in range(2):
        if dropout_first:
            x = cell.op("dropout", x, p=0.5, node_id=f"dropout{i}")
        x = cell.op("linear", x, channels=hidden, spatial=c_in_spatial if i == 0 else 1,
                    node_id=f"fc{i}")
        x = cell.op("act", x, node_id=f"relu{i}")
        if not dropout_first:
            x = cell.op("dropout", x, p=0.5, node_id=f"dropout{i}")
    cell.set_output([cell.op("linear", x, channels=num_classes, node_id="fc2")])
    return cell


def vgg(config=VGG16, num_classes: int = 1000, name: str = "vgg16") -> CellChain:
    """Simonyan & Zisserman 2015; one cell per pooling stage."""
    cells, cell, x, conv = [], None, None, 0
    for item in config:
        if cell is None:
            cell = Cell(f"stage{len(cells) + 1}")
            x = cell.input(0)
        if item == "M":
            cell.set_output([cell.op("max_pool", x, stride=2, kernel=2, node_id="pool")])
            cells.append(cell)
            cell = None
        else:
            x = cell.op("conv", x, channels=item, kernel=3, bias=True, bn=False,
                        node_id=f"conv{conv}")
            conv += 1
    cells.append(mlp_head(7, 4096, num_classes, dropout_first=False))
    return CellChain(cells, name=name, family="VGG")


def alexnet(num_classes: int = 1000) -> CellChain:
    """Krizhevsky et al. 2012 as torchvision builds it (one GPU column, no LRN)."""
    cell = Cell("features")
    x = cell.input(0)
    for i, (channels, kernel, stride, padding, pool) in enumerate([
            (64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
            (256, 3, 1, 1, False), (256, 3, 1, 1, True)]):
        x = cell.op("conv", x, stride=stride, channels=channels, kernel=kernel,
                    padding=padding, bias=True, bn=False, node_id=f"conv{i}")
        if pool:
            x = cell.op("max_pool", x, stride=2, kernel=3, node_id=f"pool{i}")
    cell.set_output([x])
    return CellChain([cell, mlp_head(6, 4096, num_classes, dropout_first=True)],
                     name="alexnet", family="AlexNet")


register_model(ZooEntry("vgg16", "VGG", settings={"imagenet": {}}, build_chain=vgg,
                        doc="Simonyan & Zisserman 2015, configuration D, torchvision layout",
                        reference="torchvision.models.vgg16"))
register_model(ZooEntry("alexnet", "AlexNet", settings={"imagenet": {}}, build_chain=alexnet,
                        doc="Krizhevsky et al. 2012, torchvision layout",
                        reference="torchvision.models.alexnet"))
