"""Early, dilated and attention baselines (LeNet-5, ZFNet, NiN, DRN, Residual Attention Network)
against torchvision, the authors' published layouts and the papers' own figures."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from nasforge.api import build_model, resolve
from nasforge.cli import main
from nasforge.api import model_info
from nasforge.flops import count_params
from nasforge.registry import COMBINES, create_op
from nasforge.zoo import ZOO
from nasforge.zoo.early import LENET5_C3_TABLE
from reference_utils import randomize_bn

DRN_ENTRIES = ["drn_a_50", "drn_c_26", "drn_d_54"]


def _dilated_resnet50():
    return torchvision.models.resnet50(weights=None,
                                       replace_stride_with_dilation=[False, True, True])


# ----------------------------------------------------------------------------- LeNet-5
def test_lenet5_has_the_papers_60000_trainable_parameters():
    # LeCun et al. 1998, section II.B: "60,000 trainable parameters"; C3 alone 1,516
    info = model_info("lenet5")
    assert info["params"] == 60_000
    assert info["input_size"] == 32 and info["output_shape"] == [1, 10]
    c3 = create_op("connection_table_conv", 6, 16, 1, table=[list(r) for r in LENET5_C3_TABLE])
    assert count_params(c3) == 1_516


def test_connection_table_conv_reads_only_its_table():
    table = [[0, 2], [1], [0, 1, 2]]
    op = create_op("connection_table_conv", 3, 3, 1, table=table, kernel=3)
    conv = op[0]
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    expected, k = [], 0
    for j, row in enumerate(table):  # output map j: a conv over its own input maps only
        w = conv.weight[k:k + len(row)][None]
        expected.append(F.conv2d(x[:, row], w, conv.bias[j:j + 1]))
        k += len(row)
    with torch.no_grad():
        assert torch.allclose(op(x), torch.cat(expected, 1), atol=1e-6)


def test_trainable_subsample_is_a_scaled_window_sum_plus_bias():
    op = create_op("trainable_subsample", 2, 2, 2)
    sub = op[0]
    with torch.no_grad():
        sub.weight.copy_(torch.tensor([0.5, -2.0]))
        sub.bias.copy_(torch.tensor([1.0, 3.0]))
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    window_sums = x.unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2))
    expected = window_sums * torch.tensor([0.5, -2.0])[:, None, None] + \
        torch.tensor([1.0, 3.0])[:, None, None]
    with torch.no_grad():
        assert torch.equal(op(x), expected)
    assert count_params(op) == 4


def test_rbf_output_prefers_the_nearest_fixed_prototype():
    op = create_op("rbf_output", 84, 10, 1)
    assert count_params(op) == 0  # the paper's prototypes are fixed
    prototypes = op.prototypes
    assert set(prototypes.unique().tolist()) == {-1.0, 1.0}
    logits = op(prototypes[3][None]).flatten(1)
    assert logits.argmax().item() == 3 and logits[0, 3].item() == 0.0


# ------------------------------------------------------------------------------ ZFNet
def _zfnet_from_the_paper():
    """Zeiler & Fergus 2014, Fig. 3, written out independently: dense convs, ceil pools."""
    return nn.Sequential(
        nn.Conv2d(3, 96, 7, 2, 1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(96, 256, 5, 2, 0), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(256, 384, 3, 1, 1), nn.ReLU(), nn.Conv2d(384, 384, 3, 1, 1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(6 * 6 * 256, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, 1000))


def test_zfnet_matches_the_papers_layout_and_alexnet_derived_count():
    reference = _zfnet_from_the_paper()
    info = model_info("zfnet")
    assert info["params"] == count_params(reference)
    # Caffe's bvlc_alexnet (60,965,224) with conv2/4/5 ungrouped and conv1 7x7 instead of 11x11
    caffe_alexnet = 60_965_224
    ungrouped = 256 * 48 * 25 + 384 * 192 * 9 + 256 * 192 * 9
    assert info["params"] == caffe_alexnet + ungrouped - 96 * 3 * (121 - 49) == 62_357_608
    # the figure's map sizes: 110 -> 55 -> 26 -> 13 -> 6
    features = build_model("zfnet").blocks[0]
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1]))
             for key, m in features.ops.items() if key in ("conv1", "pool1", "conv2", "pool2",
                                                           "pool5")]
    with torch.device("meta"):
        features(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert sizes == [110, 55, 26, 13, 6]


# ------------------------------------------------------------------------------- NiN
def test_nin_cifar10_matches_the_authors_caffe_model():
    # NIN-CIFAR10 (Caffe model zoo): (kernel, in, out) of conv1, cccp1-2, conv2, cccp3-4,
    # conv3, cccp5-6, every layer with a bias
    layers = [(5, 3, 192), (1, 192, 160), (1, 160, 96), (5, 96, 192), (1, 192, 192),
              (1, 192, 192), (3, 192, 192), (1, 192, 192), (1, 192, 10)]
    expected = sum(k * k * c_in * c_out + c_out for k, c_in, c_out in layers)
    info = model_info("nin_cifar10")
    assert info["params"] == expected == 966_986
    assert round(info["params"] / 1e6, 2) == 0.97  # the paper's figure
    assert info["output_shape"] == [1, 10]


# ------------------------------------------------------------------------------- DRN
def test_drn_a_50_parameter_parity_with_torchvision():
    with torch.device("meta"):
        reference = _dilated_resnet50()
    assert model_info("drn_a_50")["params"] == count_params(reference)


def test_drn_a_50_same_function_after_weight_import():
    torch.manual_seed(0)
    reference = _dilated_resnet50().eval()
    randomize_bn(reference)
    model = build_model("drn_a_50", weights=reference.state_dict()).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max().item() < 1e-4


@pytest.mark.parametrize("name,params", [("drn_c_26", 21.1e6), ("drn_d_54", 35.8e6)])
def test_drn_c_and_d_match_the_published_counts(name, params):
    # fyu/drn README (the authors' code) prints the counts in millions with one decimal
    assert round(model_info(name)["params"] / 1e6, 1) == params / 1e6


def test_drn_output_stride_is_eight():
    # torchvision's dilated ResNet-50: the feature map entering the pool, measured
    with torch.device("meta"):
        trunk = nn.Sequential(*list(_dilated_resnet50().children())[:-2])
        measured = 224 // trunk(torch.zeros(1, 3, 224, 224)).shape[-1]
    assert measured == 8
    for name in DRN_ENTRIES:
        arch, _ = resolve(name)
        assert arch.output_stride() == measured, name  # what `nasforge info` reports
        with torch.device("meta"):
            model = build_model(name)
            features = nn.Sequential(*model.blocks[:-1])(torch.zeros(1, 3, 224, 224))
        assert 224 // features.shape[-1] == 8, name  # DRN's 28 x 28 final maps
    assert model_info("resnet50")["output_stride"] == 32


def test_info_prints_the_output_stride(capsys):
    assert main(["info", "drn_c_26"]) == 0
    assert "output stride 8" in capsys.readouterr().out


# ----------------------------------------------------------- Residual Attention Network
def _preact_unit(c_in, c, shortcut):
    """Parameters of one pre-activation bottleneck unit of the authors' prototxt: input BN,
    1x1 (c/4), BN, 3x3, BN, 1x1 (c), no biases; 1x1 projection when the shape changes."""
    mid = c // 4
    return 2 * c_in + c_in * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * c + \
        (c_in * c if shortcut else 0)


def _attention_module(c, pools):
    # trunk: p + t = 3 units; mask: pools - 1 down units + 2 innermost, pools - 1 skip and
    # pools - 1 up units, BN-1x1-BN-1x1 head; closing unit
    units = 3 + (pools + 1) + 2 * (pools - 1) + 1
    return units * _preact_unit(c, c, False) + 2 * (2 * c + c * c)


def _attention_net_params(modules):
    """Count of fwang91/residual-attention-network's Attention-56/92 deploy prototxts."""
    total = 3 * 64 * 49 + 2 * 64  # conv1 + BN
    c_in = 64
    for stage, (c, count, pools) in enumerate(zip((256, 512, 1024), modules, (3, 2, 1))):
        total += _preact_unit(c_in, c, True) + count * _attention_module(c, pools)
        c_in = c
    total += _preact_unit(1024, 2048, True) + 2 * _preact_unit(2048, 2048, False)
    return total + 2 * 2048 + 2048 * 1000 + 1000  # closing BN, classifier


@pytest.mark.parametrize("name,modules,params,mult_adds", [
    ("attention56", (1, 1, 1), 31.9e6, 6.2e9), ("attention92", (1, 2, 3), 51.3e6, 10.4e9)])
def test_residual_attention_networks(name, modules, params, mult_adds):
    info = model_info(name)
    assert info["params"] == _attention_net_params(modules)
    # the paper's ImageNet table; its Attention-92 count is 2.3% under its own prototxt's
    assert abs(info["params"] - params) / params < 0.03
    assert abs(info["mult_adds"] - mult_adds) / mult_adds < 0.03
    assert info["output_stride"] == 32


def test_soft_mask_branch_keeps_shape_and_zero_mask_passes_the_trunk():
    branch = create_op("soft_mask_branch", 16, 16, 1, pools=3, act="tanh").eval()
    x = torch.randn(1, 16, 13, 13, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert branch(x).shape == x.shape  # odd sizes: ceil pools, up-sampling to the input
        branch.head[-2].weight.zero_()  # tanh(0) = 0: attention residual (1 + 0) * T = T
        trunk = torch.randn_like(x)
        assert torch.equal(COMBINES["attention_residual"].apply([trunk, branch(x)]), trunk)


def test_every_new_entry_names_its_reference():
    for name in ["lenet5", "zfnet", "nin_cifar10", "attention56", "attention92", *DRN_ENTRIES]:
        assert ZOO[name].reference, name
    assert ZOO["drn_a_50"].import_weights is not None
