"""Inception-v4, Inception-ResNet-v1 and Inception-ResNet-v2 (Szegedy et al. 2016) as DSL chains.

Every module of the paper (Figures 3-20) is one cell with literal widths. Cells and op node ids
carry the module paths of the reference implementations (timm's ``features.K`` /
``repeat_1.J.branch1.0``, which timm took from Cadene's pretrainedmodels), so importing their
weights is a path lookup (``nasforge.weights.reference_module``). Every conv is conv (no bias,
padding 0 unless given) -> BN (eps 1e-3, TensorFlow's value) -> ReLU; the residual branches
end in a plain 1x1 conv with bias, scaled (``residual_scale``) before the add.

* ``inception_v4``: timm ``inception_v4`` and pretrainedmodels ``inceptionv4``, 42,679,816
  parameters at 1000 classes (pretrainedmodels: 8x8 average pool, i.e. global at 299 px).
* ``inception_resnet_v2``: timm ``inception_resnet_v2`` (classifier ``classif``) and
  pretrainedmodels ``inceptionresnetv2`` (``last_linear``), 55,843,464 parameters. Widths and
  block counts follow the released TF-slim model, as both references do, not the paper's
  Figures 15-19 (e.g. 320 channels in the 35x35 blocks where Fig. 16 draws 384; 10/20/10
  blocks where Fig. 15 draws 5/10/5; a 5x5-branch entry module, mixed_5b).
* ``inception_resnet_v1``: no reference with ImageNet weights exists; built from the paper's
  Figures 14 (stem), 10 (A, scale 0.17), 7 with Table 1's k, l, m, n = 192, 192, 256, 384
  (Reduction-A), 11 (B, 0.10), 12 (Reduction-B), 13 (C, 0.20) and 15 (5 x A, 10 x B, 5 x C;
  average pool, dropout keep 0.8, 1000-way classifier), plus the reference implementations'
  sixth Inception-ResNet-C without ReLU after the five of Fig. 15. Module names follow
  facenet-pytorch's ``InceptionResnetV1`` (the same layout, from davidsandberg/facenet), whose
  backbone has the same 22,564,096 parameters and imports into this one (features equal);
  its head is a 512-d face embedding instead (not modelled).
"""
from __future__ import annotations

from functools import partial

from nasforge.dsl import Cell, CellChain
from nasforge.weights import (WeightImportError, cell_prefix, load_chain_state,
                              module_prefixes, reference_module)
from nasforge.zoo.registry import ZooEntry, register_model

TF_BN_EPS = 1e-3  # the references' BN epsilon, TensorFlow's default


def _unit(cell, src, channels, kernel, node_id, stride=1, padding=0):
    """conv -> BN(eps 1e-3) -> ReLU; padding 0 (VALID) unless given, lists for 1x7/7x1."""
    return cell.op("conv", src, stride=stride, channels=channels, node_id=node_id,
                   kernel=kernel, padding=padding, bn_eps=TF_BN_EPS, act="relu")


ROW7, COL7 = dict(kernel=[1, 7], padding=[0, 3]), dict(kernel=[7, 1], padding=[3, 0])
ROW3, COL3 = dict(kernel=[1, 3], padding=[0, 1]), dict(kernel=[3, 1], padding=[1, 0])


def _chain(cell, src, convs, branch):
    """A branch of convs ``(channels, kernel-args)`` named ``branch.0``, ``branch.1``, ..."""
    for i, (channels, args) in enumerate(convs):
        src = _unit(cell, src, channels, node_id=f"{branch}.{i}", **args)
    return src


def _kernel(kernel, stride=1, padding=0):
    return dict(kernel=kernel, stride=stride, padding=padding)


# branch conv shapes: 1x1; 3x3 SAME; 3x3 VALID; 3x3/2 VALID (the figures' "V")
K1, K3, K3_VALID, K3_S2 = _kernel(1), _kernel(3, padding=1), _kernel(3), _kernel(3, stride=2)


def _avg_pool_branch(cell, src, channels, branch):
    """3x3/1 average pool (padding not counted, TF's SAME) -> 1x1 conv."""
    x = cell.op("avg_pool", src, kernel=3, padding=1, count_include_pad=False,
                node_id=f"{branch}.0")
    return _unit(cell, x, channels, 1, node_id=f"{branch}.1")


def _max_pool(cell, src, node_id):
    return cell.op("max_pool", src, stride=2, kernel=3, node_id=node_id)


def _head(num_classes: int, fc: str, dropout: float = 0.0, pre: tuple | None = None) -> Cell:
    """(1x1 conv ``pre`` = (node id, channels)) -> global average pool -> (dropout) -> FC."""
    cell = Cell("head")
    x = cell.input(0)
    if pre is not None:
        x = _unit(cell, x, pre[1], 1, node_id=pre[0])
    x = cell.op("global_avg_pool", x, node_id="global_pool")
    if dropout:
        x = cell.op("dropout", x, p=dropout, node_id="dropout")
    cell.set_output([cell.op("linear", x, channels=num_classes, node_id=fc)])
    return cell


# ------------------------------------------------------------------------------ Inception-v4
def v4_stem() -> Cell:
    """Fig. 3 up to the first filter concat: 3x3/2 (32, V), 3x3 (32, V), 3x3 (64, SAME)."""
    cell = Cell("stem")
    x = _unit(cell, cell.input(0), 32, 3, "features.0", stride=2)
    x = _unit(cell, x, 32, 3, "features.1")
    cell.set_output([_unit(cell, x, 64, 3, "features.2", padding=1)])
    return cell


def mixed_3a(name: str) -> Cell:
    """Fig. 3: 3x3/2 max pool (V) | 3x3/2 conv 96 (V)."""
    cell = Cell(name)
    h0 = cell.input(0)
    cell.set_output([_max_pool(cell, h0, "maxpool"), _unit(cell, h0, 96, 3, "conv", stride=2)])
    return cell


def mixed_4a(name: str) -> Cell:
    """Fig. 3: 1x1 64 - 3x3 96 (V) | 1x1 64 - 7x1 64 - 1x7 64 - 3x3 96 (V) (timm: 1x7 first)."""
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _chain(cell, h0, [(64, K1), (96, K3_VALID)], "branch0")
    b1 = _chain(cell, h0, [(64, K1), (64, ROW7), (64, COL7), (96, K3_VALID)], "branch1")
    cell.set_output([b0, b1])
    return cell


def mixed_5a(name: str) -> Cell:
    """Fig. 3: 3x3/2 conv 192 (V) | 3x3/2 max pool (V)."""
    cell = Cell(name)
    h0 = cell.input(0)
    cell.set_output([_unit(cell, h0, 192, 3, "conv", stride=2), _max_pool(cell, h0, "maxpool")])
    return cell


def v4_inception_a(name: str) -> Cell:
    """Fig. 4 (35x35): avg pool-1x1 96 | 1x1 96 | 1x1 64-3x3 96 | 1x1 64-3x3 96-3x3 96."""
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _unit(cell, h0, 96, 1, "branch0")
    b1 = _chain(cell, h0, [(64, K1), (96, K3)], "branch1")
    b2 = _chain(cell, h0, [(64, K1), (96, K3), (96, K3)],
                "branch2")
    cell.set_output([b0, b1, b2, _avg_pool_branch(cell, h0, 96, "branch3")])
    return cell


def reduction_a(name: str, k: int, l: int, m: int, n: int) -> Cell:
    """Fig. 7 (35 -> 17) with Table 1's filter counts: 3x3/2 n | 1x1 k-3x3 l-3x3/2 m |
    3x3/2 max pool."""
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _unit(cell, h0, n, 3, "branch0", stride=2)
    b1 = _chain(cell, h0, [(k, K1), (l, K3), (m, K3_S2)], "branch1")
    cell.set_output([b0, b1, _max_pool(cell, h0, "branch2")])
    return cell


def v4_inception_b(name: str) -> Cell:
    """Fig. 5 (17x17): avg pool-1x1 128 | 1x1 384 | 1x1 192-1x7 224-7x1 256 |
    1x1 192-7x1 192-1x7 224-7x1 224-1x7 256 (the figure's order of 1x7/7x1, as timm)."""
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _unit(cell, h0, 384, 1, "branch0")
    b1 = _chain(cell, h0, [(192, K1), (224, ROW7), (256, COL7)], "branch1")
    b2 = _chain(cell, h0, [(192, K1), (192, COL7), (224, ROW7), (224, COL7), (256, ROW7)],
                "branch2")
    cell.set_output([b0, b1, b2, _avg_pool_branch(cell, h0, 128, "branch3")])
    return cell


def v4_reduction_b(name: str) -> Cell:
    """Fig. 8 (17 -> 8): 1x1 192-3x3/2 192 | 1x1 256-1x7 256-7x1 320-3x3/2 320 | max pool."""
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _chain(cell, h0, [(192, K1), (192, K3_S2)], "branch0")
    b1 = _chain(cell, h0, [(256, K1), (256, ROW7), (320, COL7), (320, K3_S2)],
                "branch1")
    cell.set_output([b0, b1, _max_pool(cell, h0, "branch2")])
    return cell


def v4_inception_c(name: str) -> Cell:
    """Fig. 6 (8x8): 1x1 256 | 1x1 384-(1x3 256, 3x1 256) | 1x1 384-3x1 448-1x3 512-
    (1x3 256, 3x1 256) | avg pool-1x1 256 (timm's branch names, the split outputs concatenated
    in place)."""
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _unit(cell, h0, 256, 1, "branch0")
    b1 = _unit(cell, h0, 384, 1, "branch1_0")
    b1a = _unit(cell, b1, 256, node_id="branch1_1a", **ROW3)
    b1b = _unit(cell, b1, 256, node_id="branch1_1b", **COL3)
    b2 = _unit(cell, h0, 384, 1, "branch2_0")
    b2 = _unit(cell, b2, 448, node_id="branch2_1", **COL3)
    b2 = _unit(cell, b2, 512, node_id="branch2_2", **ROW3)
    b2a = _unit(cell, b2, 256, node_id="branch2_3a", **ROW3)
    b2b = _unit(cell, b2, 256, node_id="branch2_3b", **COL3)
    cell.set_output([b0, b1a, b1b, b2a, b2b, _avg_pool_branch(cell, h0, 256, "branch3")])
    return cell


def inception_v4(num_classes: int = 1000) -> CellChain:
    """Fig. 9: stem, 4 x Inception-A, Reduction-A (k, l, m, n = 192, 224, 256, 384),
    7 x Inception-B, Reduction-B, 3 x Inception-C, average pool, FC (1536 features)."""
    modules = [mixed_3a, mixed_4a, mixed_5a] + [v4_inception_a] * 4 + \
        [partial(reduction_a, k=192, l=224, m=256, n=384)] + [v4_inception_b] * 7 + \
        [v4_reduction_b] + [v4_inception_c] * 3
    cells = [v4_stem()] + [make(f"features.{i}") for i, make in enumerate(modules, 3)]
    cells.append(_head(num_classes, "last_linear"))
    return CellChain(cells, name="inception_v4", family="Inception")


# --------------------------------------------------------------------- Inception-ResNet blocks
def _residual_block(cell, h0, branches, width, scale, relu=True):
    """concat(branches) -> 1x1 conv to ``width`` (bias, no BN, linear) -> x ``scale`` -> add
    the input -> (ReLU): the Inception-ResNet unit (Figs. 10-13, 16-19; Sec. 3.3)."""
    x = cell.combine("concat", *branches, node_id="concat")
    x = cell.op("conv", x, channels=width, kernel=1, padding=0, bias=True, bn=False,
                act="none", node_id="conv2d")
    x = cell.op("residual_scale", x, factor=scale, node_id="scale")
    x = cell.combine("add", x, h0, node_id="add")
    cell.set_output([cell.op("act", x, act="relu", node_id="relu") if relu else x])
    return cell


def block35(name: str, c_in: int, widths: tuple, scale: float) -> Cell:
    """Inception-ResNet-A (35x35): 1x1 a | 1x1 a-3x3 b | 1x1 a-3x3 c-3x3 d, widths
    (a, b, c, d)."""
    a, b, c, d = widths
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _unit(cell, h0, a, 1, "branch0")
    b1 = _chain(cell, h0, [(a, K1), (b, K3)], "branch1")
    b2 = _chain(cell, h0, [(a, K1), (c, K3), (d, K3)], "branch2")
    return _residual_block(cell, h0, [b0, b1, b2], c_in, scale)


def block17(name: str, c_in: int, widths: tuple, scale: float) -> Cell:
    """Inception-ResNet-B (17x17): 1x1 a | 1x1 b-1x7 c-7x1 d, widths (a, b, c, d)."""
    a, b, c, d = widths
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _unit(cell, h0, a, 1, "branch0")
    b1 = _chain(cell, h0, [(b, K1), (c, ROW7), (d, COL7)], "branch1")
    return _residual_block(cell, h0, [b0, b1], c_in, scale)


def block8(name: str, c_in: int, widths: tuple, scale: float, relu: bool = True) -> Cell:
    """Inception-ResNet-C (8x8): 1x1 a | 1x1 b-1x3 c-3x1 d, widths (a, b, c, d)."""
    a, b, c, d = widths
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _unit(cell, h0, a, 1, "branch0")
    b1 = _chain(cell, h0, [(b, K1), (c, ROW3), (d, COL3)], "branch1")
    return _residual_block(cell, h0, [b0, b1], c_in, scale, relu)


def _resnet_stem(last: tuple) -> Cell:
    """The stem shared by both Inception-ResNets' references: 3x3/2 32 (V), 3x3 32 (V), 3x3 64,
    3x3/2 max pool, 1x1 80, 3x3 192 (V), then ``last``: ("maxpool_5a",) for v2 (TF-slim),
    ("conv2d_4b", 256) for v1 (a 3x3/2 conv, Fig. 14)."""
    cell = Cell("stem")
    x = _unit(cell, cell.input(0), 32, 3, "conv2d_1a", stride=2)
    x = _unit(cell, x, 32, 3, "conv2d_2a")
    x = _unit(cell, x, 64, 3, "conv2d_2b", padding=1)
    x = _max_pool(cell, x, "maxpool_3a")
    x = _unit(cell, x, 80, 1, "conv2d_3b")
    x = _unit(cell, x, 192, 3, "conv2d_4a")
    x = _max_pool(cell, x, last[0]) if len(last) == 1 else \
        _unit(cell, x, last[1], 3, last[0], stride=2)
    cell.set_output([x])
    return cell


def irv2_mixed_5b(name: str) -> Cell:
    """TF-slim's 35x35 entry module: 1x1 96 | 1x1 48-5x5 64 | 1x1 64-3x3 96-3x3 96 |
    avg pool-1x1 64 (320 channels)."""
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _unit(cell, h0, 96, 1, "branch0")
    b1 = _chain(cell, h0, [(48, K1), (64, _kernel(5, padding=2))], "branch1")
    b2 = _chain(cell, h0, [(64, K1), (96, K3), (96, K3)],
                "branch2")
    cell.set_output([b0, b1, b2, _avg_pool_branch(cell, h0, 64, "branch3")])
    return cell


def reduction_b(name: str, widths: tuple) -> Cell:
    """Inception-ResNet Reduction-B (Figs. 12/18): 1x1 p-3x3/2 q | 1x1 p-3x3/2 r |
    1x1 p-3x3 s-3x3/2 t | 3x3/2 max pool, widths (p, q, r, s, t)."""
    p, q, r, s, t = widths
    cell = Cell(name)
    h0 = cell.input(0)
    b0 = _chain(cell, h0, [(p, K1), (q, K3_S2)], "branch0")
    b1 = _chain(cell, h0, [(p, K1), (r, K3_S2)], "branch1")
    b2 = _chain(cell, h0, [(p, K1), (s, K3), (t, K3_S2)], "branch2")
    cell.set_output([b0, b1, b2, _max_pool(cell, h0, "branch3")])
    return cell


def _repeat(make, prefix: str, count: int, *args, **kw) -> list[Cell]:
    return [make(f"{prefix}.{j}", *args, **kw) for j in range(count)]


def inception_resnet_v2(num_classes: int = 1000) -> CellChain:
    """TF-slim / timm layout: stem, mixed_5b (320), 10 x block35 (0.17), mixed_6a
    (Reduction-A, k, l, m, n = 256, 256, 384, 384), 20 x block17 (0.10), mixed_7a
    (Reduction-B), 9 x block8 (0.20) and one without ReLU, 1x1 conv to 1536, pool, FC."""
    cells = [_resnet_stem(("maxpool_5a",)), irv2_mixed_5b("mixed_5b")]
    cells += _repeat(block35, "repeat", 10, 320, (32, 32, 48, 64), 0.17)
    cells.append(reduction_a("mixed_6a", k=256, l=256, m=384, n=384))
    cells += _repeat(block17, "repeat_1", 20, 1088, (192, 128, 160, 192), 0.10)
    cells.append(reduction_b("mixed_7a", (256, 384, 288, 288, 320)))
    cells += _repeat(block8, "repeat_2", 9, 2080, (192, 192, 224, 256), 0.20)
    cells.append(block8("block8", 2080, (192, 192, 224, 256), 1.0, relu=False))
    cells.append(_head(num_classes, "classif", pre=("conv2d_7b", 1536)))
    return CellChain(cells, name="inception_resnet_v2", family="Inception")


def inception_resnet_v1(num_classes: int = 1000, dropout: float = 0.2) -> CellChain:
    """Szegedy et al. 2016, Fig. 15 with the Inception-ResNet-v1 modules: stem (Fig. 14,
    256 channels at 35x35), 5 x A (Fig. 10: 32 | 32-32 | 32-32-32, 1x1 to 256), Reduction-A
    (Fig. 7, Table 1: 192, 192, 256, 384 -> 896), 10 x B (Fig. 11: 128 | 128-1x7 128-7x1 128,
    1x1 to 896), Reduction-B (Fig. 12: 256-384 | 256-256 | 256-256-256 -> 1792), 5 x C
    (Fig. 13: 192 | 192-1x3 192-3x1 192, 1x1 to 1792) and a sixth C without ReLU (Fig. 15
    draws 5; the reference implementations have the sixth, which we follow), average pool,
    dropout (keep 0.8), FC. Residual scales 0.17 / 0.10 / 0.20 (Sec. 3.3 gives 0.1-0.3; the
    values of the released code)."""
    cells = [_resnet_stem(("conv2d_4b", 256))]
    cells += _repeat(block35, "repeat_1", 5, 256, (32, 32, 32, 32), 0.17)
    cells.append(reduction_a("mixed_6a", k=192, l=192, m=256, n=384))
    cells += _repeat(block17, "repeat_2", 10, 896, (128, 128, 128, 128), 0.10)
    cells.append(reduction_b("mixed_7a", (256, 384, 256, 256, 256)))
    cells += _repeat(block8, "repeat_3", 5, 1792, (192, 192, 192, 192), 0.20)
    cells.append(block8("block8", 1792, (192, 192, 192, 192), 1.0, relu=False))
    cells.append(_head(num_classes, "fc", dropout=dropout))
    return CellChain(cells, name="inception_resnet_v1", family="Inception")


# ---------------------------------------------------------------------------------- import
def load_inception_state(model, state: dict, classifier: str | None = None):
    """Copy a timm or pretrainedmodels state dict (``inception_v4``/``inceptionv4``,
    ``inception_resnet_v2``/``inceptionresnetv2``) into the zoo's DSL version: each op is the
    reference module at its path, the classifier under whichever name the reference uses
    (timm's ``classif`` or pretrainedmodels' ``last_linear``)."""
    modules = module_prefixes(state)
    heads = {"last_linear", "classif"}

    def theirs(cell, key, op):
        if key in heads:
            found = [h for h in heads if h in modules]
            if len(found) != 1:
                raise WeightImportError(f"no single classifier ({' or '.join(sorted(heads))}) "
                                        f"in the state dict")
            return [found[0]]
        return [reference_module(modules, cell_prefix(cell) + key)]

    return load_chain_state(model, state, theirs)


def load_facenet_backbone(model, state: dict):
    """Copy facenet-pytorch ``InceptionResnetV1`` weights into ``inception_resnet_v1``, all but
    the classifier: theirs is a 512-d embedding (``last_linear``, ``last_bn``, ``logits``,
    dropped), ours (``fc``) keeps its own weights."""
    head = ("last_linear.", "last_bn.", "logits.")
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    state.update({f"fc.{k}": v for k, v in model.blocks[-1].ops["fc"].state_dict().items()})
    return load_inception_state(model, state)


# ---------------------------------------------------------------------------------- zoo
register_model(ZooEntry(
    "inception_v4", "Inception",
    settings={"imagenet": {"input_size": 299, "min_input_size": 75}},
    build_chain=inception_v4, import_weights=load_inception_state,
    reference="timm inception_v4 (pretrainedmodels inceptionv4: same parameters)",
    doc="Szegedy et al. 2016, Figs. 3-9; timm/pretrainedmodels layout (TF-slim's release). "
        "Params 42,679,816 (timm = pretrainedmodels); 12.25G mult-adds at 299 px (the "
        "paper gives none)"))
register_model(ZooEntry(
    "inception_resnet_v2", "Inception",
    settings={"imagenet": {"input_size": 299, "min_input_size": 75}},
    build_chain=inception_resnet_v2, import_weights=load_inception_state,
    reference="timm inception_resnet_v2 (pretrainedmodels inceptionresnetv2: same parameters)",
    doc="Szegedy et al. 2016, Figs. 3, 7, 16-19 with TF-slim's widths (as timm and "
        "pretrainedmodels); params 55,843,464; 13.16G mult-adds at 299 px (the paper gives none)"))
register_model(ZooEntry(
    "inception_resnet_v1", "Inception",
    settings={"imagenet": {"input_size": 299, "min_input_size": 75}},
    build_chain=inception_resnet_v1, import_weights=load_facenet_backbone,
    reference="paper (Szegedy et al. 2016, Figs. 7, 10-15, Table 1); backbone = "
              "facenet-pytorch InceptionResnetV1 (22,564,096 params)",
    doc="Szegedy et al. 2016, Inception-ResNet-v1 from the figures; ImageNet head (avg pool, "
        "dropout 0.2, FC); facenet-pytorch's module names, its weights import for the "
        "backbone"))
