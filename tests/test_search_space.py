"""The NASNet search space: decisions, sampling, mutation, graphs."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from nasforge.compiler import Network
from nasforge.dsl import CellPair
from nasforge.search_spaces import NasNetSpace, get_space
from nasforge.zoo import SETTINGS

SPACE = NasNetSpace()


def test_decision_vocabulary():
    sizes = SPACE.decisions()
    assert len(sizes) == 2 * 5 * 5
    assert sizes[:10] == [2, 2, 13, 13, 2, 3, 3, 13, 13, 2]
    assert sizes[25:30] == [2, 2, 13, 13, 2]  # the reduction cell starts over
    assert NasNetSpace(num_blocks=2, ops=["identity", "conv_1x1"],
                       combines=["add"]).decisions() == [2, 2, 2, 2, 1, 3, 3, 2, 2, 1] * 2


def test_unknown_op_in_space_is_rejected():
    with pytest.raises(ValueError, match="conv_9x9"):
        NasNetSpace(ops=["conv_9x9"])
    with pytest.raises(KeyError, match="unknown search space"):
        get_space("nasbench101")


def test_a_combine_that_cannot_merge_two_inputs_is_rejected():
    with pytest.raises(ValueError, match="highway cannot merge a block's two inputs"):
        NasNetSpace(combines=["add", "highway"])  # highway takes (H, T, x)


def test_sampling_uses_only_the_passed_generator():
    a = [SPACE.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert SPACE.sample(np.random.default_rng(8)) != a[0]


def _isomorphic_variant(arch):
    """Swap the two operands of every block: the same architecture, written differently."""
    swap = lambda blocks: tuple(replace(b, inputs=b.inputs[::-1], ops=b.ops[::-1])
                                for b in blocks)
    return replace(arch, normal=swap(arch.normal), reduction=swap(arch.reduction))


def test_thousand_samples_round_trip_and_hash():
    rng = np.random.default_rng(0)
    hashes = set()
    for _ in range(1000):
        x = SPACE.sample(rng)
        assert SPACE.decode(SPACE.encode(x)) == x
        pair = SPACE.to_graph(x)
        h = pair.canonical_hash()
        assert CellPair.from_json(pair.to_json()).canonical_hash() == h
        variant = _isomorphic_variant(x)
        if variant != x:
            assert SPACE.encode(variant) != SPACE.encode(x)
        assert SPACE.to_graph(variant).canonical_hash() == h
        hashes.add(h)
    assert len(hashes) == 1000  # a 10^36 space: no collisions among 1,000 samples


def test_decode_rejects_out_of_range_decisions():
    tokens = SPACE.encode(SPACE.sample(np.random.default_rng(1)))
    tokens[5] = 3  # block 1 may use states 0..2
    with pytest.raises(ValueError, match="decision 5 is 3, out of range 0..2"):
        SPACE.decode(tokens)
    with pytest.raises(ValueError, match="expected 50 decisions"):
        SPACE.decode(tokens[:-1])


def test_mutation_changes_exactly_one_decision():
    rng = np.random.default_rng(3)
    x = SPACE.sample(rng)
    kinds = set()
    for _ in range(300):
        y = SPACE.mutate(x, rng)
        diff = [i for i, (a, b) in enumerate(zip(SPACE.encode(x), SPACE.encode(y))) if a != b]
        assert len(diff) == 1
        kinds.add(("hidden_state", "hidden_state", "op", "op", "combine")[diff[0] % 5])
    assert kinds == {"hidden_state", "op", "combine"}


def test_fifty_random_samples_compile_and_train_a_step():
    rng = np.random.default_rng(11)
    config = replace(SETTINGS["cifar"], N=1, filters=8, aux_head=True)  # 32 px, 10 classes
    torch.manual_seed(0)
    for _ in range(50):
        model = Network(SPACE.to_graph(SPACE.sample(rng)), config)
        model.train()
        model.set_drop_path_progress(0.5)
        logits, aux = model(torch.randn(2, 3, 32, 32))
        assert logits.shape == aux.shape == (2, 10)
        (logits.logsumexp(1).sum() + 0.4 * aux.logsumexp(1).sum()).backward()
        assert all(p.grad is not None for p in model.classifier.parameters())


def test_enas_micro_space_is_the_one_docs_reference_describes():
    """docs/reference.md section 9 (ENAS' cifar10_micro_search.sh): 5 ops, B = 5, add; the
    count is the closed form: per cell, prod over blocks k of (2 + k)^2 inputs x 5^2 ops."""
    import re
    from pathlib import Path

    text = Path(__file__).parents[1].joinpath("docs", "reference.md").read_text()
    listed = re.search(r"5 ops \(([^)]*)\)", text).group(1).split(", ")
    names = {"sep 3x3": "sep_conv_3x3", "sep 5x5": "sep_conv_5x5", "avg 3x3": "avg_pool_3x3",
             "max 3x3": "max_pool_3x3", "identity": "identity"}
    space = get_space("enas-micro")
    assert sorted(space.ops) == sorted(names[n] for n in listed)
    assert (space.num_blocks, space.combines) == (5, ("add",))
    import math

    per_cell = math.prod((2 + k) ** 2 * 5 ** 2 for k in range(5))
    assert math.prod(space.decisions()) == per_cell ** 2
    rng = np.random.default_rng(0)
    used = {op for _ in range(50) for cell in space.sample(rng).cells() for b in cell
            for op in b.ops}
    assert used == set(space.ops)
