"""Deformable, CBAM and BAM ResNet-50 against references nobody here wrote (issue 15)."""
from functools import partial

import pytest
import torch
import torchvision
from torch import nn

from nasforge.api import build_model
from nasforge.cli.info import model_info
from nasforge.flops import count_mult_adds, count_params
from reference_utils import randomize_bn

timm = pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    torch.manual_seed(0)


class ReferenceDeformConv(nn.Module):
    """A hand-written deformable 3x3 in mmdetection's DeformConv2dPack layout (``weight``,
    then ``conv_offset``), on torchvision.ops.deform_conv2d, replacing a torchvision conv."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.stride = conv.stride
        self.conv_offset = nn.Conv2d(conv.in_channels, 18, 3, conv.stride, 1)
        nn.init.normal_(self.conv_offset.weight, std=0.02)  # non-zero offsets
        nn.init.normal_(self.conv_offset.bias, std=0.5)

    def forward(self, x):
        return torchvision.ops.deform_conv2d(x, self.conv_offset(x), self.weight,
                                             stride=self.stride, padding=1)


def reference_dcn_resnet50() -> nn.Module:
    """torchvision's resnet50 with layer2..layer4's 3x3 convs (the paper's conv3-conv5)
    deformable."""
    model = torchvision.models.resnet50(weights=None)
    for layer in (model.layer2, model.layer3, model.layer4):
        for block in layer:
            block.conv2 = ReferenceDeformConv(block.conv2)
    return model


def _close(expected, got):
    """Logits within 1e-4. Randomized BN makes these logits ~100, where float32's different
    summation orders (deform_conv2d vs conv) alone reach 4e-4, so the deformable checks run
    in float64 (see ``_logits``)."""
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max().item() < 1e-4


def _logits(model, size=64, dtype=torch.float64):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model.eval().to(dtype)(x.to(dtype))


def test_dcn_resnet50_params_equal_resnet50_plus_offset_convs():
    reference = reference_dcn_resnet50()
    offsets = sum(p.numel() for n, p in reference.named_parameters() if "conv_offset" in n)
    resnet50 = count_params(torchvision.models.resnet50(weights=None))
    assert model_info("dcn_resnet50")["params"] == count_params(reference) == \
        resnet50 + offsets == 26_137_874


def test_dcn_resnet50_with_torchvision_weights_and_zero_offsets_is_resnet50():
    reference = torchvision.models.resnet50(weights=None).eval()
    randomize_bn(reference)
    model = build_model("dcn_resnet50", weights=reference.state_dict())
    _close(_logits(reference), _logits(model))


def test_dcn_resnet50_equals_the_hand_built_deformable_reference():
    """Non-zero offsets: the same function as torchvision's resnet50 with DeformConv swapped in
    (and no longer resnet50's)."""
    reference = reference_dcn_resnet50().eval()
    randomize_bn(reference)
    model = build_model("dcn_resnet50", weights=reference.state_dict())
    got = _logits(model)
    _close(_logits(reference), got)
    plain = torchvision.models.resnet50(weights=None)
    plain.load_state_dict({k: v for k, v in reference.state_dict().items()
                           if "conv_offset" not in k})
    assert (_logits(plain) - got).abs().max().item() > 1e-3


def test_deformable_mult_adds_are_counted_like_the_plain_conv():
    resnet50 = count_mult_adds(build_model("resnet50"), 224)[0]
    offsets = 0  # the offset convs: 18 x c_in x 9 per output pixel of each deformable conv
    for planes, blocks, size in ((128, 4, 28), (256, 6, 14), (512, 3, 7)):
        offsets += blocks * 18 * planes * 9 * size * size
    assert model_info("dcn_resnet50")["mult_adds"] == resnet50 + offsets


def timm_cbam_resnet50() -> nn.Module:
    from timm.layers.cbam import CbamModule

    return timm.create_model("resnet50", block_args=dict(
        attn_layer=partial(CbamModule, mlp_bias=True)))


def test_cbam_resnet50_params_equal_timm_with_cbam_and_the_paper():
    with torch.device("meta"):
        reference = timm_cbam_resnet50()
    params = model_info("cbam_resnet50")["params"]
    assert params == count_params(reference) == 28_089_624
    assert round(params / 1e6, 2) == 28.09  # CBAM paper, ResNet50 + CBAM


def test_cbam_resnet50_same_function_as_timm_after_weight_import():
    reference = timm_cbam_resnet50().eval()
    randomize_bn(reference)
    for m in reference.modules():  # non-trivial attention MLPs and spatial convs
        if m.__class__.__name__ == "ChannelAttn":
            nn.init.normal_(m.fc2.bias, std=1.0)
    model = build_model("cbam_resnet50", weights=reference.state_dict())
    expected, got = _logits(reference), _logits(model)
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max().item() < 1e-4


def test_bam_resnet50_matches_the_paper_to_its_precision():
    # BAM paper (Park et al. 2018), ImageNet table: ResNet50 + BAM 25.92M; the authors' code
    # (three BAMs at 256/512/1024 channels, r = 16, two dilated 3x3 convs) gives 25,915,099.
    params = model_info("bam_resnet50")["params"]
    assert round(params / 1e6, 2) == 25.92
    assert params - count_params(torchvision.models.resnet50(weights=None)) == 358_067
