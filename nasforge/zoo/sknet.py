"""Selective Kernel Networks (Li et al. 2019) as DSL chains, timm's ``skresnet18`` and
``skresnext50_32x4d`` (the paper's SKNet-50).

A selective-kernel unit is written out in the graph (Fig. 1 of the paper): Split -- two 3x3
paths, the second dilated by 2 (a 5x5 receptive field, the paper's "3x3 dilated" variant);
Fuse -- their sum, global average pool, 1x1 conv (no bias) -> BN -> ReLU to the attention
width; Select -- a 1x1 conv to 2 x C logits, and the ``sk_select`` combine (per-channel softmax
over the paths, weighted sum). In ``skresnet18`` each path reads its half of the input channels
(timm's ``split_input``, which keeps the parameter count near ResNet-18's); in SKNet-50 both
read the whole input, with 32 groups. Cells are named ``layerS.J`` and op node ids follow
timm's module paths (``conv1.paths.0``, ``conv1.attn.fc_reduce``), so weight import is a path
lookup.
"""
from __future__ import annotations

from functools import partial

from nasforge.dsl import Cell, CellChain
from nasforge.weights import cell_prefix, load_chain_state, module_prefixes, reference_module
from nasforge.zoo.registry import ZooEntry, register_model
from nasforge.zoo.resnet import classifier_head, conv_bn_act, imagenet_stem


def sk_unit(cell, src, c_in, c_out, stride, attention, name, groups=1, split_input=False):
    """Add a selective-kernel unit reading ``src`` to ``cell``; returns its output node.
    ``attention``: the width of the fuse layer (the paper's d)."""
    sources = [src, src]
    if split_input:
        half = c_in // 2
        sources = [cell.op("channel_slice", src, channels=half, start=i * half,
                           node_id=f"{name}.split{i}") for i in range(2)]
    paths = [conv_bn_act(cell, s, c_out, 3, stride, groups=groups, dilation=d,
                         node_id=f"{name}.paths.{i}")
             for i, (s, d) in enumerate(zip(sources, (1, 2)))]
    fused = cell.combine("add", *paths, node_id=f"{name}.fuse")
    x = cell.op("global_avg_pool", fused, node_id=f"{name}.attn.pool")
    x = conv_bn_act(cell, x, attention, 1, padding=0, node_id=f"{name}.attn.fc_reduce")
    logits = cell.op("conv", x, channels=2 * c_out, kernel=1, padding=0, bn=False, act="none",
                     node_id=f"{name}.attn.fc_select")
    return cell.combine("sk_select", logits, *paths, node_id=name)


def _shortcut(cell, h0, c_in, c_out, stride):
    if stride == 1 and c_in == c_out:
        return h0
    return conv_bn_act(cell, h0, c_out, 1, stride, act="none", padding=0, node_id="downsample")


def _close(cell, x, shortcut):
    total = cell.combine("add", x, shortcut, node_id="add")
    cell.set_output([cell.op("act", total, act="relu", node_id="relu")])
    return cell


def sk_basic_block(name, c_in, c_out, stride, attention) -> Cell:
    """timm's SelectiveKernelBasic: SK unit (split input, stride) -> 3x3 conv -> BN, + shortcut,
    ReLU."""
    cell = Cell(name)
    h0 = cell.input(0)
    x = sk_unit(cell, h0, c_in, c_out, stride, attention, "conv1", split_input=True)
    x = conv_bn_act(cell, x, c_out, 3, act="none", node_id="conv2")
    return _close(cell, x, _shortcut(cell, h0, c_in, c_out, stride))


def sk_bottleneck_block(name, c_in, width, c_out, stride, attention, groups) -> Cell:
    """timm's SelectiveKernelBottleneck (the paper's Table 1 block): 1x1 -> SK unit (groups,
    stride) -> 1x1 -> BN, + shortcut, ReLU."""
    cell = Cell(name)
    h0 = cell.input(0)
    x = conv_bn_act(cell, h0, width, 1, padding=0, node_id="conv1")
    x = sk_unit(cell, x, width, width, stride, attention, "conv2", groups=groups)
    x = conv_bn_act(cell, x, c_out, 1, act="none", padding=0, node_id="conv3")
    return _close(cell, x, _shortcut(cell, h0, c_in, c_out, stride))


# blocks per stage; attention widths per stage: timm's make_divisible(C * r, divisor) with
# r = 1/8, divisor 16 (skresnet18) and r = 1/16, divisor 32 (SKNet-50; the paper's
# d = max(C/r, L) with r = 16, L = 32)
SKRESNET18 = dict(layers=(2, 2, 2, 2), attention=(16, 16, 32, 64))
SKNET50 = dict(layers=(3, 4, 6, 3), attention=(32, 32, 32, 64), groups=32, width_per_group=4)


def skresnet(layers, attention, bottleneck=False, groups=1, width_per_group=64,
             num_classes=1000, name="skresnet") -> CellChain:
    """ResNet layout (7x7 stem, four stages, stride 2 in the first block of stages 2-4) with
    selective-kernel blocks."""
    cells, c_in = [imagenet_stem()], 64
    for stage, blocks in enumerate(layers):
        planes = 64 * 2 ** stage
        for j in range(blocks):
            stride = 2 if stage and j == 0 else 1
            cell_name = f"layer{stage + 1}.{j}"
            if bottleneck:
                width = planes * width_per_group // 64 * groups
                cells.append(sk_bottleneck_block(cell_name, c_in, width, planes * 4, stride,
                                                 attention[stage], groups))
                c_in = planes * 4
            else:
                cells.append(sk_basic_block(cell_name, c_in, planes, stride, attention[stage]))
                c_in = planes
    cells.append(classifier_head(num_classes))
    return CellChain(cells, name=name, family="SKNet")


def load_timm_sknet(model, state: dict):
    """Copy a timm ``skresnet18``/``skresnext50_32x4d`` state dict into the zoo's DSL version.
    Our conv ops hold timm's conv and the BN after it: ``conv1`` + ``bn1`` in the stem,
    ``attn.fc_reduce`` + ``attn.bn``; every other op is the module at its path."""
    modules = module_prefixes(state)

    def theirs(cell, key, op):
        if cell == "stem":
            return ["conv1", "bn1"]
        path = reference_module(modules, cell_prefix(cell) + key)
        if path.endswith("attn.fc_reduce"):
            return [path, path[:-len("fc_reduce")] + "bn"]
        return [path]

    return load_chain_state(model, state, theirs)


register_model(ZooEntry(
    "skresnet18", "SKNet", settings={"imagenet": {}},
    build_chain=partial(skresnet, **SKRESNET18, name="skresnet18"),
    import_weights=load_timm_sknet, reference="timm skresnet18",
    doc="Li et al. 2019 selective kernels on ResNet-18, timm's variant (split input, "
        "r = 1/8); 11,958,056 params"))
register_model(ZooEntry(
    "skresnext50_32x4d", "SKNet", settings={"imagenet": {}},
    build_chain=partial(skresnet, **SKNET50, bottleneck=True, name="skresnext50_32x4d"),
    import_weights=load_timm_sknet, reference="timm skresnext50_32x4d",
    doc="Li et al. 2019, SKNet-50 (Table 1: ResNeXt-50 32x4d with SK[M=2, G=32, r=16]); "
        "27,479,784 params (paper 27.5M); paper 4.47 GFLOPs (multiply-adds) at 224 px "
        "(Table 2)"))
