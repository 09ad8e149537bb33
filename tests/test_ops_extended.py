"""The literature's building blocks as cell ops (issue 15) and the nasnet-ext search space."""
import re
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from nasforge.compiler import Network
from nasforge.controllers import SEARCHERS, Result, get_searcher
from nasforge.dsl import CellPair, cell_from_blocks
from nasforge.ops import EXTENDED_OPS, NASNET_EXT_OPS, NASNET_OPS, OPS, create_op
from nasforge.ops.deformable import DeformConv
from nasforge.search_spaces import get_space
from nasforge.zoo import SETTINGS

timm_layers = pytest.importorskip("timm.layers")


@pytest.fixture(autouse=True)
def _seeded(one_thread):
    torch.manual_seed(0)


def _op_cells(op: str) -> CellPair:
    """Every block uses ``op``: on both cell inputs (stride 2 in the reduction cell) and on a
    concat-widened state (c_in = 2F -> F)."""
    cells = [cell_from_blocks(f"{op}/{kind}", [op, op, op, "identity"], [0, 1, 2, 0],
                              ["concat", "add"], reduction=kind == "reduction")
             for kind in ("normal", "reduction")]
    return CellPair(*cells, name=op)


@pytest.mark.parametrize("setting,size", [("cifar", 16), ("mobile", 32)])  # small: fast
@pytest.mark.parametrize("name", EXTENDED_OPS)
def test_every_new_op_compiles_in_a_nasnet_cell_at_both_strides(name, setting, size):
    config = replace(SETTINGS[setting], N=1, filters=8, num_classes=10)
    model = Network(_op_cells(name), config).train()
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 10)
    logits.square().sum().backward()
    strides = {m.stride for m in model.modules() if hasattr(m, "stride")
               and isinstance(m, (nn.Conv2d, torchvision.ops.DeformConv2d))}
    assert (2, 2) in strides  # the reduction cell's ops really stride
    op_params = [p for n, p in model.named_parameters() if ".body.ops." in n]
    assert op_params and all(p.grad is not None for p in op_params)


@pytest.mark.parametrize("name", EXTENDED_OPS)
def test_registry_metadata_of_new_ops(name):
    spec = OPS[name]
    assert spec.family not in ("nasnet", "classic")
    assert re.search(r"et al\.\s+20\d\d", spec.doc)  # names its paper
    has_weights = any(True for _ in create_op(name, 8, 8, 1).parameters())
    assert spec.parameter_free == (not has_weights)


# ------------------------------------------------------------------------ deformable conv
def _deform(modulated, stride, c_in=6, c_out=5):
    op = DeformConv(c_in, c_out, 3, stride, modulated=modulated)
    return op, torch.randn(2, c_in, 9, 8)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_op_equals_torchvision_deform_conv2d(modulated, stride):
    op, x = _deform(modulated, stride)
    nn.init.normal_(op.conv_offset.weight, std=0.3)  # non-trivial offsets and masks
    nn.init.normal_(op.conv_offset.bias, std=0.5)
    reference = torchvision.ops.DeformConv2d(6, 5, 3, stride, 1, bias=False)
    reference.weight.data.copy_(op.conv.weight.data)
    predicted = F.conv2d(x, op.conv_offset.weight, op.conv_offset.bias, stride, 1)
    offset, mask = predicted[:, :18], None
    if modulated:  # DCNv2: 2 x 9 offsets, then 9 mask logits
        mask = torch.sigmoid(predicted[:, 18:])
    expected = reference(x, offset, mask)
    assert offset.abs().max() > 0.5
    torch.testing.assert_close(op(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("modulated,scale", [(False, 1.0), (True, 0.5)])
def test_deformable_op_at_its_zero_init_is_a_plain_convolution(modulated, scale, stride):
    """DCN's init: offset (and mask) conv all zero -> offsets 0; DCNv2's mask is sigmoid(0) =
    0.5 for every tap, so the modulated op starts as half the plain convolution."""
    op, x = _deform(modulated, stride)
    expected = scale * F.conv2d(x, op.conv.weight, None, stride, 1)
    torch.testing.assert_close(op(x), expected, rtol=1e-5, atol=1e-5)


def test_deformable_op_with_a_one_pixel_offset_samples_the_shifted_input():
    """Independent of torchvision: offset (dy, dx) = (0, 1) on every tap reads x one column
    to the right, i.e. a plain conv of the shifted input (away from the left border)."""
    op, x = _deform(False, 1)
    nn.init.zeros_(op.conv_offset.weight)
    with torch.no_grad():
        op.conv_offset.bias.copy_(torch.tensor([0.0, 1.0] * 9))
    shifted = F.pad(x[..., 1:], (0, 1))
    expected = F.conv2d(shifted, op.conv.weight, None, 1, 1)
    torch.testing.assert_close(op(x)[..., 1:], expected[..., 1:], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- selective kernel vs timm
@pytest.mark.parametrize("stride", [1, 2])
def test_selective_kernel_equals_timm_without_input_split(stride):
    """timm's SelectiveKernel with split_input=False (the paper's split: both branches see the
    whole input) and SKNet's d = max(C/16, 32) is the same network as our op's body."""
    op = create_op("sk_conv_3x3_5x5", 16, 24, stride)
    relu, ours = op[0], op[1]
    assert isinstance(relu, nn.ReLU)
    theirs = timm_layers.SelectiveKernel(16, 24, stride=stride, split_input=False,
                                         rd_channels=32,
                                         norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    theirs.attn.bn.eps = 1e-3  # timm does not pass norm_layer on to the attention's BN
    mine, ref = ours.state_dict(), theirs.state_dict()
    assert [v.shape for v in mine.values()] == [v.shape for v in ref.values()]
    for v in ref.values():
        if v.is_floating_point():
            v.copy_(torch.randn_like(v).abs() + 0.1 if v.ndim == 1 else torch.randn_like(v))
    ours.load_state_dict(dict(zip(mine, ref.values())))
    x = torch.randn(4, 16, 9, 9)
    for mode in (True, False):
        ours.train(mode), theirs.train(mode)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------ attention gates
def test_cbam_gate_equals_timm_cbam_with_the_papers_mlp_biases():
    """timm's CbamModule (mlp_bias=True, as the authors' code) with our weights: timm pools
    [mean, max] for the spatial conv where the authors pool [max, mean], so its two input
    channels are swapped; the MLP is 1x1 convs there, linears here."""
    ours = create_op("cbam_gate", 64, 64, 1)
    from timm.layers.cbam import CbamModule

    theirs = CbamModule(64, rd_channels=8, mlp_bias=True)
    for p in ours.parameters():
        nn.init.normal_(p, std=0.3)
    with torch.no_grad():
        c = theirs.channel
        c.fc1.weight.copy_(ours.mlp[0].weight[:, :, None, None])
        c.fc1.bias.copy_(ours.mlp[0].bias)
        c.fc2.weight.copy_(ours.mlp[2].weight[:, :, None, None])
        c.fc2.bias.copy_(ours.mlp[2].bias)
        s = theirs.spatial.conv
        s.conv.weight.copy_(ours.spatial.weight.flip(1))
        s.bn.weight.copy_(ours.spatial_bn.weight)
        s.bn.bias.copy_(ours.spatial_bn.bias)
    x = torch.randn(3, 64, 7, 7)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_bam_gate_is_a_residual_attention_between_one_and_two():
    """BAM refines x by (1 + sigmoid(.)): every output is x times a factor in (1, 2)."""
    op = create_op("bam_gate", 32, 32, 1).train()
    x = torch.randn(4, 32, 8, 8)
    factor = op(x) / x
    assert factor.min() > 1 and factor.max() < 2
    assert factor.std() > 1e-3  # the gate varies over positions/channels


def test_gates_adapt_like_identity_under_stride_and_channel_change():
    for name in ("se_gate", "cbam_gate", "bam_gate"):
        op = create_op(name, 12, 8, 2).train()
        assert isinstance(op, nn.Sequential)
        assert op[0].__class__ is create_op("identity", 12, 8, 2).__class__
        assert op(torch.randn(2, 12, 7, 7)).shape == (2, 8, 4, 4)


def test_shuffle_op_uses_groups_that_divide_both_widths_and_is_order_sensitive():
    groups = [m.groups for m in create_op("shuffle_conv_3x3", 12, 8, 1).modules()
              if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert groups == [4, 4]
    groups = [m.groups for m in create_op("shuffle_conv_3x3", 6, 9, 1).modules()
              if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert groups == [1, 1]
    assert OPS["shuffle_conv_3x3"].channel_order_sensitive
    # a grouped op really depends on channel order: swapping two channels across groups is not
    # a permutation of its output
    op = create_op("shuffle_conv_3x3", 8, 8, 1).eval()
    x = torch.randn(1, 8, 5, 5)
    swapped = x[:, [4, 1, 2, 3, 0, 5, 6, 7]]
    assert not torch.allclose(op(x).sort(1).values, op(swapped).sort(1).values)


def test_dilated_separable_5x5_is_darts_dil_conv_5x5():
    op = create_op("dil_sep_conv_5x5", 8, 16, 1)
    depthwise, pointwise = op[1], op[2]
    assert isinstance(op[0], nn.ReLU) and len(op) == 4  # one repetition
    assert depthwise.kernel_size == (5, 5) and depthwise.dilation == (2, 2)
    assert depthwise.groups == 8 and pointwise.kernel_size == (1, 1)
    assert isinstance(op[3], nn.BatchNorm2d)


# ------------------------------------------------------------------------- nasnet-ext space
def test_nasnet_ext_vocabulary():
    space = get_space("nasnet-ext")
    assert space.ops[:13] == NASNET_OPS and set(EXTENDED_OPS) <= set(space.ops)
    assert space.ops == NASNET_EXT_OPS and len(set(space.ops)) == len(space.ops) == 22
    assert space.decisions()[:5] == [2, 2, 22, 22, 2]
    assert get_space("nasnet").decisions()[:5] == [2, 2, 13, 13, 2]


def test_nasnet_ext_samples_validate_and_compile():
    space = get_space("nasnet-ext")
    rng = np.random.default_rng(5)
    config = replace(SETTINGS["cifar"], N=1, filters=8)
    seen = set()
    for _ in range(6):
        arch = space.sample(rng)
        pair = space.to_graph(arch).validate()
        seen |= {o for b in arch.normal + arch.reduction for o in b.ops}
        model = Network(pair, config).train()
        model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    assert seen & set(EXTENDED_OPS)


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_every_searcher_proposes_from_nasnet_ext(name):
    space = get_space("nasnet-ext")
    searcher = get_searcher(name, space, seed=0)
    proposals = searcher.ask(3)
    for p in proposals:
        assert space.decode(p.tokens) == p.arch
        space.to_graph(p.arch).validate()
        searcher.tell(p, Result.ok(val_acc=0.5))
    ops = {o for p in searcher.ask(4) for b in p.arch.normal + p.arch.reduction for o in b.ops}
    assert ops <= set(NASNET_EXT_OPS)
