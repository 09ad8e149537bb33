"""Faithfulness to code nobody here wrote: timm and pretrainedmodels (random weights, no
download) and the published figures of docs/reference.md sections 6 and 7."""
import pytest
import timm
import torch

from nasforge.api import build_model, resolve
from nasforge.api import model_info
from nasforge.compiler import Network
from nasforge.flops import count_params
from nasforge.weights import WeightImportError, load_reference_state, timm_compatible
from reference_utils import randomize_bn


def _nasnetamobile():
    import pretrainedmodels  # needs `six`; builds offline with pretrained=None

    return pretrainedmodels.nasnetamobile(num_classes=1000, pretrained=None)


REFERENCES = {
    # reference builder, our zoo name, setting, input px, needs timm's avg-pool padding rule
    "nasnetalarge": (lambda: timm.create_model("nasnetalarge"), "nasnet_a", "large", 331, True),
    "pnasnet5large": (lambda: timm.create_model("pnasnet5large"), "pnasnet_5", "large", 331,
                      False),
    "nasnetamobile": (_nasnetamobile, "nasnet_a", "mobile", 224, False),
}
PUBLISHED_PARAMS = {"nasnetalarge": 88_753_150, "pnasnet5large": 86_057_668,
                    "nasnetamobile": 5_289_978}


@pytest.fixture(scope="module", params=sorted(REFERENCES))
def reference(request):
    make, name, setting, size, compat = REFERENCES[request.param]
    torch.manual_seed(0)
    ref = make().eval()
    randomize_bn(ref)
    return request.param, ref, name, setting, size, compat


def test_parameter_parity(reference):
    key, ref, name, setting, _, _ = reference
    assert count_params(ref) == PUBLISHED_PARAMS[key]
    assert count_params(build_model(name, setting)) == PUBLISHED_PARAMS[key]


def test_same_function_after_weight_import(reference):
    key, ref, name, setting, size, compat = reference
    pair, config = resolve(name, setting)
    model = Network(timm_compatible(pair) if compat else pair, config).eval()
    load_reference_state(model, ref.state_dict())
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), model(x)
    assert expected.abs().max() > 0.1  # a meaningful comparison, not two near-zero vectors
    assert (expected - got).abs().max().item() < 1e-4
    if compat:  # TF's padding rule (our default) differs from timm's at image borders
        plain = Network(pair, config).eval()
        load_reference_state(plain, ref.state_dict())
        with torch.no_grad():
            assert (plain(x) - expected).abs().max().item() > 1e-3


def test_weight_import_rejects_a_different_architecture():
    ref = timm.create_model("pnasnet5large")
    with pytest.raises(WeightImportError, match="has 14 cells, the model 22"):
        load_reference_state(build_model("nasnet_a", "large"), ref.state_dict())


@pytest.mark.parametrize("name,setting,mult_adds", [
    ("nasnet_a", "mobile", 564e6), ("nasnet_a", "large", 23.8e9), ("pnasnet_5", "large", 25.0e9),
    ("amoebanet_a", "large", 23.1e9)])
def test_mult_adds_within_three_percent_of_published(name, setting, mult_adds):
    info = model_info(name, setting)
    assert abs(info["mult_adds"] - mult_adds) / mult_adds < 0.03


@pytest.mark.parametrize("name,params,tolerance", [
    ("nasnet_a", 3.3e6, 0.1e6), ("amoebanet_a", 3.2e6, 0.15e6)])
def test_cifar_parameter_counts(name, params, tolerance):
    info = model_info(name, "cifar")
    assert abs(info["params"] - params) <= tolerance
    assert info["output_shape"] == [1, 10] and info["input_size"] == 32


def test_n_at_p_notation():
    for setting, (N, P) in {"cifar": (6, 768), "mobile": (4, 1056), "large": (6, 4032)}.items():
        info = model_info("nasnet_a", setting)
        assert (info["N"], info["penultimate"]) == (N, P)
    assert model_info("nasnet_a", "cifar", N=7, penultimate=2304)["filters"] == 96
    assert model_info("pnasnet_5", "large")["penultimate"] == 4320
