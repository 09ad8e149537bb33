"""Inception family (googlenet, inception_v3, xception) against torchvision and timm
(random weights, no download): parameter parity, same function after weight import,
multiply-adds."""
import warnings

import pytest
import timm
import torch
import torchvision

from nasforge.api import build_model, resolve
from nasforge.api import model_info
from nasforge.compiler.cell_module import CompiledGraph
from nasforge.dsl import load_architecture
from nasforge.flops import count_params
from nasforge.weights import WeightImportError, copy_matched
from nasforge.zoo.inception import (googlenet_aux, load_timm_xception,
                                    load_torchvision_googlenet, load_torchvision_inception_v3)
from reference_utils import randomize_bn


def _reference(name, **kw):
    """The reference with PyTorch's default random init (torchvision's truncated-normal init
    is slow and irrelevant here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "xception":
            return timm.create_model("legacy_xception", **kw)
        return getattr(torchvision.models, name)(weights=None, init_weights=False, **kw)


REFERENCE_KW = {"googlenet": dict(aux_logits=False), "inception_v3": {}, "xception": {}}
IMPORTERS = {"googlenet": load_torchvision_googlenet,
             "inception_v3": load_torchvision_inception_v3, "xception": load_timm_xception}


@pytest.fixture(scope="module")
def references():
    """name -> reference in eval mode with randomized BN (built once per module)."""
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = _reference(name, **REFERENCE_KW[name]).eval()
            randomize_bn(cache[name])
        return cache[name]

    return get


def _image(size, batch=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name,options,params", [
    ("googlenet", {}, 6_624_904),  # torchvision googlenet(aux_logits=False)
    ("inception_v3", {}, 27_161_264),  # default: with the auxiliary head, like torchvision
    ("inception_v3", dict(aux_logits=False), 23_834_568),
    ("xception", {}, 22_855_952),  # timm legacy_xception
])
def test_parameter_parity(name, options, params):
    reference = _reference(name, **{**REFERENCE_KW[name], **options})
    assert model_info(name, **options)["params"] == count_params(reference) == params


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "xception"])
def test_same_function_after_import(name, references):
    reference = references(name)
    model = IMPORTERS[name](build_model(name).eval(), reference.state_dict())
    x = _image(resolve(name)[1].input_size)  # 224 / 299 / 299
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert expected.shape == got.shape == (1, 1000)
    assert expected.abs().max() > 0.1
    assert (expected - got).abs().max().item() < 1e-4


def test_inception_v3_aux_head(references):
    reference = references("inception_v3")
    model = load_torchvision_inception_v3(build_model("inception_v3").eval(),
                                          reference.state_dict())
    features = torch.randn(2, 768, 17, 17, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = reference.AuxLogits(features), model.aux(features).flatten(1)
    assert expected.abs().max() > 0.1 and (expected - got).abs().max().item() < 1e-4
    # training mode returns (logits, aux logits) like torchvision, at 299 px: the aux head's
    # 5x5 conv after its 5x5/3 pool needs Mixed_6e's 17x17 map
    model.train()
    with torch.no_grad():
        logits, aux = model(_image(299, batch=2))
    assert logits.shape == aux.shape == (2, 1000)
    model.aux(features).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.aux.parameters())


def test_googlenet_aux_head_matches_torchvision():
    """Both of torchvision's GoogLeNet aux heads are this cell (not attached: see googlenet)."""
    reference = _reference("googlenet").eval()  # aux_logits=True, torchvision's default
    randomize_bn(reference)
    assert count_params(build_model("googlenet")) + sum(
        count_params(CompiledGraph(googlenet_aux(1000), None, [c])) for c in (512, 528)) \
        == count_params(reference) == 13_004_888
    state = {k: v for k, v in reference.state_dict().items() if k.startswith("aux2.")}
    aux = copy_matched(CompiledGraph(googlenet_aux(1000), None, [528]), state,
                       [(f"ops.{m}", [f"aux2.{m}"]) for m in ("conv", "fc1", "fc2")]).eval()
    features = torch.randn(1, 528, 14, 14, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = reference.aux2(features), aux(features).flatten(1)
    assert expected.abs().max() > 0.01 and (expected - got).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="auxiliary"):
        build_model("googlenet", aux_logits=True)


def test_imports_reject_other_architectures(references):
    with pytest.raises(WeightImportError,  # the aux head's tensors are left over
                       match=r"unmatched tensors: ours \[\], theirs \['AuxLogits\."):
        load_torchvision_inception_v3(build_model("inception_v3", aux_logits=False),
                                      references("inception_v3").state_dict())
    state = dict(references("xception").state_dict())
    state["fc.weight"] = state["fc.weight"][:10]
    with pytest.raises(WeightImportError, match="shape mismatch"):
        load_timm_xception(build_model("xception"), state)
    with pytest.raises(WeightImportError, match="tensors but"):
        load_torchvision_googlenet(build_model("googlenet"),
                                   references("inception_v3").state_dict())


@pytest.mark.parametrize("name,mult_adds", [
    ("inception_v3", 5.7e9), ("xception", 8.4e9),
    ("googlenet", 1.5e9)])  # Szegedy et al. 2015: "1.5 billion multiply-adds"
def test_mult_adds_within_three_percent(name, mult_adds):
    info = model_info(name)
    assert abs(info["mult_adds"] - mult_adds) / mult_adds < 0.03
    assert info["input_size"] == (224 if name == "googlenet" else 299)


def test_inception_v3_json_round_trip_and_dot():
    """tests/test_zoo.py's checks but the 64 px forward (inception_v3 needs >= 75 px, its aux
    head 299 px)."""
    arch, _ = resolve("inception_v3")
    again = load_architecture(arch.to_json())
    assert again == arch and again.canonical_hash() == arch.canonical_hash()
    assert again.aux is not None and again.aux_after == 8
    assert "auxiliary head" in arch.to_dot()
    assert resolve("inception_v3", aux_logits=False)[0].canonical_hash() != \
        arch.canonical_hash()
