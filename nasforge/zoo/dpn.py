"""Dual Path Networks (Chen et al. 2017) as DSL chains.

A dual path block shares one bottleneck between a residual path (ResNet: its first ``c``
output channels are added to the residual state) and a densely connected path (DenseNet: its
last ``inc`` channels are appended to the dense state). Between blocks both paths travel as one
concatenated state [residual (c) | dense], as in timm's ``DualPathBlock``, so each block is a
single-input cell: ``channel_slice`` ops split states, an ``add`` and the output concatenation
join them. Pre-activation convs (BN -> ReLU -> conv, ``bn_act_conv``), BN eps 1e-3; the first
block of each stage projects the input (1x1, stride 2 after the first stage) into both paths.
Cells and op node ids are timm's module paths (``features.conv3_1``, ``c1x1_w_s2``,
``c3x3_b``), so weight import is a path lookup.
"""
from __future__ import annotations

from functools import partial

from nasforge.dsl import Cell, CellChain
from nasforge.weights import cell_prefix, load_chain_state, module_prefixes, reference_module
from nasforge.zoo.registry import ZooEntry, register_model

DPN_BN_EPS = 1e-3  # the MXNet original's, kept by timm

# Chen et al. 2017, Table 1 (and the authors' MXNet code): stem width and kernel, bottleneck
# width k_r of the first stage, groups G, blocks per stage, dense increment per stage, and
# whether the stage widths are the "small" ones (residual width 64/128/256/512 instead of x4).
DPN_CONFIGS = {
    "dpn68": dict(stem=10, stem_kernel=3, k_r=128, groups=32, blocks=(3, 4, 12, 3),
                  inc=(16, 32, 32, 64), small=True),
    "dpn92": dict(stem=64, stem_kernel=7, k_r=96, groups=32, blocks=(3, 4, 20, 3),
                  inc=(16, 32, 24, 128), small=False),
}


def _pre_act_conv(cell, src, channels, kernel, node_id, stride=1, groups=1):
    return cell.op("bn_act_conv", src, stride=stride, channels=channels, node_id=node_id,
                   kernel=kernel, groups=groups, bn_eps=DPN_BN_EPS)


def _slice(cell, src, start, channels, node_id):
    return cell.op("channel_slice", src, channels=channels, start=start, node_id=node_id)


def dual_path_block(name: str, c_in: int, bottleneck: int, residual: int, inc: int,
                    groups: int, kind: str) -> Cell:
    """One block. ``kind``: ``proj`` (first block, stride 1), ``down`` (first block of a
    later stage, stride 2) or ``normal``. Output: [residual + branch's first ``residual``
    channels | dense state | branch's last ``inc`` channels]."""
    cell = Cell(name)
    h0 = cell.input(0)
    stride = 2 if kind == "down" else 1
    if kind == "normal":
        source, dense = h0, c_in - residual
    else:
        source = _pre_act_conv(cell, h0, residual + 2 * inc, 1, f"c1x1_w_s{stride}",
                               stride=stride)
        dense = 2 * inc
    res_state = _slice(cell, source, 0, residual, "x_s1")
    dense_state = _slice(cell, source, residual, dense, "x_s2")
    x = _pre_act_conv(cell, h0, bottleneck, 1, "c1x1_a")
    x = _pre_act_conv(cell, x, bottleneck, 3, "c3x3_b", stride=stride, groups=groups)
    x = _pre_act_conv(cell, x, residual + inc, 1, "c1x1_c")
    res_out = _slice(cell, x, 0, residual, "out1")
    dense_out = _slice(cell, x, residual, inc, "out2")
    total = cell.combine("add", res_state, res_out, node_id="resid")
    cell.set_output([total, dense_state, dense_out])
    return cell


def dpn(stem: int, stem_kernel: int, k_r: int, groups: int, blocks: tuple, inc: tuple,
        small: bool, num_classes: int = 1000, name: str = "dpn") -> CellChain:
    """Stem conv (/2) -> BN -> ReLU -> 3x3/2 max pool, four stages of dual path blocks, BN ->
    ReLU over the concatenated paths, global average pool, 1x1 conv classifier (timm's)."""
    stem_cell = Cell("stem")
    x = stem_cell.op("conv", stem_cell.input(0), stride=2, channels=stem, kernel=stem_kernel,
                     bn_eps=DPN_BN_EPS, node_id="features.conv1_1")
    stem_cell.set_output([stem_cell.op("max_pool", x, stride=2, kernel=3, padding=1,
                                       node_id="features.conv1_pool")])
    cells, c_in = [stem_cell], stem
    for stage, (depth, increment) in enumerate(zip(blocks, inc)):
        base = 64 * 2 ** stage
        residual = base if small else 4 * base
        bottleneck = k_r * base // 64
        for j in range(depth):
            kind = "normal" if j else ("proj" if stage == 0 else "down")
            cells.append(dual_path_block(f"features.conv{stage + 2}_{j + 1}", c_in, bottleneck,
                                         residual, increment, groups, kind))
            c_in = residual + (3 + j) * increment
    head = Cell("head")
    # ReLU as timm's module (its fc_act_layer="elu" argument does not reach the layer)
    x = head.op("bn_act", head.input(0), bn_eps=DPN_BN_EPS,
                node_id="features.conv5_bn_ac")
    x = head.op("global_avg_pool", x, node_id="global_pool")
    head.set_output([head.op("conv", x, channels=num_classes, kernel=1, bias=True, bn=False,
                             act="none", node_id="classifier")])
    return CellChain(cells + [head], name=name, family="DPN")


def load_timm_dpn(model, state: dict):
    """Copy a timm ``dpn68``/``dpn92`` state dict into the zoo's DSL version (each op is the
    timm module at its path; ours hold BN then conv in timm's registration order)."""
    modules = module_prefixes(state)
    return load_chain_state(model, state, lambda cell, key, op: [
        reference_module(modules, cell_prefix(cell) + key)])


for _name, _mult_adds in [("dpn68", "2.5G"), ("dpn92", "6.5G")]:
    register_model(ZooEntry(
        _name, "DPN", settings={"imagenet": {}},
        build_chain=partial(dpn, **DPN_CONFIGS[_name], name=_name),
        import_weights=load_timm_dpn, reference=f"timm {_name}",
        doc=f"Chen et al. 2017, Table 1; timm layout (1x1 conv classifier). Paper: {_mult_adds} "
            f"FLOPs (multiply-adds) at 224 px, Table 2 (DPN-68: the authors' README)"))
