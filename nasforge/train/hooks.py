"""``TrainHooks``: what a caller of :func:`nasforge.train.train` may add to its loop.

The one trainer trains every network nasforge trains; a one-shot search (``nasforge.oneshot``)
trains a supernet's shared weights with it and steers the loop through these calls (sampling a
path, taking an architecture step on a validation batch, training a controller after an epoch)
instead of running a second loop. The default methods do nothing.

Order within ``train``: ``bind`` once (after the model is on its device, before a resume
restores anything), ``bind_optimizer`` once the weight optimiser exists (also before a
resume, which restores its state in place), ``load_state_dict`` when resuming from a
checkpoint, then per epoch
``before_step`` before every training forward, ``end_epoch`` after the training pass and
before the evaluation splits, then the checkpoint (which holds ``state_dict()``), then
``report``. A resumed run therefore continues with the hooks' state of the last checkpointed
epoch, exactly as the weights and the optimiser do.
"""
from __future__ import annotations

from typing import Callable

import torch


class TrainHooks:
    """Base class (and documentation) of the calls ``train(..., hooks=)`` makes."""

    #: data-parallel runs: DistributedDataParallel's ``find_unused_parameters``. A supernet's
    #: path uses a different subset of its parameters at every step, so its hooks set it.
    find_unused_parameters: bool = False

    def bind(self, device: torch.device, rank: int, world: int) -> None:
        """Called once, before any other call: where this process computes, its rank and the
        number of data-parallel processes (1 without ``distributed``)."""

    def bind_optimizer(self, optimizer: torch.optim.Optimizer,
                       loss: Callable[[object, torch.Tensor], torch.Tensor]) -> None:
        """Called once after ``bind``, when the weight optimiser is built: that optimiser
        (its state is restored in place on resume) and ``loss(model output, labels)``, the
        training loss the trainer minimises. For hooks that simulate a weight step (the
        virtual step of second-order DARTS)."""

    def before_step(self, epoch: int, step: int,
                    batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Called before each training forward (0-based ``epoch`` and ``step`` in the epoch)
        with ``batch``, this rank's ``(images, labels)`` the step is about to train on."""

    def end_epoch(self, epoch: int) -> dict:
        """Called after the training pass of ``epoch`` (0-based), before evaluation; returns
        extra metrics (JSON values) for the epoch's history entry (and so the checkpoint and
        ``report``)."""
        return {}

    def state_dict(self) -> dict:
        """Called when the checkpoint is written: plain data and tensors only (the
        checkpoint is read with ``weights_only=True``)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Called when a run resumes, with what ``state_dict`` returned."""
