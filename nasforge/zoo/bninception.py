"""BN-Inception (Inception-v2; Ioffe & Szegedy 2015) as a DSL chain.

Layout of the paper's Figure 5 table, exactly as pretrainedmodels ``bninception`` (the Caffe
port whose ImageNet weights are in common use): GoogLeNet's stem with a 1x1-3x3 pair, modules
of 1x1 | 1x1-3x3 | 1x1-3x3-3x3 ("double 3x3" replacing the 5x5) | pool-1x1 projection, two
stride-2 modules (3c, 4e) that concatenate a 3x3/2 max pool instead, max pooling in 5b.
As in the reference, every conv has a bias and is followed by BN (eps 1e-5) and ReLU; pools use
ceil mode. Op node ids are the reference's module names (``inception_3a_1x1``), its BN
``NAME_bn``, so weight import is a name lookup. 11,295,240 parameters at 1000 classes.
"""
from __future__ import annotations

from nasforge.dsl import Cell, CellChain
from nasforge.weights import load_chain_state
from nasforge.zoo.registry import ZooEntry, register_model

# name: (#1x1, #3x3 reduce, #3x3, #double 3x3 reduce, #double 3x3, pool, pool projection)
# Ioffe & Szegedy 2015, Figure 5; stride-2 modules have no 1x1 branch and no projection.
BN_INCEPTION_MODULES = [
    ("3a", 64, 64, 64, 64, 96, "avg", 32),
    ("3b", 64, 64, 96, 64, 96, "avg", 64),
    ("3c", 0, 128, 160, 64, 96, "max_stride2", 0),
    ("4a", 224, 64, 96, 96, 128, "avg", 128),
    ("4b", 192, 96, 128, 96, 128, "avg", 128),
    ("4c", 160, 128, 160, 128, 160, "avg", 128),
    ("4d", 96, 128, 192, 160, 192, "avg", 128),
    ("4e", 0, 128, 192, 192, 256, "max_stride2", 0),
    ("5a", 352, 192, 320, 160, 224, "avg", 128),
    ("5b", 352, 192, 320, 192, 224, "max", 128),
]


def _conv(cell, src, channels, kernel, node_id, stride=1):
    """conv (bias, SAME padding) -> BN -> ReLU, the reference's conv/_bn/relu triple."""
    return cell.op("conv", src, stride=stride, channels=channels, node_id=node_id,
                   kernel=kernel, padding=kernel // 2, bias=True, act="relu")


def bn_inception_module(tag, c1x1, c3red, c3, cdred, cd, pool, proj) -> Cell:
    """One module of Figure 5; ``tag`` is its name there (``3a`` .. ``5b``)."""
    name = f"inception_{tag}"
    cell = Cell(name)
    h0 = cell.input(0)
    stride = 2 if pool == "max_stride2" else 1
    branches = [_conv(cell, h0, c1x1, 1, f"{name}_1x1")] if c1x1 else []
    x = _conv(cell, h0, c3red, 1, f"{name}_3x3_reduce")
    branches.append(_conv(cell, x, c3, 3, f"{name}_3x3", stride))
    x = _conv(cell, h0, cdred, 1, f"{name}_double_3x3_reduce")
    x = _conv(cell, x, cd, 3, f"{name}_double_3x3_1")
    branches.append(_conv(cell, x, cd, 3, f"{name}_double_3x3_2", stride))
    if pool == "max_stride2":
        branches.append(cell.op("max_pool", h0, stride=2, kernel=3, ceil_mode=True,
                                node_id=f"{name}_pool"))
    else:
        x = cell.op(f"{pool}_pool", h0, kernel=3, padding=1, ceil_mode=True,
                    node_id=f"{name}_pool")
        branches.append(_conv(cell, x, proj, 1, f"{name}_pool_proj"))
    cell.set_output(branches)
    return cell


def bn_inception(num_classes: int = 1000) -> CellChain:
    """Stem (7x7/2 64, 3x3/2 max pool, 1x1 64, 3x3 192, 3x3/2 max pool), the ten modules
    (3c and 4e halve the resolution), global average pool, FC."""
    stem = Cell("stem")
    x = _conv(stem, stem.input(0), 64, 7, "conv1_7x7_s2", stride=2)
    x = stem.op("max_pool", x, stride=2, kernel=3, ceil_mode=True, node_id="pool1_3x3_s2")
    x = _conv(stem, x, 64, 1, "conv2_3x3_reduce")
    x = _conv(stem, x, 192, 3, "conv2_3x3")
    stem.set_output([stem.op("max_pool", x, stride=2, kernel=3, ceil_mode=True,
                             node_id="pool2_3x3_s2")])
    head = Cell("head")
    x = head.op("global_avg_pool", head.input(0), node_id="global_pool")
    head.set_output([head.op("linear", x, channels=num_classes, node_id="last_linear")])
    cells = [stem] + [bn_inception_module(*spec) for spec in BN_INCEPTION_MODULES] + [head]
    return CellChain(cells, name="bn_inception", family="Inception")


def load_pretrainedmodels_bninception(model, state: dict):
    """Copy a pretrainedmodels ``bninception`` state dict into the zoo's ``bn_inception``:
    our op ``NAME`` holds the reference's ``NAME`` (conv) and ``NAME_bn``."""
    def theirs(cell, key, op):
        return [key] if key == "last_linear" else [key, f"{key}_bn"]

    return load_chain_state(model, state, theirs)


register_model(ZooEntry(
    "bn_inception", "Inception", settings={"imagenet": {"input_size": 224}},
    build_chain=bn_inception, import_weights=load_pretrainedmodels_bninception,
    reference="pretrainedmodels bninception",
    doc="Ioffe & Szegedy 2015 (Inception-v2), Figure 5; pretrainedmodels' Caffe layout "
        "(conv biases, ceil-mode pools). 11,295,240 params; 2.03G mult-adds at 224 px "
        "(the paper gives none)"))
