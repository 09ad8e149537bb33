"""Scoring architectures with a trained supernet, and searching with it (SPOS).

Single-path one-shot (Guo et al. 2020; docs/reference.md section 9) trains the supernet with
uniformly sampled paths, then searches with the supernet as the evaluator: a candidate's score is
its path's validation accuracy with the inherited weights, after the BatchNorm statistics are
recalibrated for that path. Recalibration is needed because the running statistics accumulated
while training mix every path that ran through a BN layer; SPOS recomputes them "on the training
set" per candidate. Here that is: reset the running statistics of every BN layer, switch to
cumulative averaging (``momentum=None``), and run ``recalibration_batches`` fixed training
batches through the path in train mode, without gradients; weights are never touched.

``search_with_supernet`` drives any ask/tell searcher of ``nasforge.controllers`` (random,
evolution, Optuna, RL) with an evaluator: each candidate costs ``recalibration_batches`` forward
passes plus one pass over the validation images, no training. A ``CandidateJudge`` (the run
folder's, with the search's constraints: ``oneshot/run.py``) may refuse a candidate before it
is evaluated and decides the result each evaluated one is told.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Protocol

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from nasforge.controllers.base import Proposal, Result
from nasforge.data import DataSplits, DeviceLoader, ImageData
from nasforge.data.types import fixed_subset_indices
from nasforge.oneshot.supernet import Supernet
from nasforge.search_spaces.nasnet import NasNetArch
from nasforge.train import evaluate

log = logging.getLogger(__name__)

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
EVAL_BATCH_SIZE = 500  # validation images per forward pass (no gradients: memory is small)


class PathModel(nn.Module):
    """One path of a supernet as a plain ``model(x) -> logits`` module (what ``evaluate``
    calls); its parameters are the supernet's, shared, not copied.

    ``train(mode)``/``eval()`` walk the supernet's modules only when its mode changes: a
    supernet has 10^4 modules and the walk costs more than a GPU's forward pass over the
    validation images, once per candidate otherwise."""

    def __init__(self, supernet: Supernet, arch: NasNetArch):
        super().__init__()
        self.supernet, self.arch = supernet, arch

    def train(self, mode: bool = True):
        self.training = mode
        if self.supernet.training != mode:
            self.supernet.train(mode)
        return self

    def forward(self, x):
        return self.supernet(x, arch=self.arch)


def recalibrate_batchnorm(forward: Callable, batches) -> int:
    """Recompute the running statistics of the BatchNorm layers that ``forward`` reaches as
    the plain average over ``batches`` of their batch statistics; returns how many layers.

    Called before a candidate is scored. Each BN layer is reset the first time ``forward``
    runs it (in the first batch), switched to train mode with ``momentum=None`` (cumulative
    averaging), and put back in its mode with its momentum after the last batch; the layers
    the forward does not reach, and all weights, are left as they are. Runs without
    gradients.

    The layers are found by a global forward pre-hook during the first batch (public torch
    API: ``register_module_forward_pre_hook``), not by walking the model: a supernet has
    thousands of BN layers of which a path runs a few dozen, and resetting them all costs more
    than the path's forward passes. The hook sees every module run in this process while it is
    registered, so do not run other models concurrently in other threads.
    """
    found: dict[nn.Module, tuple[float | None, bool]] = {}

    def reset_on_first_use(module, inputs):
        if isinstance(module, BATCH_NORMS) and module not in found:
            found[module] = (module.momentum, module.training)
            module.reset_running_stats()
            module.momentum = None  # cumulative moving average: the mean over the batches
            module.train()

    handle = register_module_forward_pre_hook(reset_on_first_use)
    try:
        with torch.no_grad():
            for i, x in enumerate(batches):
                forward(x)
                if i == 0:
                    handle.remove()
    finally:
        handle.remove()
        for module, (momentum, training) in found.items():
            module.momentum = momentum
            module.train(training)
    return len(found)


class SupernetEvaluator:
    """Scores architectures of ``supernet.space`` by their path in ``supernet``.

    Built once per search, after the supernet is trained: it picks ``recalibration_batches`` x
    ``batch_size`` images of ``data.train`` with ``generator`` (without augmentation: the
    statistics then match the un-augmented validation images they normalise) and keeps them
    normalised on ``device``, so every candidate is recalibrated on the same batches and two
    evaluators built with equally seeded generators give the same scores. ``data`` is a
    :class:`~nasforge.data.DataSplits` with a validation split (``split="search"``);
    ``validation_images`` limits the validation split to a fixed subset
    (``fixed_subset_indices``) to buy speed with noise.

    ``evaluate`` overwrites the BN running statistics of the candidate's path (the supernet then
    holds a mixture of the candidates' statistics), and the evaluator moves the supernet to
    ``device`` and puts it in eval mode: save the supernet before a search if you need its
    training-time statistics, and call ``supernet.train()`` to train it again.
    """

    def __init__(self, supernet: Supernet, data: DataSplits, *, recalibration_batches: int = 10,
                 batch_size: int = 128, device=None, generator: torch.Generator,
                 validation_images: int | None = None, amp: bool = False):
        if data.val is None:
            raise ValueError("the supernet evaluator needs a validation split (load the data "
                             "with split='search')")
        if recalibration_batches < 1 or batch_size < 1:
            raise ValueError(f"recalibration_batches and batch_size must be >= 1, got "
                             f"{recalibration_batches} and {batch_size}")
        wanted = recalibration_batches * batch_size
        if wanted > len(data.train):
            raise ValueError(f"{recalibration_batches} recalibration batches of {batch_size} "
                             f"need {wanted} training images, the split has {len(data.train)}")
        self.device = torch.device(device if device is not None else
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        self.supernet = supernet.to(self.device).eval()
        self.space = supernet.space
        self.amp = amp
        pick = torch.randperm(len(data.train), generator=generator)[:wanted]
        common = dict(device=self.device, mean=data.mean, std=data.std)
        recal = ImageData(data.train.images[pick], data.train.labels[pick])
        self.recalibration = [x for x, _ in DeviceLoader(recal, batch_size, train=False,
                                                         **common)]
        val_pick = fixed_subset_indices(len(data.val), validation_images)
        val = data.val if val_pick is None else ImageData(data.val.images[val_pick],
                                                          data.val.labels[val_pick])
        self.validation = DeviceLoader(val, EVAL_BATCH_SIZE, train=False, **common)
        self.validation_size = len(val)

    def evaluate(self, arch: NasNetArch) -> dict:
        """Called once per candidate: ``{"val_acc", "val_loss", "val_top5"}`` of ``arch``'s
        path (top-1/top-5 fractions, mean cross-entropy) on the validation images, after its
        BN statistics are recalibrated on the fixed training batches."""
        path = PathModel(self.supernet, arch).eval()
        recalibrate_batchnorm(path, self.recalibration)
        metrics = evaluate(path, self.validation, self.amp, self.device)
        return {"val_acc": metrics["acc"], "val_loss": metrics["loss"],
                "val_top5": metrics["top5"]}


def check_same_space(searcher_space, supernet_space) -> None:
    """Raise ValueError unless the searcher proposes architectures of the supernet's space
    (same blocks, ops and combines): a concat combine or a foreign op has no path."""
    def signature(space):
        return (type(space).__name__, getattr(space, "num_blocks", None),
                tuple(getattr(space, "ops", ())), tuple(getattr(space, "combines", ())))
    if signature(searcher_space) != signature(supernet_space):
        raise ValueError(f"the searcher's space {signature(searcher_space)} is not the "
                         f"supernet's {signature(supernet_space)}: build the searcher on "
                         f"supernet.space")


class CandidateJudge(Protocol):
    """What ``search_with_supernet`` asks about each candidate besides its score."""

    def before(self, proposal: Proposal) -> Result | None:
        """Called before ``proposal`` is evaluated: None to evaluate it, or the result to tell
        instead (``Result.infeasible``: it violates a constraint; it is never evaluated and
        does not count toward the candidates)."""

    def after(self, proposal: Proposal, result: Result, seconds: float) -> Result:
        """Called after ``proposal`` was evaluated in ``seconds`` (``result``: ok, or failed
        for a non-finite loss): the result to tell (e.g. with its static metrics, or
        infeasible under an accuracy floor)."""

    def stop(self) -> bool:
        """Called before each proposal: True ends the search early (too many infeasible)."""


def search_with_supernet(searcher, evaluator: SupernetEvaluator, candidates: int, *,
                         on_result: Callable[[Proposal, Result], None] | None = None,
                         judge: CandidateJudge | None = None
                         ) -> list[tuple[Proposal, Result]]:
    """Run ``candidates`` evaluations of ``searcher``'s proposals by ``evaluator``, one at a
    time (ask 1, evaluate, tell), and return the ``(proposal, result)`` pairs in evaluation
    order. Called after the supernet is trained (SPOS' search phase); ``searcher`` is any
    ask/tell searcher (``nasforge.controllers.get_searcher(name, supernet.space, seed)``), told
    ``Result.ok(val_acc=..., val_loss=..., val_top5=...)`` per candidate (a duplicate wrapper
    such as ``DedupCache`` may tell it more, from its cache). ``on_result(proposal, result)``,
    if given, is called after each tell (a run folder's trajectory, a progress line).
    ``judge`` (``CandidateJudge``): refuses candidates before evaluation (told their result,
    not counted in ``candidates``; their pairs are returned too), decides the results told for
    evaluated ones and may end the search early.

    Without a judge the best candidate is ``max(pairs, key=lambda pr:
    pr[1].metrics["val_acc"])`` (or the searcher's ``best()``). Logs the rate in candidates
    per second at the end.
    """
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    if getattr(searcher, "space", None) is not None:
        check_same_space(searcher.space, evaluator.space)
    pairs: list[tuple[Proposal, Result]] = []
    t0 = time.perf_counter()
    evaluated = 0
    while evaluated < candidates and not (judge is not None and judge.stop()):
        proposal, = searcher.ask(1)
        started = time.perf_counter()
        result = judge.before(proposal) if judge is not None else None
        if result is None:
            metrics = evaluator.evaluate(proposal.arch)
            evaluated += 1
            result = (Result.ok(**metrics) if math.isfinite(metrics["val_loss"]) else
                      Result.failed("non-finite validation loss", **metrics))
            if judge is not None:
                result = judge.after(proposal, result, time.perf_counter() - started)
        searcher.tell(proposal, result)
        pairs.append((proposal, result))
        if on_result is not None:
            on_result(proposal, result)
    seconds = time.perf_counter() - t0
    log.info("searched %d candidates with the supernet in %.1f s (%.2f candidates/s; %d "
             "refused before evaluation)", evaluated, seconds, evaluated / max(seconds, 1e-9),
             len(pairs) - evaluated)
    return pairs
