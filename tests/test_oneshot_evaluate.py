"""The supernet evaluator (SPOS): BN recalibration, path == child scores, searching with it."""
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nasforge.controllers import SEARCHERS, get_searcher
from nasforge.data import make_splits
from nasforge.data.synthetic import make_synthetic
from nasforge.oneshot import (PathModel, Supernet, SupernetEvaluator, recalibrate_batchnorm,
                              search_with_supernet)
from nasforge.search_spaces import NasNetSpace
from nasforge.zoo import SETTINGS

SPACE = NasNetSpace(num_blocks=2, ops=("sep_conv_3x3", "max_pool_3x3", "identity",
                                       "conv_1x1"), combines=("add",))
MACRO = replace(SETTINGS["cifar"], N=1, filters=4, drop_path_keep_prob=1.0)
RECAL_BATCHES, RECAL_BATCH = 3, 16


@pytest.fixture(scope="module")
def data():
    train, _, classes = make_synthetic(180, 0)
    return make_splits(train, None, classes, val_size=60)


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    net = Supernet(SPACE, MACRO)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # statistics a recalibration must overwrite, not average into
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 4 - 2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 4 + 0.5)
            m.num_batches_tracked.fill_(100)
    return net


def make_evaluator(supernet, data, seed=0):
    return SupernetEvaluator(supernet, data, recalibration_batches=RECAL_BATCHES,
                             batch_size=RECAL_BATCH, device="cpu",
                             generator=torch.Generator().manual_seed(seed))


def normalised(images, data):
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def test_recalibration_sets_every_path_bn_to_the_mean_of_its_batch_statistics(
        supernet, data, one_thread):
    """Expectation by hand: each BN's inputs captured during the passes, reduced with
    torch.var_mean per batch (unbiased variance, as BN's running_var) and averaged."""
    evaluator = make_evaluator(supernet, data)
    arch = SPACE.sample(np.random.default_rng(0))
    norms = {name: m for name, m in supernet.named_modules()
             if isinstance(m, torch.nn.BatchNorm2d)}
    seen = {name: [] for name in norms}
    hooks = [m.register_forward_pre_hook(lambda m, inputs, name=name:
                                         seen[name].append(inputs[0].detach().clone()))
             for name, m in norms.items()]
    weights = {k: v.clone() for k, v in supernet.named_parameters()}
    before = {k: v.clone() for k, v in supernet.named_buffers()}
    try:
        count = recalibrate_batchnorm(PathModel(supernet, arch).eval(), evaluator.recalibration)
    finally:
        for h in hooks:
            h.remove()
    on_path = [name for name in norms if seen[name]]
    assert "stem.1" in on_path and len(on_path) == count > 5
    for name in on_path:
        assert len(seen[name]) == RECAL_BATCHES
        var_means = [torch.var_mean(x, dim=(0, 2, 3), unbiased=True) for x in seen[name]]
        expected_var = torch.stack([v for v, _ in var_means]).mean(0)
        expected_mean = torch.stack([m for _, m in var_means]).mean(0)
        assert torch.allclose(norms[name].running_mean, expected_mean, atol=1e-5), name
        assert torch.allclose(norms[name].running_var, expected_var, rtol=1e-4, atol=1e-6), name
        assert int(norms[name].num_batches_tracked) == RECAL_BATCHES
        assert norms[name].momentum == 0.1 and not norms[name].training  # as they were
    for name in set(norms) - set(on_path):  # layers off the path are left alone
        assert torch.equal(norms[name].running_mean, before[f"{name}.running_mean"]), name
        assert torch.equal(norms[name].running_var, before[f"{name}.running_var"]), name
    assert all(torch.equal(weights[k], v) for k, v in supernet.named_parameters())
    assert not any(m.training for m in supernet.modules())


def test_a_path_scores_what_its_recalibrated_stand_alone_child_scores(supernet, data,
                                                                      one_thread):
    """path == child: the child (compiled from the DSL, inherited weights) recalibrated by hand
    on the evaluator's batches and scored by hand on the validation split."""
    evaluator = make_evaluator(supernet, data)
    x_val, y_val = normalised(data.val.images, data), data.val.labels
    rng = np.random.default_rng(5)
    scores = set()
    for _ in range(3):
        arch = SPACE.sample(rng)
        child = supernet.child(arch, inherit=True)
        for m in child.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        child.train()
        with torch.no_grad():
            for x in evaluator.recalibration:
                child(x)
            logits = child.eval()(x_val)
        expected_acc = int((logits.argmax(1) == y_val).sum()) / len(y_val)
        expected_loss = float(F.cross_entropy(logits, y_val))
        got = evaluator.evaluate(arch)
        assert got["val_acc"] == expected_acc
        assert got["val_loss"] == pytest.approx(expected_loss, rel=1e-4)
        scores.add(round(got["val_loss"], 6))
    assert len(scores) == 3  # three different paths, three different scores


def test_recalibration_batches_are_training_images_normalised_like_validation(data):
    evaluator = make_evaluator(Supernet(SPACE, MACRO), data)
    batches = torch.cat(evaluator.recalibration)
    assert batches.shape == (RECAL_BATCHES * RECAL_BATCH, 3, 32, 32)
    train_images = normalised(data.train.images, data)
    # every recalibration image is one of the training images, unaugmented
    distances = torch.cdist(batches.flatten(1), train_images.flatten(1),
                            compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    assert float(distances.max()) < 1e-3


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_search_with_supernet_tells_every_candidate_and_the_best_scores_highest(
        name, supernet, data, one_thread):
    evaluator = make_evaluator(supernet, data)
    searcher = get_searcher(name, SPACE, seed=0, dedup=False)
    told = []
    pairs = search_with_supernet(searcher, evaluator, 4,
                                 on_result=lambda p, r: told.append(p.id))
    assert len(pairs) == 4 and told == [p.id for p, _ in pairs]
    assert searcher.counts["ok"] == 4 and searcher.in_flight() == []
    rescored = [evaluator.evaluate(p.arch)["val_acc"] for p, _ in pairs]
    best_proposal, best_result = searcher.best()
    assert best_result.metrics["val_acc"] == pytest.approx(max(rescored))
    assert rescored[[p.id for p, _ in pairs].index(best_proposal.id)] == pytest.approx(
        max(rescored))


def test_search_with_a_seeded_evaluator_repeats_its_ranking(supernet, data, one_thread):
    def run(seed):
        searcher = get_searcher("random", SPACE, seed=0, dedup=False)
        pairs = search_with_supernet(searcher, make_evaluator(supernet, data, seed), 3)
        return [p.tokens for p, _ in pairs], [r.metrics["val_loss"] for _, r in pairs]

    first, again, other = run(0), run(0), run(1)
    assert first == again
    assert first[0] == other[0] and first[1] != other[1]  # other batches, other statistics


def test_search_with_supernet_refuses_a_searcher_of_another_space(supernet, data):
    searcher = get_searcher("random", NasNetSpace(num_blocks=2, ops=SPACE.ops), seed=0)
    with pytest.raises(ValueError, match="supernet's"):
        search_with_supernet(searcher, make_evaluator(supernet, data), 1)


def test_the_evaluator_needs_a_validation_split(supernet):
    train, test, classes = make_synthetic(40, 10)
    final = make_splits(train, test, classes, split="final")
    with pytest.raises(ValueError, match="validation split"):
        make_evaluator(supernet, final)
