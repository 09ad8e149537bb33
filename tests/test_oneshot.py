"""The weight-sharing supernet: a path is its stand-alone child, the mixture relaxes it."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from nasforge.compiler.network import Network
from nasforge.dsl import module_key
from nasforge.oneshot import (ArchitectureParameters, Supernet, SupernetError, path_one_hot,
                              slot_candidates)
from nasforge.search_spaces import Block, NasNetArch, NasNetSpace
from nasforge.zoo import SETTINGS

SMALL_OPS = ("sep_conv_3x3", "max_pool_3x3", "identity", "avg_pool_3x3", "conv_1x1",
             "dil_conv_3x3")
SMALL_SPACE = NasNetSpace(num_blocks=3, ops=SMALL_OPS, combines=("add",))
# The three NASNet macros at toy size: CIFAR; ImageNet (stem cells, mobile); ImageNet with
# skip_reduction_layer_input (large).
MACROS = {
    "cifar": replace(SETTINGS["cifar"], N=1, filters=8, drop_path_keep_prob=1.0),
    "mobile": replace(SETTINGS["mobile"], N=1, filters=8, num_classes=10, input_size=64,
                      dropout=0.0),
    "large": replace(SETTINGS["large"], N=1, filters=8, num_classes=10, input_size=64,
                     stem_multiplier=0.5, dropout=0.0, drop_path_keep_prob=1.0),
}


@pytest.fixture(scope="module", params=sorted(MACROS))
def small_supernet(request):
    torch.manual_seed(0)
    return Supernet(SMALL_SPACE, MACROS[request.param])


def randomize_bn_statistics(model, generator):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)


def test_a_path_computes_its_stand_alone_child_with_inherited_weights(small_supernet,
                                                                      one_thread):
    """The child is built by the compiler from the DSL graph, independently of the supernet's
    forward; after inheriting the path's weights it must give the same logits."""
    g = torch.Generator().manual_seed(1)
    randomize_bn_statistics(small_supernet, g)
    small_supernet.eval()
    size = small_supernet.config.input_size
    rng = np.random.default_rng(2)
    for _ in range(6):
        arch = SMALL_SPACE.sample(rng)
        child = small_supernet.child(arch).eval()
        assert isinstance(child, Network)
        x = torch.randn(2, 3, size, size, generator=g)
        with torch.no_grad():
            assert torch.allclose(small_supernet(x, arch=arch), child(x), atol=1e-5, rtol=0)


def test_a_path_runs_only_its_chosen_ops(small_supernet, one_thread):
    arch = SMALL_SPACE.sample(np.random.default_rng(3))
    called = []
    hooks = [module.register_forward_hook(lambda m, i, o, key=(c, key): called.append(key))
             for c, cell in enumerate(small_supernet.cells) for key, module in cell.ops.items()]
    try:
        size = small_supernet.config.input_size
        small_supernet.eval()(torch.randn(1, 3, size, size), arch=arch)
    finally:
        for h in hooks:
            h.remove()
    expected = []
    for c, slot in enumerate(small_supernet.schedule.slots):
        blocks = arch.normal if slot.kind == "normal" else arch.reduction
        expected += [(c, f"b{k}_{side}_from{b.inputs[j]}_{b.ops[j]}")
                     for k, b in enumerate(blocks) for j, side in enumerate("ab")]
    assert called == expected


def test_weights_are_shared_at_enas_granularity():
    """One op module per (cell position, block, input slot, source state, op)."""
    supernet = Supernet(SMALL_SPACE, MACROS["cifar"])
    per_cell = sum(2 * (2 + k) * len(SMALL_OPS) for k in range(SMALL_SPACE.num_blocks))
    assert all(len(cell.ops) == per_cell for cell in supernet.cells)
    # two architectures choosing the same (block, slot, source, op) train the same tensor
    a = NasNetArch(*[tuple(Block((0, 1), ("conv_1x1", "identity")) for _ in range(3))] * 2)
    b = NasNetArch(*[tuple(Block((0, 0), ("conv_1x1", "max_pool_3x3")) for _ in range(3))] * 2)
    weights = [supernet.child(arch).cells[0].body.ops[module_key("b0_a")][1].weight
               for arch in (a, b)]
    assert torch.equal(*weights)
    assert torch.equal(weights[0], supernet.cells[0].ops["b0_a_from0_conv_1x1"][1].weight)


def test_the_full_nasnet_op_set_has_the_childs_parameter_shapes(one_thread):
    space = NasNetSpace(combines=("add",))
    supernet = Supernet(space, MACROS["cifar"])
    arch = space.sample(np.random.default_rng(4))
    child = supernet.child(arch, inherit=False)
    for c, (slot, cell) in enumerate(zip(supernet.schedule.slots, supernet.cells)):
        blocks = arch.normal if slot.kind == "normal" else arch.reduction
        for k, b in enumerate(blocks):
            for j, side in enumerate("ab"):
                ours = cell.ops[f"b{k}_{side}_from{b.inputs[j]}_{b.ops[j]}"]
                theirs = child.cells[c].body.ops[f"b{k}_{side}"]
                assert ([p.shape for p in ours.parameters()] ==
                        [p.shape for p in theirs.parameters()])


def test_mixed_mode_with_one_hot_weights_is_the_path(one_thread):
    """Where both output rules agree (every block unused, both inputs used), a one-hot mixture
    is exactly the path, hence the child."""
    blocks = (Block((0, 1), ("sep_conv_3x3", "identity")), Block((1, 0), ("max_pool_3x3",
              "conv_1x1")), Block((0, 0), ("avg_pool_3x3", "dil_conv_3x3")))
    arch = NasNetArch(blocks, blocks)
    supernet = Supernet(SMALL_SPACE, MACROS["cifar"]).eval()
    randomize_bn_statistics(supernet, torch.Generator().manual_seed(5))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        mixed = supernet(x, mix=path_one_hot(SMALL_SPACE, arch))
        assert torch.allclose(mixed, supernet.child(arch).eval()(x), atol=1e-5, rtol=0)


def test_mixed_mode_trains_every_architecture_weight_and_derives_a_valid_cell(one_thread):
    supernet = Supernet(SMALL_SPACE, MACROS["cifar"]).train()
    alphas = ArchitectureParameters(SMALL_SPACE, torch.Generator().manual_seed(6))
    supernet(torch.randn(2, 3, 32, 32), mix=alphas.probabilities()).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in alphas.parameters())
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        for p in alphas.parameters():
            p.data = torch.randn(p.shape, generator=g)
        arch = alphas.derive()
        pair = SMALL_SPACE.to_graph(arch)
        pair.normal.validate(), pair.reduction.validate()
        # the argmax of each slot, read back from the logits
        expected = [slot_candidates(SMALL_SPACE, k)[int(t.argmax())]
                    for cell in alphas.slot_logits() for k, block in enumerate(cell)
                    for t in block]
        got = [(b.inputs[j], b.ops[j]) for cell in arch.cells() for b in cell for j in range(2)]
        assert got == [(c.source, c.op) for c in expected]
        supernet.child(arch)(torch.randn(2, 3, 32, 32)).sum().backward()


def test_uniform_architecture_weights_are_maximally_undecided():
    alphas = ArchitectureParameters(SMALL_SPACE, init_scale=0.0)
    sizes = [len(slot_candidates(SMALL_SPACE, k)) for k in range(3)]
    assert alphas.entropy() == pytest.approx(float(np.mean(np.log(sizes))), rel=1e-6)


def test_a_gated_path_passes_gradients_to_every_logit_of_its_slots(one_thread):
    """GDAS: hard weights leave the path's output unchanged in value, and the gradient reaches
    every architecture logit through the straight-through softmax."""
    supernet = Supernet(SMALL_SPACE, MACROS["cifar"]).eval()
    alphas = ArchitectureParameters(SMALL_SPACE, torch.Generator().manual_seed(7))
    arch, gates = alphas.sample_hard(10.0, torch.Generator().manual_seed(8))
    again, _ = alphas.sample_hard(10.0, torch.Generator().manual_seed(8))
    assert again == arch  # the same seed draws the same path (data-parallel ranks agree)
    x = torch.randn(2, 3, 32, 32)
    out = supernet(x, arch=arch, gates=gates)
    assert torch.allclose(out, supernet(x, arch=arch), atol=1e-6)
    out.square().sum().backward()
    assert all(p.grad is not None and (p.grad != 0).all() for p in alphas.parameters())


def test_gumbel_sampling_follows_the_architecture_distribution():
    """At temperature 1 the Gumbel-max draw of a slot is distributed as softmax(logits)."""
    space = NasNetSpace(num_blocks=1, ops=("identity", "max_pool_3x3"), combines=("add",))
    alphas = ArchitectureParameters(space)
    with torch.no_grad():
        for t, values in zip(alphas.logits, ([2.0, 0.0, 0.0, 1.0], [0.0] * 4)):
            t.copy_(torch.tensor(values))
    g = torch.Generator().manual_seed(9)
    draws = [alphas.sample_hard(1.0, g)[0].normal[0] for _ in range(4000)]
    first = np.array([2 * b.inputs[0] + space.ops.index(b.ops[0]) for b in draws])
    expected = torch.softmax(torch.tensor([2.0, 0.0, 0.0, 1.0]), 0).numpy()
    observed = np.bincount(first, minlength=4) / len(first)
    assert np.abs(observed - expected).max() < 0.03  # 4,000 draws: standard error <= 0.008


@pytest.mark.parametrize("space, config, message", [
    (NasNetSpace(num_blocks=2, ops=SMALL_OPS), MACROS["cifar"], "only with the 'add' combine"),
    (SMALL_SPACE, replace(MACROS["large"], reduction_layout="replace"), "'insert' reduction"),
])
def test_a_space_the_supernet_cannot_share_is_refused(space, config, message):
    with pytest.raises(SupernetError, match=message):
        Supernet(space, config)


def test_the_nasnet_ext_blocks_share_weights_like_nasnets_ops(one_thread):
    """nasnet-ext's new ops (gates, deformable, selective kernel, ...) in the supernet: a path
    still computes its stand-alone child."""
    from nasforge.ops import EXTENDED_OPS
    from nasforge.search_spaces import NasNetExtSpace

    space = NasNetExtSpace(num_blocks=2, ops=("identity",) + EXTENDED_OPS, combines=("add",))
    supernet = Supernet(space, MACROS["cifar"]).eval()
    g = torch.Generator().manual_seed(10)
    randomize_bn_statistics(supernet, g)
    rng = np.random.default_rng(11)
    for _ in range(3):
        arch = space.sample(rng)
        x = torch.randn(2, 3, 32, 32, generator=g)
        with torch.no_grad():
            assert torch.allclose(supernet(x, arch=arch), supernet.child(arch).eval()(x),
                                  atol=1e-5, rtol=0)
