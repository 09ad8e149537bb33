"""The op registry: every op's shapes, and the reference construction details."""
import inspect
import math

import pytest
import torch
from torch import nn

from nasforge.ops import NASNET_EXT_OPS, NASNET_OPS, OPS, create_op
from nasforge.ops.layers import AvgPool2dSame, FactorizedReduction, MaxPool2dSame, same_padding


def test_nasnet_vocabulary_is_the_papers_thirteen():
    assert len(NASNET_OPS) == 13 and set(NASNET_OPS) <= set(OPS)


# ops with the NASNet conventions (stride, channel change, TF 'SAME' output size)
CELL_OPS = sorted(set(NASNET_EXT_OPS) | {n for n, spec in OPS.items()
                                         if spec.family in ("nasnet", "darts")})


@pytest.mark.parametrize("name", CELL_OPS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [7, 8, 15])
@pytest.mark.parametrize("c_in,c_out", [(8, 8), (12, 8)])
def test_every_op_shape(name, stride, size, c_in, c_out):
    op = create_op(name, c_in, c_out, stride)
    x = torch.randn(2, c_in, size, size, requires_grad=True)
    y = op(x)
    expected = math.ceil(size / stride)  # TF 'SAME'
    assert y.shape == (2, c_out, expected, expected)
    y.square().sum().backward()  # differentiable end to end
    assert x.grad is not None and x.grad.abs().sum() > 0


# Hand-designed networks' ops: (c_in, c_out, stride, args, expected output shape for 2x8x9x9)
CLASSIC_EXAMPLES = {
    "conv": [(8, 16, 2, {"kernel": 3}, (16, 5, 5)),
             (8, 8, 1, {"kernel": 3, "groups": "depthwise", "act": "relu6"}, (8, 9, 9)),
             (8, 4, 1, {"kernel": (1, 7), "act": "none", "bn": False}, (4, 9, 9))],
    "bn_act_conv": [(8, 4, 1, {"kernel": 1}, (4, 9, 9))],
    "bn_act": [(8, 8, 1, {}, (8, 9, 9))],
    "act": [(8, 8, 1, {"act": "hardswish"}, (8, 9, 9))],
    "max_pool": [(8, 8, 2, {"kernel": 3, "ceil_mode": True}, (8, 4, 4)),
                 (8, 8, 2, {"kernel": 3, "padding": 1}, (8, 5, 5))],
    "avg_pool": [(8, 8, 2, {"kernel": 2}, (8, 4, 4))],
    "global_avg_pool": [(8, 8, 1, {}, (8, 1, 1))],
    "global_max_pool": [(8, 8, 1, {}, (8, 1, 1))],
    "linear": [(8, 10, 1, {"spatial": 9}, (10, 1, 1))],
    "dropout": [(8, 8, 1, {"p": 0.2}, (8, 9, 9))],
    "lrn": [(8, 8, 1, {"size": 5}, (8, 9, 9))],
    "channel_shuffle": [(8, 8, 1, {"groups": 4}, (8, 9, 9))],
    "channel_split": [(8, 4, 1, {"parts": 2, "index": 1}, (4, 9, 9))],
    "squeeze_excite": [(8, 8, 1, {"squeeze": 2}, (8, 9, 9))],
    "pad_channels": [(8, 12, 1, {}, (12, 9, 9))],
    "fractal_conv": [(8, 16, 1, {"dropout": 0.1}, (16, 9, 9)), (8, 16, 2, {}, (16, 5, 5))],
    "highway_gate": [(8, 8, 1, {"bias_init": -1.0}, (8, 9, 9))],
    "condense_conv": [(8, 16, 1, {"groups": 4, "condense_factor": 4}, (16, 9, 9)),
                      (8, 16, 1, {"groups": 2, "condense_factor": 4}, (16, 9, 9))],
    "condense_linear": [(8, 10, 1, {"keep": 0.5}, (10, 1, 1))],
    "stochastic_depth": [(8, 8, 1, {"survival": 0.5}, (8, 9, 9))],
    "connection_table_conv": [(8, 3, 1, {"table": [[0, 1], [2, 7], [0, 3, 5]], "kernel": 3},
                               (3, 7, 7))],
    "trainable_subsample": [(8, 8, 2, {"act": "lecun_tanh"}, (8, 4, 4))],
    "rbf_output": [(8, 10, 1, {}, (10, 9, 9))],
    "soft_mask_branch": [(8, 8, 1, {"pools": 2, "act": "tanh"}, (8, 9, 9))],
    "channel_slice": [(8, 3, 1, {"start": 5}, (3, 9, 9))],
    "residual_scale": [(8, 8, 1, {"factor": 0.17}, (8, 9, 9))],
    "deform_conv": [(8, 16, 2, {"kernel": 3}, (16, 5, 5)),
                    (8, 8, 1, {"modulated": True, "act": "none"}, (8, 9, 9))],
    # a k x k conv without padding, 2 * c_in * k^2 outputs (the filters and their negatives)
    "patch_whiten": [(3, 24, 1, {}, (24, 8, 8)), (3, 54, 1, {"kernel": 3}, (54, 7, 7))],
    # NAS-Bench-201's cell ops (nasforge.ops.nas_bench_201)
    "nor_conv_1x1": [(8, 8, 1, {}, (8, 9, 9)), (8, 16, 2, {}, (16, 5, 5))],
    "nor_conv_3x3": [(8, 8, 1, {}, (8, 9, 9)), (8, 16, 2, {}, (16, 5, 5))],
    "skip_connect": [(8, 8, 1, {}, (8, 9, 9))],
    "none": [(8, 8, 1, {}, (8, 9, 9)), (8, 16, 2, {}, (16, 5, 5))],
}


@pytest.mark.parametrize("name", sorted(set(OPS) - set(CELL_OPS)))
def test_every_classic_op(name):
    assert name in CLASSIC_EXAMPLES, f"add an example for the new op {name!r}"
    for c_in, c_out, stride, args, shape in CLASSIC_EXAMPLES[name]:
        op = create_op(name, c_in, c_out, stride, **args).train()
        x = torch.randn(2, c_in, 9, 9, requires_grad=True)
        y = op(x)
        assert y.shape == (2,) + shape
        y.square().sum().backward()
        assert x.grad is not None


def test_classic_ops_refuse_channel_changes_they_cannot_make():
    for name in ("max_pool", "act", "squeeze_excite", "channel_shuffle"):
        with pytest.raises(ValueError, match="cannot change channels"):
            create_op(name, 8, 16, 1)


# every op with an ``act`` argument, with the other arguments it needs
OPS_WITH_ACT = {"conv": {}, "bn_act_conv": {}, "bn_act": {}, "act": {}, "deform_conv": {},
                "connection_table_conv": {"table": [[0]] * 8}, "trainable_subsample": {},
                "soft_mask_branch": {}}


def test_ops_with_act_lists_every_such_op():
    assert set(OPS_WITH_ACT) == {n for n, spec in OPS.items()
                                 if "act" in inspect.signature(spec.factory).parameters}


@pytest.mark.parametrize("name", sorted(OPS_WITH_ACT))
def test_every_op_reads_the_one_activation_table(name):
    """One table, one lookup: every op names the same activations and refuses the same way."""
    with pytest.raises(ValueError, match=r"unknown activation 'swish' \(known: relu, relu6, "
                                         r"hardswish, sigmoid, gelu, none, lecun_tanh, tanh\)"):
        create_op(name, 8, 8, 2 if name == "trainable_subsample" else 1, act="swish",
                  **OPS_WITH_ACT[name])
    op = create_op(name, 8, 8, 2 if name == "trainable_subsample" else 1, act="lecun_tanh",
                   **OPS_WITH_ACT[name])
    assert any(type(m).__name__ == "LeCunTanh" for m in op.modules())


def test_channel_shuffle_and_split_values():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert create_op("channel_shuffle", 6, 6, 1, groups=2)(x).flatten().tolist() == [
        0, 3, 1, 4, 2, 5]
    assert create_op("channel_split", 6, 3, 1, index=1)(x).flatten().tolist() == [3, 4, 5]


def test_channel_slice_and_residual_scale_values():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert create_op("channel_slice", 6, 2, 1, start=3)(x).flatten().tolist() == [3, 4]
    with pytest.raises(ValueError, match="outside"):
        create_op("channel_slice", 6, 4, 1, start=3)
    assert create_op("residual_scale", 6, 6, 1, factor=0.5)(x).flatten().tolist() == [
        0, 0.5, 1, 1.5, 2, 2.5]


def test_sk_select_is_a_softmax_weighted_sum_over_paths():
    """Li et al. 2019, Eq. (5)-(6): a_c + b_c = 1 per channel, V = a * U1 + b * U2."""
    from nasforge.ops import COMBINES

    spec = COMBINES["sk_select"]
    paths = [torch.full((1, 2, 3, 3), 1.0), torch.full((1, 2, 3, 3), 3.0)]
    # channel 0: equal logits (weights 1/2, 1/2); channel 1: path 2 dominates
    logits = torch.tensor([0.0, -30.0, 0.0, 30.0]).view(1, 4, 1, 1)
    out = spec.apply([logits] + paths)
    assert torch.allclose(out[0, 0], torch.full((3, 3), 2.0))
    assert torch.allclose(out[0, 1], torch.full((3, 3), 3.0))
    assert spec.channels([4, 2, 2]) == 2
    with pytest.raises(ValueError, match="sk_select"):
        spec.channels([3, 2, 2])


def _params(m):
    return sum(p.numel() for p in m.parameters())


def test_separable_conv_is_applied_twice_with_stride_on_first():
    op = create_op("sep_conv_5x5", 8, 16, 2)
    convs = [m for m in op.modules() if isinstance(m, nn.Conv2d)]
    # depthwise(8) -> pointwise 8->16 -> BN -> depthwise(16) -> pointwise 16->16 -> BN
    assert [(c.in_channels, c.out_channels, c.groups, c.kernel_size, c.stride) for c in convs] == [
        (8, 8, 8, (5, 5), (2, 2)), (8, 16, 1, (1, 1), (1, 1)),
        (16, 16, 16, (5, 5), (1, 1)), (16, 16, 1, (1, 1), (1, 1))]
    assert isinstance(op[0], nn.ReLU) and isinstance(op[4], nn.ReLU)
    assert _params(op) == 8 * 25 + 8 * 16 + 2 * 16 + 16 * 25 + 16 * 16 + 2 * 16


def test_pool_projects_only_when_channels_change():
    assert _params(create_op("max_pool_3x3", 8, 8, 2)) == 0
    assert _params(create_op("avg_pool_3x3", 12, 8, 1)) == 12 * 8 + 2 * 8  # 1x1 conv + BN
    seq = create_op("max_pool_5x5", 12, 8, 1)
    assert not any(isinstance(m, nn.ReLU) for m in seq.modules())  # no ReLU after a pool


def test_identity_adapts_under_stride_or_channel_change():
    x = torch.randn(1, 8, 6, 6)
    assert torch.equal(create_op("identity", 8, 8, 1)(x), x)
    assert _params(create_op("identity", 8, 8, 2)) == 8 * 8 + 2 * 8
    assert _params(create_op("identity", 12, 8, 1)) == 12 * 8 + 2 * 8


def test_bottleneck_ops_follow_the_tpu_code():
    # 1x7_7x1 at F=16: 1x1 to 4, 1x7, BN, 7x1, BN, 1x1 back to 16 (+BNs)
    op = create_op("conv_1x7_7x1", 16, 16, 1)
    convs = [m for m in op.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (1, 7), (7, 1), (1, 1)]
    assert [c.out_channels for c in convs] == [4, 4, 4, 16]
    assert [c.out_channels for c in create_op("conv_1x3_3x1", 16, 16, 1).modules()
            if isinstance(c, nn.Conv2d)] == [6, 6, 6, 16]  # 3F/8
    dil = [c for c in create_op("dil_conv_3x3", 16, 16, 1).modules() if isinstance(c, nn.Conv2d)]
    assert dil[1].dilation == (2, 2)


@pytest.mark.parametrize("size,kernel,stride,expected", [
    (8, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (42, 5, 2, (1, 2)), (42, 7, 2, (2, 3)),
    (165, 3, 2, (1, 1)), (9, 3, 1, (1, 1))])
def test_same_padding_matches_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_avg_pool_excludes_padding_like_tensorflow():
    x = torch.ones(1, 1, 8, 8)
    assert torch.allclose(AvgPool2dSame(3, 2)(x), torch.ones(1, 1, 4, 4))
    quirk = AvgPool2dSame(3, 2, count_pad_when_strided=True)(x)
    assert quirk[0, 0, -1, -1].item() == pytest.approx(4 / 9)  # timm counts the zero padding


def test_max_pool_padding_never_wins():
    x = -torch.ones(1, 1, 8, 8)
    assert torch.equal(MaxPool2dSame(3, 2)(x), -torch.ones(1, 1, 4, 4))


def test_factorized_reduction_samples_even_and_odd_pixels():
    fr = FactorizedReduction(1, 2, 2)
    with torch.no_grad():
        fr.conv_1.weight.fill_(1.0)
        fr.conv_2.weight.fill_(1.0)
    fr.eval()
    fr.bn.running_var.fill_(1.0 - fr.bn.eps)  # BN becomes the identity
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = fr(x)
    assert y[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    assert y[0, 1].tolist() == [[5.0, 7.0], [13.0, 15.0]]
    assert fr(torch.randn(1, 1, 5, 5)).shape == (1, 2, 3, 3)
