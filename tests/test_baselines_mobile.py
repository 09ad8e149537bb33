"""Mobile baselines (MobileNet v1/v2, ShuffleNet v1/v2) against torchvision, timm and papers
(random weights, nothing downloaded)."""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from nasforge.api import build_model, resolve
from nasforge.api import model_info
from nasforge.compiler.cell_module import CompiledGraph
from nasforge.flops import count_params
from nasforge.weights import WeightImportError
from nasforge.zoo.mobile import (load_torchvision_mobilenet_v2, load_torchvision_shufflenet_v2,
                                 shufflenet_v1_unit)
from reference_utils import randomize_bn

IMPORTERS = {"mobilenet_v2": load_torchvision_mobilenet_v2,
             "shufflenet_v2_x1_0": load_torchvision_shufflenet_v2}


@pytest.mark.parametrize("name,params", [("mobilenet_v2", 3_504_872),
                                         ("shufflenet_v2_x1_0", 2_278_604)])
def test_parameter_parity_with_torchvision(name, params):
    reference = getattr(torchvision.models, name)(weights=None)
    assert count_params(reference) == params
    assert model_info(name)["params"] == params


def test_mobilenet_v1_parameters():
    """Howard et al. 2017 (1.0, 224): 4,231,976; timm's mobilenetv1_100 (same layout, ReLU6)
    agrees."""
    timm = pytest.importorskip("timm")
    assert model_info("mobilenet_v1")["params"] == 4_231_976
    assert count_params(timm.create_model("mobilenetv1_100", pretrained=False)) == 4_231_976


@torch.no_grad()
def _calibrate_bn(model, x):
    """Running statistics = the batch statistics of ``x`` (after ``randomize_bn``): random
    ones make these deep nets' eval logits almost independent of the input."""
    momenta = {m: m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    for m in momenta:
        m.momentum = 1.0
    model.train()(x)
    for m, momentum in momenta.items():
        m.momentum = momentum
    model.eval()


@pytest.mark.parametrize("name", sorted(IMPORTERS))
def test_same_function_after_torchvision_import(name, one_thread):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None)
    randomize_bn(reference)
    _calibrate_bn(reference, torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)))
    model = IMPORTERS[name](build_model(name).eval(), reference.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert expected.abs().max() > 0.1 and (expected[0] - expected[1]).abs().max() > 0.01
    assert (expected - got).abs().max().item() < 1e-4


@pytest.mark.parametrize("name,other", [
    ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(weights=None, width_mult=0.75)),
    ("shufflenet_v2_x1_0", lambda: torchvision.models.shufflenet_v2_x0_5(weights=None)),
    ("shufflenet_v2_x1_0", lambda: torchvision.models.mobilenet_v2(weights=None))])
def test_import_rejects_another_architecture(name, other):
    with pytest.raises(WeightImportError, match="shape mismatch|tensors but"):
        IMPORTERS[name](build_model(name), other().state_dict())


@pytest.mark.parametrize("name,mult_adds", [
    ("mobilenet_v1", 569e6), ("mobilenet_v2", 300e6), ("shufflenet_v2_x1_0", 146e6),
    ("shufflenet_v1_g3", 140e6)])
def test_mult_adds_within_three_percent(name, mult_adds):
    info = model_info(name)
    assert info["input_size"] == 224 and info["output_shape"] == [1, 1000]
    assert abs(info["mult_adds"] - mult_adds) / mult_adds < 0.03


# ------------------------------------------------------------------ ShuffleNet v1 (g = 3, 1x)
def test_shufflenet_v1_layout():
    """Megvii ShuffleNet-Series ShuffleNetV1(group=3, model_size="1.0x"): 1,864,728 parameters
    (its FC has no bias); stages of 4/8/4 units with 240/480/960 channels; only the very first
    1x1 conv of stage 2 is not grouped; stride-2 units concatenate a 3x3/2 average pool."""
    chain, _ = resolve("shufflenet_v1_g3")
    units = chain.cells[1:-1]
    assert len(units) == 16 and model_info("shufflenet_v1_g3")["params"] == 1_864_728
    widths, groups, pools = [], [], []
    for cell in units:
        node = cell.graph.nodes
        widths.append(node["branch_main_2.0"]["channels"])
        groups.append(node["branch_main_1.0"]["args"]["groups"])
        pools.append("branch_proj" in node)
    assert pools == [True] + [False] * 3 + [True] + [False] * 7 + [True] + [False] * 3
    assert groups == [1] + [3] * 15
    assert widths == [240 - 24] + [240] * 3 + [240] + [480] * 7 + [480] + [960] * 3


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                        bn.eps)


def _unit_reference(block, x, groups, first, stride):
    """The ShuffleNet v1 unit written out in plain torch, on the block's own weights."""
    ops = {k: block.ops[k] for k in ("branch_main_1_0", "branch_main_1_3", "branch_main_2_0")}
    y = F.relu(_bn(F.conv2d(x, ops["branch_main_1_0"][0].weight, groups=1 if first else groups),
                   ops["branch_main_1_0"][1]))
    mid = y.shape[1]
    y = _bn(F.conv2d(y, ops["branch_main_1_3"][0].weight, stride=stride, padding=1, groups=mid),
            ops["branch_main_1_3"][1])
    n, c, h, w = y.shape  # Megvii's shuffle: channels as (C/g, g) -> (g, C/g)
    y = y.reshape(n, c // groups, groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
    y = _bn(F.conv2d(y, ops["branch_main_2_0"][0].weight, groups=groups),
            ops["branch_main_2_0"][1])
    if stride == 1:
        return F.relu(x + y)
    return torch.cat([F.avg_pool2d(x, 3, 2, 1), F.relu(y)], 1)


@pytest.mark.parametrize("c_in,c_out,stride,first", [(24, 240, 2, True), (240, 240, 1, False),
                                                     (240, 480, 2, False)])
def test_shufflenet_v1_unit_computes_the_reference(c_in, c_out, stride, first, one_thread):
    torch.manual_seed(0)
    block = CompiledGraph(shufflenet_v1_unit(c_in, c_out, stride, 3, group_first=not first),
                          None, [c_in]).eval()
    randomize_bn(block)
    x = torch.randn(2, c_in, 14, 14)
    with torch.no_grad():
        got = block(x)
        expected = _unit_reference(block, x, 3, first, stride)
    assert got.shape == (2, c_out, 14 // stride, 14 // stride)
    assert (got - expected).abs().max().item() < 1e-5
