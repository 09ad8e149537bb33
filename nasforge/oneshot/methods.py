"""One-shot search methods: how a supernet's weights and its architecture choice are trained.

Each method is a small :class:`~nasforge.train.hooks.TrainHooks` handed to the one trainer
(``nasforge.train.train``), which trains the shared weights of a :class:`OneShotModel` on the
training split with the recipe's optimiser and schedule; the method decides, step by step,
which path or mixture that model's forward runs, and trains its own architecture
distribution on validation minibatches (docs/reference.md section 9):

* ``enas``: the RL controller (``controllers/rl.py``, REINFORCE with its moving-average
  baseline) samples a path per training step; after each epoch it takes ``controller_steps``
  steps, each rewarded with the sampled path's accuracy on a validation minibatch.
* ``darts``: the mixture of every candidate: before each weight step on a training batch,
  one Adam step of the architecture logits on a validation batch, with the first-order
  gradient, or (``unrolled=true``) the second-order one through a virtual step of the
  weights on that training batch (``nasforge/oneshot/unrolled.py``).
* ``gdas``: one hard Gumbel-softmax sample per step (straight-through), the temperature annealed
  from ``tau_max`` to ``tau_min`` over the epochs; the logits take an Adam step on a validation
  batch before each weight step, as in DARTS.
* ``spos``: uniformly random paths train the supernet; after training, an ask/tell searcher
  (``evaluator=evolution|optuna|random|rl``) searches ``candidates`` paths with the supernet as
  evaluator (``search_phase``), for the search's objectives and within its constraints (a
  path that violates one is never evaluated).

After every epoch each method derives one cell (``derive``): the argmax of the logits (darts,
gdas), the most likely of ``derive_samples`` controller samples (enas), the best of
``derive_candidates`` random paths on validation batches (spos). Every rank of a
data-parallel run draws the same paths and noise from generators seeded alike and all-reduces
its architecture gradients and rewards, so all ranks hold the same architecture state.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, fields
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from nasforge.compiler import buffers_restored
from nasforge.controllers import Result, get_searcher
from nasforge.data import DeviceLoader
from nasforge.oneshot.evaluate import SupernetEvaluator, search_with_supernet
from nasforge.oneshot.global_bn import local_batch_statistics
from nasforge.oneshot.choices import ArchitectureParameters, SupernetError, choice_layout
from nasforge.oneshot.unrolled import FD_SCALE, sgd_step, unrolled_gradient
from nasforge.rules import add_unique, reject_unknown_keys
from nasforge.train.hooks import TrainHooks
from nasforge.train.trainer import local_batch

log = logging.getLogger(__name__)


class OneShotModel(nn.Module):
    """The module the trainer trains: the supernet, run in the mode its method sets.

    ``train_route`` (training forwards) and ``eval_route`` (evaluation) are the keyword
    arguments of ``Supernet.forward`` (``arch=``, ``mix=``, ``gates=``); the method replaces
    them before each step and after each epoch. The state dict is the supernet's."""

    def __init__(self, supernet: nn.Module):
        super().__init__()
        self.supernet = supernet
        self.train_route: dict = {}
        self.eval_route: dict = {}

    def forward(self, x):
        if self.training:
            return self.supernet(x, **self.train_route)
        if "arch" not in self.eval_route:  # the mixture: every op ran at every step
            return self.supernet(x, **self.eval_route)
        # A path's BN running statistics average every path trained, not this one (evaluated
        # with them, the derived cell of a gdas run on CIFAR-10 scored chance): a path is
        # scored with its own batch statistics, as ENAS scores its samples and NAS-Bench-201's
        # search cells do (track_running_stats=False); SPOS' evaluator recalibrates instead.
        # (whole batches per rank in a data-parallel evaluation: each rank's own statistics)
        with frozen_batch_norm_statistics(self.supernet, batch_statistics=True), \
                local_batch_statistics(self.supernet):
            return self.supernet(x, **self.eval_route)


@contextlib.contextmanager
def frozen_batch_norm_statistics(model: nn.Module, batch_statistics: bool = False):
    """BN without moving the running statistics the evaluation uses: momentum 0 while
    inside; with ``batch_statistics``, every BN also normalizes with its batch's statistics
    (train mode) even when ``model`` is in eval mode."""
    norms = [m for m in model.modules()
             if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    before = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.momentum = 0.0
        if batch_statistics:
            m.training = True
    try:
        yield
    finally:
        for m, (momentum, training) in zip(norms, before):
            m.momentum, m.training = momentum, training


def _all_reduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    """Average ``tensors`` in place over the data-parallel ranks (nothing with one rank)."""
    if world > 1 and dist.is_available() and dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t)
            t.div_(world)


# ------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class OneShotConfig:
    """Options every method takes (``--searcher-option KEY=VALUE``)."""

    blocks: int | None = None  # blocks per cell (default: the space's)
    ops: tuple[str, ...] | None = None  # candidate ops (default: the space's)
    # the supernet shares weights with 'add' only; None: the family's default (NASNet: add)
    combines: tuple[str, ...] | None = None
    val_batch_size: int = 64  # images per architecture / controller step (global batch)

    def __post_init__(self):
        if self.val_batch_size < 1:
            raise ValueError("val_batch_size must be >= 1")

    def space_options(self) -> dict:
        out = {} if self.combines is None else {"combines": tuple(self.combines)}
        if self.blocks is not None:
            out["num_blocks"] = int(self.blocks)
        if self.ops is not None:
            out["ops"] = tuple(self.ops)
        return out


@dataclass(frozen=True)
class EnasConfig(OneShotConfig):
    """ENAS micro search (``cifar10_micro_search.sh``): controller Adam 0.0035, entropy
    weight 1e-4, tanh constant 1.10, baseline decay 0.99, 30 controller steps per epoch."""

    controller_lr: float = 0.0035  # Adam step size of the controller
    entropy_weight: float = 1e-4  # entropy bonus in the controller's loss
    tanh_constant: float = 1.10  # logits = c * tanh(logits)
    baseline_decay: float = 0.99  # moving-average decay of the reward baseline
    controller_steps: int = 30  # controller steps (one sampled path each) per epoch
    derive_samples: int = 16  # controller samples the derived cell is the most likely of


@dataclass(frozen=True)
class LogitConfig(OneShotConfig):
    """Architecture logits stepped as DARTS' (Liu et al. 2019): Adam 3e-4, betas (0.5,
    0.999), weight decay 1e-3."""

    arch_lr: float = 3e-4  # Adam step size of the architecture logits
    arch_beta1: float = 0.5
    arch_beta2: float = 0.999
    arch_weight_decay: float = 1e-3


@dataclass(frozen=True)
class DartsConfig(LogitConfig):
    """DARTS: first-order updates by default; ``unrolled=true`` for second order (eq. 7-8,
    ``nasforge/oneshot/unrolled.py``)."""

    unrolled: bool = False  # second-order (unrolled) architecture gradient
    xi: float | None = None  # virtual step size (lr units); None: the weights' current lr
    fd_scale: float = FD_SCALE  # r of the finite difference's eps = r / ||grad_w' L_val||
    # DARTS- (Chu et al., ICLR 2021): an auxiliary skip of weight beta added to every mixed
    # edge, beta decaying linearly from aux_skip (their 1.0) to 0 over the epochs; 0 = off.
    # Needs a supernet family that has it (SupernetFamily.aux_skip: NAS-Bench-201's).
    aux_skip: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.aux_skip < 0:
            raise ValueError("aux_skip must be >= 0")
        if self.xi is not None and self.xi < 0:
            raise ValueError("xi must be >= 0")
        if self.fd_scale <= 0:
            raise ValueError("fd_scale must be > 0")

    @property
    def order(self) -> int:
        """1 (first order) or 2 (unrolled)."""
        return 2 if self.unrolled else 1


@dataclass(frozen=True)
class GdasConfig(LogitConfig):
    """GDAS (Dong & Yang 2019): hard Gumbel-softmax samples, temperature 10 -> 0.1."""

    tau_max: float = 10.0  # Gumbel-softmax temperature of the first epoch
    tau_min: float = 0.1  # ... of the last epoch (linear in between)


@dataclass(frozen=True)
class SposConfig(OneShotConfig):
    """Single-path one-shot (Guo et al. 2020) / random search with weight sharing (Li &
    Talwalkar 2019): uniform paths, then a searcher with the supernet as evaluator."""

    evaluator: str = "evolution"  # the searcher of the search phase (controllers registry)
    candidates: int = 1000  # paths the search phase evaluates
    recalibration_batches: int = 10  # training batches recomputing a candidate's BN statistics
    recalibration_batch_size: int = 128  # images per recalibration batch
    validation_images: int | None = None  # a fixed subset of the validation split per candidate
    derive_candidates: int = 8  # random paths scored after each epoch for its derived cell
    derive_batches: int = 2  # validation batches each of them is scored on


@dataclass(frozen=True)
class RspsConfig(OneShotConfig):
    """Random sampling with parameter sharing (Li & Talwalkar 2019; NAS-Bench-201's RSPS,
    ``RANDOM-NAS.py``): uniform paths train the supernet; after each epoch the derived cell is
    the best of ``candidates`` uniformly random paths, each scored on ``score_batches``
    validation minibatches (NAS-Bench-201's script: 100 paths, one batch each)."""

    candidates: int = 100  # K: random paths scored for the derived cell
    score_batches: int = 1  # validation minibatches each path is scored on

    def __post_init__(self):
        super().__post_init__()
        if self.candidates < 1 or self.score_batches < 1:
            raise ValueError("candidates and score_batches must be >= 1")


# ------------------------------------------------------------------------------ methods
class OneShotMethod(TrainHooks):
    """What every method shares: the model, the validation minibatch stream, the derived cell
    and the per-epoch summary. Subclasses implement ``before_step``, ``derive`` and, for
    state of their own, ``_state``/``_load``."""

    Config: ClassVar[type] = OneShotConfig
    find_unused_parameters = True  # a path leaves most shared weights without a gradient

    def __init__(self, space, model: OneShotModel, data, *, epochs: int, seed: int,
                 config: OneShotConfig):
        self.space, self.model, self.data = space, model, data
        self.layout = choice_layout(space)  # the supernet's slots (choices.ChoiceLayout)
        self.epochs, self.seed, self.config = int(epochs), int(seed), config
        self.device, self.rank, self.world = torch.device("cpu"), 0, 1
        self.val_loader = None
        self._val_iter = None
        self.epoch_started_at = None  # unix time of the current epoch's first step
        self.derived = None  # the last epoch's derived architecture
        self.weight_optimizer = None  # the trainer's, and its training loss (bind_optimizer)
        self.training_loss = None

    # --- TrainHooks ----------------------------------------------------------------------
    def bind(self, device, rank, world):
        self.device, self.rank, self.world = torch.device(device), rank, world
        batch = min(self.config.val_batch_size, len(self.data.val))
        batch -= batch % world
        if batch < 1:
            raise SupernetError(f"{len(self.data.val)} validation images cannot be shared by "
                                f"{world} workers")
        # shuffled, unaugmented validation minibatches (DARTS, ENAS: a random batch per step)
        self.val_loader = DeviceLoader(
            self.data.val, batch, device=device, train=True, crop_padding=0, flip=False,
            cutout=0, mean=self.data.mean, std=self.data.std,
            generator=torch.Generator().manual_seed(self.seed + 1))
        self.start()

    def bind_optimizer(self, optimizer, loss):
        self.weight_optimizer, self.training_loss = optimizer, loss

    def start(self) -> None:
        """Called by ``bind``: build what lives on the device (architecture parameters)."""

    def end_epoch(self, epoch: int) -> dict:
        self.derived = self.derive(epoch)
        self.model.eval_route = {"arch": self.derived}
        pair = self.space.to_graph(self.derived)
        out = {"cell": pair.to_dict(), "hash": pair.canonical_hash(),
               "tokens": [int(t) for t in self.space.encode(self.derived)],
               "entropy": self.entropy(), "started_at": self.epoch_started_at,
               "derived_at": time.time()}
        out.update({f"method_{k}": float(v) for k, v in self.stats().items()})
        return out

    def state_dict(self) -> dict:
        return {"val_loader": self.val_loader.state_dict(), "method": self._state()}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.val_loader.load_state_dict(state["val_loader"])
        self._load(state["method"])

    # --- what methods implement -----------------------------------------------------------
    def derive(self, epoch: int):
        """Called after each training pass: the epoch's derived architecture."""
        raise NotImplementedError

    def entropy(self) -> float:
        """Mean entropy (nats) per decision of the architecture distribution."""
        sizes = [len(slot.candidates) for slot in self.layout.slots]
        return float(np.mean(np.log(sizes)))  # uniform

    def stats(self) -> dict:
        """Scalars for TensorBoard (controller statistics)."""
        return {}

    def heatmaps(self) -> dict[str, np.ndarray]:
        """Per slot group (cell kind), the probability of every (slot, candidate): rows =
        slots."""
        return {}

    def _state(self) -> dict:
        return {}

    def _load(self, state: dict) -> None:
        pass

    # --- helpers --------------------------------------------------------------------------
    def start_step(self, step: int) -> None:
        """Called first by ``before_step``: a new validation pass at each epoch's start, so a
        run resumed after an epoch draws the batches an uninterrupted one draws."""
        if step == 0:
            self._val_iter = iter(self.val_loader)
            self.epoch_started_at = time.time()

    def val_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next validation minibatch (this rank's share of it)."""
        if self._val_iter is None:
            self._val_iter = iter(self.val_loader)
        try:
            x, y = next(self._val_iter)
        except StopIteration:
            self._val_iter = iter(self.val_loader)
            x, y = next(self._val_iter)
        return local_batch(x, self.rank, self.world), local_batch(y, self.rank, self.world)

    @torch.no_grad()
    def path_accuracy(self, arch, batches: int = 1) -> float:
        """``arch``'s accuracy on ``batches`` validation minibatches (train-mode BN, running
        statistics untouched), averaged over ranks."""
        self.model.train()
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        with frozen_batch_norm_statistics(self.model):
            for _ in range(batches):
                x, y = self.val_batch()
                correct += (self.model.supernet(x, arch=arch).argmax(1) == y).double().mean()
        correct /= batches
        _all_reduce_mean([correct], self.world)
        return float(correct)

    def uniform_path(self, generator: torch.Generator):
        return self.space.decode([int(torch.randint(n, (1,), generator=generator))
                                  for n in self.space.decisions()])

    def best_random_path(self, epoch: int, count: int, batches: int):
        """The best of ``count`` uniformly random paths by ``path_accuracy`` on ``batches``
        validation minibatches (the first on ties); the paths are drawn from a generator
        seeded by the seed and ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        scored = [(self.path_accuracy(arch, batches), i, arch)
                  for i, arch in enumerate(self.uniform_path(generator) for _ in range(count))]
        return max(scored, key=lambda s: (s[0], -s[1]))[2]


class _LogitMethod(OneShotMethod):
    """darts and gdas: architecture logits with DARTS' Adam, stepped on validation batches."""

    Config = LogitConfig

    def start(self):
        cfg = self.config
        self.alphas = ArchitectureParameters(
            self.space, torch.Generator().manual_seed(self.seed)).to(self.device)
        self.arch_optimizer = torch.optim.Adam(
            self.alphas.parameters(), lr=cfg.arch_lr, betas=(cfg.arch_beta1, cfg.arch_beta2),
            weight_decay=cfg.arch_weight_decay)

    def arch_step(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """One Adam step of the logits on a validation batch; ``forward(x)`` returns logits
        that depend on them. Only the logits get gradients (the weights' are not touched)."""
        x, y = self.val_batch()
        loss = F.cross_entropy(forward(x), y)
        params = list(self.alphas.parameters())
        grads = torch.autograd.grad(loss, params)
        _all_reduce_mean(list(grads), self.world)
        for p, g in zip(params, grads):
            p.grad = g
        self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)

    def derive(self, epoch):
        return self.alphas.derive()

    def entropy(self):
        return self.alphas.entropy()

    def heatmaps(self):
        out = {}
        with torch.no_grad():
            probs = self.alphas.flat_probabilities()
            for kind, slots in self.layout.groups().items():
                rows = [probs[s].cpu().numpy() for s in slots]
                table = np.zeros((len(rows), max(len(r) for r in rows)), np.float32)
                for i, r in enumerate(rows):
                    table[i, :len(r)] = r
                out[kind] = table
        return out

    def _state(self):
        return {"alphas": {k: v.detach().cpu().clone()
                           for k, v in self.alphas.state_dict().items()},
                "optimizer": self.arch_optimizer.state_dict()}

    def _load(self, state):
        self.alphas.load_state_dict(state["alphas"])
        self.arch_optimizer.load_state_dict(state["optimizer"])


class Darts(_LogitMethod):
    Config = DartsConfig
    epoch = 0  # of the last step (the auxiliary skip's schedule)

    def aux(self, epoch: int) -> dict:
        """DARTS-' auxiliary skip at ``epoch`` as supernet keyword arguments (none when off):
        beta = aux_skip * (1 - epoch / epochs)."""
        beta = self.config.aux_skip * (1 - epoch / max(self.epochs, 1))
        return {"aux_skip": beta} if self.config.aux_skip > 0 else {}

    def before_step(self, epoch, step, batch):
        self.start_step(step)
        self.model.train()
        self.epoch = epoch
        aux = self.aux(epoch)
        if self.config.unrolled:
            self.unrolled_arch_step(batch)
        else:
            self.arch_step(lambda x: self.model.supernet(x, mix=self.alphas.probabilities(),
                                                         **aux))
        with torch.no_grad():
            mix = self.alphas.probabilities()
        self.model.train_route = {"mix": mix, **aux}

    def unrolled_arch_step(self, batch) -> None:
        """Called by ``before_step`` with ``unrolled=true``: one Adam step of the logits
        with the second-order gradient, its virtual step taken on ``batch`` (the training
        batch of the coming weight step) with the trainer's SGD and step size ``xi`` (default:
        the weights' current learning rate, as DARTS). The weights are not touched and every
        BN buffer is restored, so the weight step sees exactly the state it would have seen
        without the architecture step."""
        from torch.func import functional_call

        supernet = self.model.supernet
        (x_train, y_train), (x_val, y_val) = batch, self.val_batch()
        params = dict(supernet.named_parameters())
        optimizer = self.weight_optimizer
        xi = self.config.xi if self.config.xi is not None else optimizer.param_groups[0]["lr"]

        def logits(weights, x):
            return functional_call(supernet, weights, (x,),
                                   {"mix": self.alphas.probabilities(),
                                    **self.aux(self.epoch)})

        alphas = list(self.alphas.parameters())
        with buffers_restored(supernet):
            grads = unrolled_gradient(
                lambda w: self.training_loss(logits(w, x_train), y_train),
                lambda w: F.cross_entropy(logits(w, x_val), y_val),
                {k: p.detach() for k, p in params.items()}, alphas,
                lambda w, g: sgd_step(optimizer, params, w, g, xi), xi,
                reduce=lambda tensors: _all_reduce_mean(tensors, self.world),
                r=self.config.fd_scale)
        for p, g in zip(alphas, grads):
            p.grad = g
        self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)

    def end_epoch(self, epoch):
        out = super().end_epoch(epoch)
        with torch.no_grad():  # DARTS' supernet validates as the mixture it trains
            self.model.eval_route = {"mix": self.alphas.probabilities(), **self.aux(epoch)}
        return out

    def stats(self):
        return {"aux_skip": self.aux(self.epoch)["aux_skip"]} if self.config.aux_skip else {}


class Gdas(_LogitMethod):
    Config = GdasConfig

    def start(self):
        super().start()
        self.gumbel = torch.Generator().manual_seed(self.seed + 2)
        self.epoch = 0  # of the last end_epoch (its temperature is reported)

    def temperature(self, epoch: int) -> float:
        cfg = self.config
        if self.epochs <= 1:
            return cfg.tau_min
        return cfg.tau_max - (cfg.tau_max - cfg.tau_min) * epoch / (self.epochs - 1)

    def before_step(self, epoch, step, batch):
        self.start_step(step)
        self.model.train()
        tau = self.temperature(epoch)
        arch, gates = self.alphas.sample_hard(tau, self.gumbel)
        self.arch_step(lambda x: self.model.supernet(x, arch=arch, gates=gates))
        with torch.no_grad():
            arch, _ = self.alphas.sample_hard(tau, self.gumbel)
        self.model.train_route = {"arch": arch}

    def stats(self):
        return {"temperature": self.temperature(self.epoch)}

    def end_epoch(self, epoch):
        self.epoch = epoch
        return super().end_epoch(epoch)

    def _state(self):
        return dict(super()._state(), gumbel=self.gumbel.get_state())

    def _load(self, state):
        super()._load(state)
        self.gumbel.set_state(state["gumbel"])


class Enas(OneShotMethod):
    Config = EnasConfig

    def start(self):
        cfg = self.config
        # every rank builds the same controller from the same seed and updates it with the
        # same (all-reduced) rewards, so no controller state crosses ranks
        self.controller = get_searcher(
            "rl", self.space, seed=self.seed, dedup=False, algorithm="reinforce",
            learning_rate=cfg.controller_lr, entropy_weight=cfg.entropy_weight,
            tanh_constant=cfg.tanh_constant, baseline_decay=cfg.baseline_decay,
            batch_size=1, prefetch=1)
        self.paths = torch.Generator().manual_seed(self.seed + 3)

    def before_step(self, epoch, step, batch):
        self.start_step(step)
        tokens, _ = self.controller.policy.sample(1, self.paths)
        self.model.train_route = {"arch": self.space.decode(tokens[0].tolist())}

    def derive(self, epoch):
        for _ in range(self.config.controller_steps):
            proposal, = self.controller.ask(1)
            self.controller.tell(proposal, Result.ok(val_acc=self.path_accuracy(proposal.arch)))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        tokens, logp = self.controller.policy.sample(self.config.derive_samples, generator)
        return self.space.decode(tokens[int(logp.argmax())].tolist())

    def entropy(self):
        generator = torch.Generator().manual_seed(self.seed + 4)
        with torch.no_grad():
            tokens, _ = self.controller.policy.sample(64, generator)
            _, entropy, _ = self.controller.policy.evaluate(tokens)
        return float(entropy.mean()) / len(self.space.decisions())

    def stats(self):
        return {k: v for k, v in self.controller.stats().items()
                if k in ("mean_reward", "baseline", "entropy", "loss", "kl")}

    def _state(self):
        return {"controller": self.controller.state_dict(), "paths": self.paths.get_state()}

    def _load(self, state):
        self.controller.load_state_dict(state["controller"])
        self.paths.set_state(state["paths"])


class _UniformPathMethod(OneShotMethod):
    """Trains the supernet on one uniformly random path per step (SPOS, RSPS)."""

    def start(self):
        self.paths = torch.Generator().manual_seed(self.seed + 3)

    def before_step(self, epoch, step, batch):
        self.start_step(step)
        self.model.train_route = {"arch": self.uniform_path(self.paths)}

    def _state(self):
        return {"paths": self.paths.get_state()}

    def _load(self, state):
        self.paths.set_state(state["paths"])


class Spos(_UniformPathMethod):
    Config = SposConfig

    def derive(self, epoch):
        return self.best_random_path(epoch, self.config.derive_candidates,
                                     self.config.derive_batches)

    def search_phase(self, searcher, judge=None) -> list:
        """Called once after the supernet is trained: ``searcher`` (an ask/tell searcher over
        ``self.space``, built by the run for its objectives) proposes paths until
        ``candidates`` are evaluated, each scored by ``SupernetEvaluator`` (its path's
        validation accuracy after BN recalibration); ``judge`` (``evaluate.CandidateJudge``)
        screens them against the search's constraints and records them. Returns every
        ``(Proposal, Result)`` told, in order."""
        cfg = self.config
        evaluator = SupernetEvaluator(
            self.model.supernet, self.data, recalibration_batches=cfg.recalibration_batches,
            batch_size=cfg.recalibration_batch_size, device=self.device,
            generator=torch.Generator().manual_seed(self.seed + 5),
            validation_images=cfg.validation_images)
        return search_with_supernet(searcher, evaluator, cfg.candidates, judge=judge)


class Rsps(_UniformPathMethod):
    """Uniform paths while training; each epoch's derived cell is the best of K random paths
    on the supernet (``RspsConfig``): the search is the last epoch's derivation."""

    Config = RspsConfig

    def derive(self, epoch):
        return self.best_random_path(epoch, self.config.candidates, self.config.score_batches)


# ----------------------------------------------------------------------------- registry
METHODS: dict[str, type[OneShotMethod]] = {}
# the recipe a method's search trains its supernet with when no --recipe is given
DEFAULT_RECIPES: dict[str, str] = {}
# ... on a given space, where it differs: (method, space name) -> recipe
SPACE_RECIPES: dict[tuple[str, str], str] = {}


def register_method(name: str, cls: type[OneShotMethod],
                    default_recipe: str) -> type[OneShotMethod]:
    """Make ``cls`` available as ``nasforge search --searcher NAME``, training with the
    recipe ``default_recipe`` unless the search names another."""
    add_unique(METHODS, name, cls, "one-shot method")
    DEFAULT_RECIPES[name] = default_recipe
    return cls


for _name, _cls, _recipe in (("enas", Enas, "enas-micro"), ("darts", Darts, "darts-search"),
                             ("gdas", Gdas, "gdas-search"), ("spos", Spos, "spos-search"),
                             ("rsps", Rsps, "rsps-search")):
    register_method(_name, _cls, _recipe)


for _name in METHODS:  # NAS-Bench-201's network and its scripts' settings (recipes.py)
    SPACE_RECIPES[(_name, "nas-bench-201")] = f"{_name}-nb201"
    SPACE_RECIPES[(_name, "darts")] = "oneshot-darts"  # DARTS' search settings


def default_recipe(method: str, space: str | None, fallback: str) -> str:
    """The recipe a search with one-shot ``method`` on ``space`` trains with when none is
    given (``fallback`` for other searchers)."""
    return SPACE_RECIPES.get((method, space), DEFAULT_RECIPES.get(method, fallback))


def method_config(name: str, options: dict) -> OneShotConfig:
    """The method's config from ``--searcher-option`` values; SupernetError for unknown
    methods, fields or values."""
    if name not in METHODS:
        raise SupernetError(f"unknown one-shot method {name!r} (known: {', '.join(METHODS)})")
    cls = METHODS[name].Config
    reject_unknown_keys(cls, options, f"one-shot method {name!r} option", SupernetError)
    values = dict(options)
    for f in fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise SupernetError(f"one-shot method {name!r}: {e}") from None
