"""The Inception family as DSL chains: GoogLeNet (Inception v1), Inception v3 and Xception.

Every Inception module is one cell: its branches read the cell input and the cell output
concatenates their last states (torchvision's branch order). Op node ids are the reference's
module names (dots included; the compiler turns them into ``_``), so the weight importers are
name lookups. References, with random weights, parameter counts at 1000 classes:

* ``googlenet``: torchvision ``googlenet(aux_logits=False)``, 6,624,904. As in torchvision the
  "5x5" branch uses a 3x3 conv (pytorch/vision#906; the paper's 5x5 would give 7,005,832)
  and every conv has BN (the paper has none, and LRN in the stem). torchvision's two auxiliary
  heads (13,004,888 with them) are ``googlenet_aux`` cells, not attached: a CellChain holds one
  auxiliary branch.
* ``inception_v3``: torchvision ``inception_v3``, 27,161,264 with the auxiliary head (option
  ``aux_logits``, default True like torchvision), 23,834,568 without; ``transform_input`` is
  not modelled (it is False unless torchvision loads its pretrained weights).
* ``xception``: timm ``legacy_xception`` (Chollet 2017, Keras port), 22,855,952.
"""
from __future__ import annotations

from nasforge.dsl import Cell, CellChain
from nasforge.weights import cell_prefix, load_chain_state
from nasforge.zoo.registry import ZooEntry, register_model
from nasforge.zoo.resnet import classifier_head

TV_BN_EPS = 1e-3  # torchvision's BasicConv2d (Inception v1/v3)


def _basic(cell, src, channels, kernel, stride=1, padding=0, node_id=None):
    """torchvision's BasicConv2d: conv (no bias, padding 0 unless given) -> BN(eps 1e-3) ->
    ReLU. Asymmetric kernels/paddings are lists (JSON keeps lists as lists)."""
    return cell.op("conv", src, stride=stride, channels=channels, node_id=node_id,
                   kernel=kernel, padding=padding, bn_eps=TV_BN_EPS, act="relu")


def _pool_cell(name, kernel, stride, **args) -> Cell:
    cell = Cell(name)
    cell.set_output([cell.op("max_pool", cell.input(0), stride=stride, kernel=kernel,
                             node_id=name, **args)])
    return cell


# ------------------------------------------------------------------------------ GoogLeNet
def googlenet_module(name, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj) -> Cell:
    """Inception (v1) module, torchvision's: 1x1 | 1x1-3x3 | 1x1-"5x5" (3x3, see the module
    doc) | 3x3/1 max pool (ceil mode)-1x1."""
    cell = Cell(name)
    h0 = cell.input(0)
    b1 = _basic(cell, h0, ch1x1, 1, node_id="branch1")
    b2 = _basic(cell, h0, ch3x3red, 1, node_id="branch2.0")
    b2 = _basic(cell, b2, ch3x3, 3, padding=1, node_id="branch2.1")
    b3 = _basic(cell, h0, ch5x5red, 1, node_id="branch3.0")
    b3 = _basic(cell, b3, ch5x5, 3, padding=1, node_id="branch3.1")
    b4 = cell.op("max_pool", h0, kernel=3, padding=1, ceil_mode=True, node_id="branch4.0")
    b4 = _basic(cell, b4, pool_proj, 1, node_id="branch4.1")
    cell.set_output([b1, b2, b3, b4])
    return cell


def googlenet_aux(num_classes: int, name: str = "aux") -> Cell:
    """torchvision's GoogLeNet auxiliary classifier: 4x4 adaptive average pool -> 1x1 conv
    (128) -> fc (1024) -> ReLU -> dropout 0.7 -> fc. GoogLeNet has two (after inception4a and
    4d); a CellChain holds one auxiliary branch, so ``googlenet`` does not attach them yet."""
    cell = Cell(name)
    x = cell.op("global_avg_pool", cell.input(0), size=4, node_id="pool")
    x = _basic(cell, x, 128, 1, node_id="conv")
    x = cell.op("linear", x, channels=1024, spatial=4, node_id="fc1")
    x = cell.op("act", x, act="relu", node_id="relu")
    x = cell.op("dropout", x, p=0.7, node_id="dropout")
    cell.set_output([cell.op("linear", x, channels=num_classes, node_id="fc2")])
    return cell


GOOGLENET_MODULES = [  # name, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj
    ("inception3a", 64, 96, 128, 16, 32, 32), ("inception3b", 128, 128, 192, 32, 96, 64),
    ("maxpool3", 3),
    ("inception4a", 192, 96, 208, 16, 48, 64), ("inception4b", 160, 112, 224, 24, 64, 64),
    ("inception4c", 128, 128, 256, 24, 64, 64), ("inception4d", 112, 144, 288, 32, 64, 64),
    ("inception4e", 256, 160, 320, 32, 128, 128),
    ("maxpool4", 2),
    ("inception5a", 256, 160, 320, 32, 128, 128), ("inception5b", 384, 192, 384, 48, 128, 128),
]


def googlenet(num_classes: int = 1000, aux_logits: bool = False,
              dropout: float = 0.2) -> CellChain:
    """Szegedy et al. 2015, torchvision's GoogLeNet without auxiliary heads (its pretrained
    configuration)."""
    if aux_logits:
        raise ValueError("googlenet: the two auxiliary heads need a chain with several "
                         "auxiliary branches (CellChain has one); build with aux_logits=False")
    stem = Cell("stem")
    x = _basic(stem, stem.input(0), 64, 7, stride=2, padding=3, node_id="conv1")
    x = stem.op("max_pool", x, stride=2, kernel=3, ceil_mode=True, node_id="maxpool1")
    x = _basic(stem, x, 64, 1, node_id="conv2")
    x = _basic(stem, x, 192, 3, padding=1, node_id="conv3")
    stem.set_output([stem.op("max_pool", x, stride=2, kernel=3, ceil_mode=True,
                             node_id="maxpool2")])
    cells = [stem]
    for spec in GOOGLENET_MODULES:
        cells.append(_pool_cell(spec[0], spec[1], 2, ceil_mode=True) if len(spec) == 2
                     else googlenet_module(*spec))
    cells.append(classifier_head(num_classes, dropout=dropout))
    return CellChain(cells, name="googlenet", family="Inception")


# --------------------------------------------------------------------------- Inception v3
def inception_a(name: str, pool_features: int) -> Cell:
    """35x35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | 3x3 avg pool-1x1."""
    cell = Cell(name)
    h0 = cell.input(0)
    b1 = _basic(cell, h0, 64, 1, node_id="branch1x1")
    b5 = _basic(cell, h0, 48, 1, node_id="branch5x5_1")
    b5 = _basic(cell, b5, 64, 5, padding=2, node_id="branch5x5_2")
    b3 = _basic(cell, h0, 64, 1, node_id="branch3x3dbl_1")
    b3 = _basic(cell, b3, 96, 3, padding=1, node_id="branch3x3dbl_2")
    b3 = _basic(cell, b3, 96, 3, padding=1, node_id="branch3x3dbl_3")
    bp = cell.op("avg_pool", h0, kernel=3, padding=1, node_id="avg_pool")
    bp = _basic(cell, bp, pool_features, 1, node_id="branch_pool")
    cell.set_output([b1, b5, b3, bp])
    return cell


def inception_b(name: str) -> Cell:
    """35 -> 17 grid reduction: 3x3/2 | 1x1-3x3-3x3/2 | 3x3/2 max pool."""
    cell = Cell(name)
    h0 = cell.input(0)
    b3 = _basic(cell, h0, 384, 3, stride=2, node_id="branch3x3")
    bd = _basic(cell, h0, 64, 1, node_id="branch3x3dbl_1")
    bd = _basic(cell, bd, 96, 3, padding=1, node_id="branch3x3dbl_2")
    bd = _basic(cell, bd, 96, 3, stride=2, node_id="branch3x3dbl_3")
    bp = cell.op("max_pool", h0, stride=2, kernel=3, node_id="max_pool")
    cell.set_output([b3, bd, bp])
    return cell


def inception_c(name: str, c7: int) -> Cell:
    """17x17 module with factorized 7x7s: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | pool-1x1."""
    cell = Cell(name)
    h0 = cell.input(0)
    row, col = dict(kernel=[1, 7], padding=[0, 3]), dict(kernel=[7, 1], padding=[3, 0])
    b1 = _basic(cell, h0, 192, 1, node_id="branch1x1")
    b7 = _basic(cell, h0, c7, 1, node_id="branch7x7_1")
    b7 = _basic(cell, b7, c7, node_id="branch7x7_2", **row)
    b7 = _basic(cell, b7, 192, node_id="branch7x7_3", **col)
    bd = _basic(cell, h0, c7, 1, node_id="branch7x7dbl_1")
    for i, (width, shape) in enumerate([(c7, col), (c7, row), (c7, col), (192, row)], 2):
        bd = _basic(cell, bd, width, node_id=f"branch7x7dbl_{i}", **shape)
    bp = cell.op("avg_pool", h0, kernel=3, padding=1, node_id="avg_pool")
    bp = _basic(cell, bp, 192, 1, node_id="branch_pool")
    cell.set_output([b1, b7, bd, bp])
    return cell


def inception_d(name: str) -> Cell:
    """17 -> 8 grid reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | 3x3/2 max pool."""
    cell = Cell(name)
    h0 = cell.input(0)
    b3 = _basic(cell, h0, 192, 1, node_id="branch3x3_1")
    b3 = _basic(cell, b3, 320, 3, stride=2, node_id="branch3x3_2")
    b7 = _basic(cell, h0, 192, 1, node_id="branch7x7x3_1")
    b7 = _basic(cell, b7, 192, [1, 7], padding=[0, 3], node_id="branch7x7x3_2")
    b7 = _basic(cell, b7, 192, [7, 1], padding=[3, 0], node_id="branch7x7x3_3")
    b7 = _basic(cell, b7, 192, 3, stride=2, node_id="branch7x7x3_4")
    bp = cell.op("max_pool", h0, stride=2, kernel=3, node_id="max_pool")
    cell.set_output([b3, b7, bp])
    return cell


def inception_e(name: str) -> Cell:
    """8x8 module with expanded filter banks: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) |
    pool-1x1; the split branches' outputs are concatenated in place."""
    cell = Cell(name)
    h0 = cell.input(0)
    row, col = dict(kernel=[1, 3], padding=[0, 1]), dict(kernel=[3, 1], padding=[1, 0])
    b1 = _basic(cell, h0, 320, 1, node_id="branch1x1")
    b3 = _basic(cell, h0, 384, 1, node_id="branch3x3_1")
    b3a = _basic(cell, b3, 384, node_id="branch3x3_2a", **row)
    b3b = _basic(cell, b3, 384, node_id="branch3x3_2b", **col)
    bd = _basic(cell, h0, 448, 1, node_id="branch3x3dbl_1")
    bd = _basic(cell, bd, 384, 3, padding=1, node_id="branch3x3dbl_2")
    bda = _basic(cell, bd, 384, node_id="branch3x3dbl_3a", **row)
    bdb = _basic(cell, bd, 384, node_id="branch3x3dbl_3b", **col)
    bp = cell.op("avg_pool", h0, kernel=3, padding=1, node_id="avg_pool")
    bp = _basic(cell, bp, 192, 1, node_id="branch_pool")
    cell.set_output([b1, b3a, b3b, bda, bdb, bp])
    return cell


def inception_v3_aux(num_classes: int) -> Cell:
    """torchvision's InceptionAux: 5x5/3 avg pool -> 1x1 conv (128) -> 5x5 conv (768, valid)
    -> global avg pool -> fc. It needs a 17x17 map (299 px input): 5x5 after the pool."""
    cell = Cell("AuxLogits")
    x = cell.op("avg_pool", cell.input(0), stride=3, kernel=5, node_id="avg_pool")
    x = _basic(cell, x, 128, 1, node_id="conv0")
    x = _basic(cell, x, 768, 5, node_id="conv1")
    x = cell.op("global_avg_pool", x, node_id="avgpool")
    cell.set_output([cell.op("linear", x, channels=num_classes, node_id="fc")])
    return cell


def inception_v3(num_classes: int = 1000, aux_logits: bool = True,
                 dropout: float = 0.5) -> CellChain:
    """Szegedy et al. 2016, torchvision's Inception3 (transform_input=False)."""
    stem = Cell("stem")
    x = _basic(stem, stem.input(0), 32, 3, stride=2, node_id="Conv2d_1a_3x3")
    x = _basic(stem, x, 32, 3, node_id="Conv2d_2a_3x3")
    x = _basic(stem, x, 64, 3, padding=1, node_id="Conv2d_2b_3x3")
    x = stem.op("max_pool", x, stride=2, kernel=3, node_id="maxpool1")
    x = _basic(stem, x, 80, 1, node_id="Conv2d_3b_1x1")
    x = _basic(stem, x, 192, 3, node_id="Conv2d_4a_3x3")
    stem.set_output([stem.op("max_pool", x, stride=2, kernel=3, node_id="maxpool2")])
    cells = [stem,
             inception_a("Mixed_5b", 32), inception_a("Mixed_5c", 64),
             inception_a("Mixed_5d", 64),
             inception_b("Mixed_6a"),
             inception_c("Mixed_6b", 128), inception_c("Mixed_6c", 160),
             inception_c("Mixed_6d", 160), inception_c("Mixed_6e", 192),
             inception_d("Mixed_7a"), inception_e("Mixed_7b"), inception_e("Mixed_7c"),
             classifier_head(num_classes, dropout=dropout)]
    aux = dict(aux=inception_v3_aux(num_classes), aux_after=8) if aux_logits else {}
    return CellChain(cells, name="inception_v3", family="Inception", **aux)


# ------------------------------------------------------------------------------- Xception
def _separable(cell, src, c_in, c_out, node_id, act="none"):
    """timm's SeparableConv2d (3x3 depthwise, 1x1 pointwise, no BN between) -> BN (-> act)."""
    x = cell.op("conv", src, channels=c_in, kernel=3, groups="depthwise", bn=False,
                act="none", node_id=f"{node_id}.conv1")
    return cell.op("conv", x, channels=c_out, kernel=1, act=act, node_id=f"{node_id}.pointwise")


def xception_block(name: str, c_in: int, c_out: int, reps: int, stride: int = 1,
                   start_with_relu: bool = True, grow_first: bool = True) -> Cell:
    """timm's Xception Block: reps x (ReLU -> separable 3x3 -> BN), then a 3x3/2 max pool
    when strided, added to the block input (or its 1x1/stride projection + BN). Node ids
    ``rep.K.*`` are the indices of timm's ``rep`` Sequential."""
    cell = Cell(name)
    h0 = cell.input(0)
    x = cell.op("act", h0, act="relu", node_id="rep.0") if start_with_relu else h0
    offset = 1 if start_with_relu else 0
    for i in range(reps):
        if grow_first:
            inc, outc = (c_in if i == 0 else c_out), c_out
        else:
            inc, outc = c_in, (c_in if i < reps - 1 else c_out)
        # the ReLU starting the next repetition is the activation of this one's BN
        x = _separable(cell, x, inc, outc, f"rep.{3 * i + offset}",
                       act="relu" if i < reps - 1 else "none")
    if stride != 1:
        x = cell.op("max_pool", x, stride=stride, kernel=3, padding=1,
                    node_id=f"rep.{3 * reps + offset - 1}")
    skip = h0 if stride == 1 and c_in == c_out else cell.op(
        "conv", h0, stride=stride, channels=c_out, kernel=1, padding=0, act="none",
        node_id="skip")
    cell.set_output([cell.combine("add", x, skip, node_id="add")])
    return cell


def xception(num_classes: int = 1000) -> CellChain:
    """Chollet 2017 as timm's legacy_xception: entry flow (2 convs, 3 strided blocks), middle
    flow (8 blocks of 728), exit flow (strided block, two separable convs, classifier)."""
    stem = Cell("stem")
    x = stem.op("conv", stem.input(0), stride=2, channels=32, kernel=3, padding=0,
                node_id="conv1")
    stem.set_output([stem.op("conv", x, channels=64, kernel=3, padding=0, node_id="conv2")])
    cells = [stem,
             xception_block("block1", 64, 128, 2, 2, start_with_relu=False),
             xception_block("block2", 128, 256, 2, 2),
             xception_block("block3", 256, 728, 2, 2)]
    cells += [xception_block(f"block{i}", 728, 728, 3) for i in range(4, 12)]
    cells.append(xception_block("block12", 728, 1024, 2, 2, grow_first=False))
    exit_flow = Cell("exit")
    x = _separable(exit_flow, exit_flow.input(0), 1024, 1536, "conv3", act="relu")
    exit_flow.set_output([_separable(exit_flow, x, 1536, 2048, "conv4", act="relu")])
    cells += [exit_flow, classifier_head(num_classes)]
    return CellChain(cells, name="xception", family="Xception")


# ---------------------------------------------------------------------------- importers
def load_torchvision_googlenet(model, state: dict):
    """Copy a torchvision GoogLeNet state dict (aux_logits=False, or its aux1/aux2 dropped)
    into the zoo's ``googlenet``. torchvision's pretrained GoogLeNet expects
    ``transform_input=True``: feed this model inputs normalized with mean = std = 0.5."""
    state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}

    def theirs(cell, node, op):
        return [cell_prefix(cell) + node]

    return load_chain_state(model, state, theirs)


def load_torchvision_inception_v3(model, state: dict):
    """Copy a torchvision Inception3 state dict into the zoo's ``inception_v3`` (the same
    ``aux_logits`` on both sides). torchvision's pretrained weights expect
    ``transform_input=True``: feed this model inputs normalized with mean = std = 0.5."""
    def theirs(cell, node, op):
        return [cell_prefix(cell) + node]

    return load_chain_state(model, state, theirs)


def load_timm_xception(model, state: dict):
    """Copy a timm ``legacy_xception`` state dict into the zoo's ``xception``. Our separable
    pointwise ops hold the BN that follows them in timm (``rep.K+1``, ``bn3``, ``bn4``), the
    stem convs ``bn1``/``bn2``, the projection ``skipbn``."""
    def theirs(cell, name, op):
        if cell == "stem":
            return [name, "bn" + name[4:]]
        if cell in ("exit", "head"):
            conv = name.split(".")[0]
            return [name, "bn" + conv[4:]] if name.endswith("pointwise") else [name]
        if name == "skip":
            return [f"{cell}.skip", f"{cell}.skipbn"]
        if name.endswith("pointwise"):
            k = int(name.split(".")[1])
            return [f"{cell}.{name}", f"{cell}.rep.{k + 1}"]
        return [f"{cell}.{name}"]

    return load_chain_state(model, state, theirs)


# ---------------------------------------------------------------------------------- zoo
register_model(ZooEntry(
    "googlenet", "Inception", settings={"imagenet": {"input_size": 224}},
    build_chain=googlenet, import_weights=load_torchvision_googlenet,
    reference="torchvision.models.googlenet(aux_logits=False)",
    doc="Szegedy et al. 2015, torchvision layout (BN, 3x3 in the '5x5' branch), no aux heads"))
register_model(ZooEntry(
    "inception_v3", "Inception",
    # the auxiliary head's 5x5 conv needs the 17x17 map of a 299 px input
    settings={"imagenet": {"input_size": 299, "min_input_size": 299,
                           "options": {"aux_logits": True}}},
    build_chain=inception_v3, import_weights=load_torchvision_inception_v3,
    reference="torchvision.models.inception_v3",
    doc="Szegedy et al. 2016, torchvision layout, auxiliary head after Mixed_6e"))
register_model(ZooEntry(
    "xception", "Xception", settings={"imagenet": {"input_size": 299}},
    build_chain=xception, import_weights=load_timm_xception,
    reference="timm legacy_xception",
    doc="Chollet 2017, timm legacy_xception layout"))
