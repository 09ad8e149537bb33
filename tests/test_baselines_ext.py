"""Inception-v4 / Inception-ResNet / BN-Inception, DPN, SKNet and MnasNet against timm,
torchvision and pretrainedmodels (random weights, nothing downloaded), and the papers' figures.

Everything runs on one thread (measured on the shared 2-core machine: an Inception-ResNet-v2
forward at 107 px took 1.8 s on one thread, 30 s on two). Logits are compared at reduced
input sizes where the full size would cost seconds per forward
on 2 CPU cores (stated per case); the architectures are size-agnostic (global pooling), and
pretrainedmodels' fixed 8x8 average pool (global at 299 px) is applied as a global mean there.
"""
import warnings

import pytest
import timm
import torch
import torchvision

from nasforge.api import build_model, compile_architecture, resolve
from nasforge.api import model_info
from nasforge.flops import count_params
from nasforge.weights import WeightImportError
from reference_utils import randomize_bn


def _pretrainedmodels(name):
    import pretrainedmodels  # needs `six`; builds offline with pretrained=None

    return getattr(pretrainedmodels, name)(num_classes=1000, pretrained=None)


# reference key -> (builder, our zoo name, its exact parameter count)
REFERENCES = {
    "timm inception_v4": (lambda: timm.create_model("inception_v4"), "inception_v4", 42_679_816),
    "pretrainedmodels inceptionv4": (lambda: _pretrainedmodels("inceptionv4"), "inception_v4",
                                     42_679_816),
    "timm inception_resnet_v2": (lambda: timm.create_model("inception_resnet_v2"),
                                 "inception_resnet_v2", 55_843_464),
    "pretrainedmodels inceptionresnetv2": (lambda: _pretrainedmodels("inceptionresnetv2"),
                                           "inception_resnet_v2", 55_843_464),
    "pretrainedmodels bninception": (lambda: _pretrainedmodels("bninception"), "bn_inception",
                                     11_295_240),
    "timm dpn68": (lambda: timm.create_model("dpn68"), "dpn68", 12_611_602),
    "timm dpn92": (lambda: timm.create_model("dpn92"), "dpn92", 37_668_392),
    "timm skresnet18": (lambda: timm.create_model("skresnet18"), "skresnet18", 11_958_056),
    "timm skresnext50_32x4d": (lambda: timm.create_model("skresnext50_32x4d"),
                               "skresnext50_32x4d", 27_479_784),
    "torchvision mnasnet1_0": (lambda: torchvision.models.mnasnet1_0(weights=None),
                               "mnasnet1_0", 4_383_312),
}
# input px of the logit comparison (native: 299 for the Inception-v4 family, 224 otherwise;
# the smallest sizes that keep a 2 x 2 map before the global pool, for speed on shared CPUs)
LOGIT_SIZE = {"inception_v4": 107, "inception_resnet_v2": 107, "bn_inception": 64,
              "dpn68": 64, "dpn92": 64, "skresnet18": 64, "skresnext50_32x4d": 64,
              "mnasnet1_0": 64}


def _reference(key):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return REFERENCES[key][0]()


def _meta_params(name, **options) -> int:
    """Parameter count without a forward pass (built on the meta device)."""
    with torch.device("meta"):
        return count_params(compile_architecture(*resolve(name, **options)))


@pytest.mark.parametrize("key", sorted(REFERENCES))
def test_parameter_parity(key, one_thread):
    _, name, params = REFERENCES[key]
    with torch.device("meta"):
        reference = _reference(key)
    assert count_params(reference) == params
    assert _meta_params(name) == params


@torch.no_grad()
def _calibrate_bn(key, model, x):
    """Running statistics = the batch statistics of ``x`` (after ``randomize_bn``): with random
    ones these deep nets' eval logits hardly depend on the input."""
    momenta = {m: m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    for m in momenta:
        m.momentum = 1.0
    _reference_logits(key, model.train(), x)
    for m, momentum in momenta.items():
        m.momentum = momentum
    model.eval()


def _reference_logits(key, reference, x):
    if key.startswith("pretrainedmodels"):
        # their fixed average pools (8x8, 7x7) are the global pool at the native size
        return reference.last_linear(reference.features(x).mean((2, 3)))
    return reference(x)


# pretrainedmodels' Inception-v4/-ResNet-v2 are timm's ancestors (same module tree, checked
# above at the same parameter count); their logit comparisons repeat timm's: slow
SECOND_REFERENCES = {"pretrainedmodels inceptionv4", "pretrainedmodels inceptionresnetv2"}


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow)
                                 if k in SECOND_REFERENCES else k for k in sorted(REFERENCES)])
def test_same_function_after_weight_import(key, one_thread):
    name = REFERENCES[key][1]
    size = LOGIT_SIZE[name]
    torch.manual_seed(0)
    reference = _reference(key)
    randomize_bn(reference)
    gen = torch.Generator().manual_seed(1)
    _calibrate_bn(key, reference, torch.randn(2, 3, size, size, generator=gen))
    model = build_model(name, weights=reference.state_dict()).eval()
    x = torch.randn(2, 3, size, size, generator=gen)
    with torch.no_grad():
        expected, got = _reference_logits(key, reference, x), model(x)
    assert expected.shape == got.shape == (2, 1000)
    assert expected.abs().max() > 0.1 and (expected[0] - expected[1]).abs().max() > 0.01
    assert (expected - got).abs().max().item() < 1e-4


@pytest.mark.parametrize("name,other", [
    ("dpn68", "timm dpn92"), ("skresnet18", "timm skresnext50_32x4d"),
    ("inception_resnet_v2", "timm inception_v4"), ("inception_v4", "timm inception_resnet_v2"),
    ("mnasnet1_0", "timm skresnet18"), ("bn_inception", "timm inception_v4")])
def test_weight_import_rejects_another_architecture(name, other):
    with torch.device("meta"), pytest.raises(  # fails before any copy
            WeightImportError, match="shape mismatch|no reference module matches|tensors but"):
        build_model(name, weights=_reference(other).state_dict())


@pytest.mark.parametrize("name,mult_adds", [
    ("skresnext50_32x4d", 4.47e9),  # Li et al. 2019, Table 2: SKNet-50, 4.47 GFLOPs
    ("dpn92", 6.5e9),  # Chen et al. 2017, Table 2: DPN-92 (32x3d), 6.5 GFLOPs
    # Tan et al. 2019, Table 1: MnasNet-A1 312M; torchvision's MNASNet is the B1 variant (no
    # SE) whose documented cost is 0.314 GFLOPS: both within 3%
    ("mnasnet1_0", 312e6), ("mnasnet1_0", 314e6)])
def test_mult_adds_within_three_percent_of_published(name, mult_adds):
    info = model_info(name)
    assert info["input_size"] == 224 and info["output_shape"] == [1, 1000]
    assert abs(info["mult_adds"] - mult_adds) / mult_adds < 0.03


# ------------------------------------------------------------------- Inception-ResNet-v1
FACENET_BACKBONE_PARAMS = 22_564_096  # facenet-pytorch 2.6 InceptionResnetV1 without its head


def test_inception_resnet_v1_parameters():
    """No ImageNet reference exists: the backbone is facenet-pytorch's InceptionResnetV1 (its
    parameter count measured with facenet-pytorch 2.6), the head the paper's (avg pool,
    dropout, 1792 -> 1000 FC)."""
    assert _meta_params("inception_resnet_v1") == FACENET_BACKBONE_PARAMS + 1792 * 1000 + 1000
    assert _meta_params("inception_resnet_v1", num_classes=10) == \
        FACENET_BACKBONE_PARAMS + 1792 * 10 + 10


def test_inception_resnet_v1_grid_sizes_match_the_paper():
    """Fig. 14/15 of Szegedy et al. 2016 at 299 px: stem 35x35x256, after Inception-ResNet-A
    35x35x256, Reduction-A 17x17x896, B 17x17x896, Reduction-B 8x8x1792, C 8x8x1792."""
    arch, _ = resolve("inception_resnet_v1")
    names = [c.name for c in arch.cells]
    taps = {"stem": (256, 35), "repeat_1.4": (256, 35), "mixed_6a": (896, 17),
            "repeat_2.9": (896, 17), "mixed_7a": (1792, 8), "block8": (1792, 8)}
    with torch.device("meta"):
        model = compile_architecture(arch, None)
        x = torch.zeros(1, 3, 299, 299)
        seen = {}
        for cell_name, block in zip(names, model.blocks):
            x = block(x)
            if cell_name in taps:
                seen[cell_name] = (x.shape[1], x.shape[2])
    assert seen == taps
    assert sum(n.startswith("repeat_1.") for n in names) == 5
    assert sum(n.startswith("repeat_2.") for n in names) == 10
    # Fig. 15 draws 5 x C; the reference implementations (facenet-pytorch, davidsandberg's
    # facenet) have 5 with ReLU plus a sixth without, which we follow
    assert sum(n.startswith("repeat_3.") for n in names) == 5 and names[-2] == "block8"
