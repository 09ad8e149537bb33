"""The NASNet controller RNN (Zoph et al. 2018) trained with PPO or REINFORCE.

A one-layer LSTM emits the decisions of ``space.decisions()`` in order (2 x 5B for NASNet):
one softmax per decision with that decision's vocabulary, the embedding of the previous
decision's choice fed as the next input (a learned start vector first). All weights start
uniform in [-0.1, 0.1]. The reward of a child is its objective (validation accuracy) and the
advantage is the reward minus an exponential moving average of rewards (decay 0.95, updated
child by child as results arrive; it starts at the first reward). After every ``batch_size``
finished children (20) one update runs: the PPO clipped objective by default (the ratio is
between the policy now and the one that sampled each child, which may be older when workers
are slow), REINFORCE as an option, minus ``entropy_weight`` x entropy, Adam with lr 0.00035.
Failed and infeasible children never crash the controller and get the *failed reward*; pruned
children use their objective when they report one, the failed reward otherwise. The failed
reward is ``failed_reward`` when set; by default (None) it is the worst outcome in the
objective's own direction: the lowest reward of a scored child so far (a reward is the
objective signed so that higher is better: a minimized ``mult_adds`` of 3e6 is -3e6) minus a
margin, the larger of that reward's magnitude and the spread of the scored rewards (so with
``val_acc`` rewards 0.1 .. 0.5 a failed child gets -0.3, with ``mult_adds`` rewards -3e6 .. -1e6
it gets -6e6: below every scored child either way). A child that fails before any child has
been scored carries no learning signal (no reward is known yet to be worse than): its
advantage is 0 and it does not move the baseline.

Each update records mean reward, baseline, policy entropy, loss and the KL divergence from the
policy before the update to the one after it, measured on the batch: ``last_stats`` (a dict) and
``history`` (all updates), ready for a TensorBoard writer.

Sampling uses a ``torch.Generator`` seeded from ``seed``; ``state_dict()`` holds tensors
(weights, Adam moments, generator state): save it with ``torch.save``.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from nasforge.controllers.base import Proposal, Result, SearcherBase
from nasforge.trials import Status


@dataclass(frozen=True)
class RLConfig:
    hidden_size: int = 100          # LSTM units (one layer); also the embedding width
    init_range: float = 0.1         # every weight uniform in [-init_range, init_range]
    algorithm: str = "ppo"          # "ppo" (clipped objective) or "reinforce"
    learning_rate: float = 0.00035  # Adam step size
    entropy_weight: float = 0.00001  # weight of the entropy bonus in the loss
    baseline_decay: float = 0.95    # EMA decay of the reward baseline, per finished child
    batch_size: int = 20            # finished children (ok, failed or pruned) per update
    ppo_clip: float = 0.2           # PPO epsilon: the probability ratio is clipped to 1 +- this
    ppo_epochs: int = 1             # gradient steps per update on the same batch
    # reward of a failed or infeasible child, in the units of the signed objective; None = the
    # lowest scored reward so far minus a margin (see the module docstring)
    failed_reward: float | None = None
    grad_clip: float | None = None  # max global gradient norm; None = no clipping
    # speed only: sequences sampled at once from the current policy and handed out by later
    # asks; the unused ones are dropped at each update (one batched LSTM pass instead of many)
    prefetch: int = 20
    # torch intra-op threads while the controller samples or updates (restored after each
    # call); None leaves torch's setting alone. Its tensors are tiny: more threads only add
    # synchronization (10-20x slower with 2 threads on a busy 2-core machine).
    num_threads: int | None = 1
    # ENAS (Pham et al. 2018): logits = tanh_constant * tanh(logits), which bounds them and so
    # keeps the policy exploring; None = plain logits (NASNet)
    tanh_constant: float | None = None

    def __post_init__(self):
        if self.algorithm not in ("ppo", "reinforce"):
            raise ValueError(f"algorithm must be 'ppo' or 'reinforce', got {self.algorithm!r}")
        if min(self.batch_size, self.ppo_epochs, self.hidden_size, self.prefetch) < 1 or \
                (self.num_threads is not None and self.num_threads < 1):
            raise ValueError("batch_size, ppo_epochs, hidden_size, prefetch, num_threads must "
                             "be >= 1")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError("baseline_decay must be in [0, 1)")


class ControllerRNN(nn.Module):
    """LSTM policy over a sequence of categorical decisions of sizes ``sizes``.

    Sampling runs step by step (each input is the embedding of the choice just sampled);
    scoring given sequences (``evaluate``, for the updates) runs the LSTM over the whole
    teacher-forced sequence at once and applies every decision's softmax in one padded tensor,
    the same function with ~20 tensor ops instead of ~300."""

    def __init__(self, sizes: list[int], hidden_size: int = 100, init_range: float = 0.1,
                 tanh_constant: float | None = None):
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        self.tanh_constant = tanh_constant
        self.start = nn.Parameter(torch.empty(1, hidden_size))
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=1, batch_first=True)
        # embedding of decision i's choice = input of step i + 1
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden_size) for n in self.sizes[:-1])
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in self.sizes)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)
        # index maps into the concatenated heads / embeddings, and the padding mask
        width = max(self.sizes)
        head_off = torch.tensor([0] + self.sizes[:-1]).cumsum(0)
        k = torch.arange(width)
        sizes_t = torch.tensor(self.sizes)
        self.register_buffer("_head_index", head_off[:, None] +
                             torch.minimum(k[None, :], sizes_t[:, None] - 1), persistent=False)
        self.register_buffer("_mask", k[None, :] < sizes_t[:, None], persistent=False)
        self.register_buffer("_emb_off", torch.tensor([0] + self.sizes[:-2]).cumsum(0)
                             if len(self.sizes) > 1 else torch.zeros(0, dtype=torch.long),
                             persistent=False)

    @torch.no_grad()
    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` sequences: tokens [batch, D] (int64) and their log-probabilities [batch]."""
        x = self.start.expand(batch, -1)
        h = torch.zeros(batch, self.lstm.hidden_size)
        state, tokens, total = (h, h), [], torch.zeros(batch)
        lstm = self.lstm
        for i, head in enumerate(self.heads):
            # one step of self.lstm (the op nn.LSTMCell runs; 3x cheaper than nn.LSTM per step)
            state = torch.lstm_cell(x, state, lstm.weight_ih_l0, lstm.weight_hh_l0,
                                    lstm.bias_ih_l0, lstm.bias_hh_l0)
            logp = torch.log_softmax(self._bounded(head(state[0])), dim=-1)
            choice = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            tokens.append(choice)
            total = total + logp.gather(1, choice[:, None]).squeeze(1)
            if i + 1 < len(self.heads):
                x = self.embeddings[i](choice)
        return torch.stack(tokens, 1), total

    def evaluate(self, tokens: torch.Tensor):
        """Teacher-forced pass over ``tokens`` [B, D]: log-probability [B] and entropy [B]
        (both summed over decisions), and the padded per-decision log-softmax [B, D, max n]
        (for the KL between two policies; padding entries are about -1e9)."""
        batch, steps = tokens.shape
        x = self.start.expand(batch, 1, -1)
        if steps > 1:
            table = torch.cat([e.weight for e in self.embeddings], 0)
            x = torch.cat([x, table[tokens[:, :-1] + self._emb_off]], 1)
        out, _ = self.lstm(x)  # [B, D, H]
        weight = torch.cat([h.weight for h in self.heads], 0)
        bias = torch.cat([h.bias for h in self.heads], 0)
        full = out @ weight.T + bias  # every head at every step: [B, D, sum n]
        logits = self._bounded(full.gather(2, self._head_index.expand(batch, -1, -1)))
        # padding: a finite -1e9 (probability exactly 0), not -inf, whose gradients are NaN
        logp = torch.log_softmax(logits.masked_fill(~self._mask, -1e9), dim=-1)
        chosen = logp.gather(2, tokens[..., None]).squeeze(2).sum(1)
        plogp = torch.where(self._mask, logp.exp() * logp, torch.zeros(()))
        return chosen, -plogp.sum((1, 2)), logp

    def _bounded(self, logits: torch.Tensor) -> torch.Tensor:
        if self.tanh_constant is None:
            return logits
        return self.tanh_constant * torch.tanh(logits)

    def kl(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """KL(before || after) per sequence [B], summed over decisions, from padded log-probs."""
        terms = torch.where(self._mask, before.exp() * (before - after), torch.zeros(()))
        return terms.sum((1, 2))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


@contextlib.contextmanager
def _torch_threads(n: int | None):
    if n is None or n == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class RLController(SearcherBase):
    """NASNet's RL controller behind the ask/tell protocol."""

    name = "rl"
    Config = RLConfig

    def __init__(self, space, config: RLConfig | None = None, seed: int = 0, **kw):
        super().__init__(space, config, seed, **kw)
        cfg = self.config
        self.generator = torch.Generator().manual_seed(self.seed)
        # parameter init draws from a generator of its own, seeded from ``seed`` too
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.policy = ControllerRNN(space.decisions(), cfg.hidden_size, cfg.init_range,
                                        cfg.tanh_constant)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.learning_rate)
        self.baseline: float | None = None
        # (lowest, highest) reward of a scored child so far: the default failed reward's scale
        self.reward_range: tuple[float, float] | None = None
        self._buffer: list[dict] = []  # finished children awaiting an update
        self._ahead: list[tuple[list[int], float]] = []  # prefetched (tokens, logp), current policy
        self.updates = 0
        self.last_stats: dict | None = None
        self.history: list[dict] = []

    # ------------------------------------------------------------- protocol
    def _propose(self, n: int):
        if len(self._ahead) < n:
            with _torch_threads(self.config.num_threads):
                tokens, logp = self.policy.sample(max(n - len(self._ahead),
                                                      self.config.prefetch), self.generator)
            self._ahead += [(t, float(lp)) for t, lp in zip(tokens.tolist(), logp)]
        take, self._ahead = self._ahead[:n], self._ahead[n:]
        return [(self.space.decode(t), {"origin": "policy", "logp": lp}) for t, lp in take]

    def scored(self, result: Result) -> bool:
        """Whether ``result`` has a reward of its own (its objective): ok, or pruned with a
        finite objective; every other child gets the failed reward."""
        return result.status == Status.OK or (result.status == Status.PRUNED and
                                         self.objective in result.metrics and
                                         math.isfinite(float(result.metrics[self.objective])))

    def failed_reward(self) -> float | None:
        """The reward of a failed or infeasible child now: ``config.failed_reward`` if set,
        else the lowest scored reward minus max(its magnitude, the spread of the scored
        rewards); None before any child is scored (default rule only)."""
        if self.config.failed_reward is not None:
            return float(self.config.failed_reward)
        if self.reward_range is None:
            return None
        low, high = self.reward_range
        return low - max(abs(low), high - low, 1e-12)

    def reward(self, result: Result) -> float | None:
        """The reward of a finished child (None: a failed child before any was scored, which
        carries no learning signal)."""
        if self.scored(result):
            return self.score(result)
        return self.failed_reward()

    def _observe(self, proposal: Proposal, result: Result) -> None:
        if result.status == Status.SCREENED:
            return  # never trained (a prescreen's proxy passed it over): no reward to learn
        r = self.reward(result)
        if self.scored(result):
            low, high = self.reward_range or (r, r)
            self.reward_range = (min(low, r), max(high, r))
        if r is None:  # nothing known yet to be worse than: no signal, baseline unmoved
            advantage = 0.0
        else:
            if self.baseline is None:
                self.baseline = r
            advantage = r - self.baseline
            d = self.config.baseline_decay
            self.baseline = d * self.baseline + (1 - d) * r
        self._buffer.append({"tokens": list(proposal.tokens), "logp": proposal.meta["logp"],
                             "reward": r, "advantage": advantage})
        if len(self._buffer) >= self.config.batch_size:
            with _torch_threads(self.config.num_threads):
                self._update()

    # --------------------------------------------------------------- update
    def _update(self) -> None:
        cfg = self.config
        batch, self._buffer = self._buffer, []
        self._ahead = []  # sampled from the policy this update replaces
        tokens = torch.tensor([b["tokens"] for b in batch], dtype=torch.long)
        logp_old = torch.tensor([b["logp"] for b in batch])
        adv = torch.tensor([b["advantage"] for b in batch])
        before, losses = None, []
        for _ in range(cfg.ppo_epochs):
            logp, entropy, dists = self.policy.evaluate(tokens)
            if before is None:
                before = dists.detach()
                entropy0 = float(entropy.detach().mean())
            if cfg.algorithm == "ppo":
                ratio = torch.exp(logp - logp_old)
                clipped = torch.clamp(ratio, 1 - cfg.ppo_clip, 1 + cfg.ppo_clip)
                pg = -torch.min(ratio * adv, clipped * adv).mean()
            else:
                pg = -(logp * adv).mean()
            loss = pg - cfg.entropy_weight * entropy.mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
            self.optimizer.step()
            losses.append(float(loss.detach()))
        # same autograd mode as ``before`` (the LSTM kernels differ under no_grad)
        _, _, after = self.policy.evaluate(tokens)
        kl = self.policy.kl(before, after.detach()).mean()
        self.updates += 1
        self.last_stats = {
            "update": self.updates, "children": sum(self.counts.values()),
            "mean_reward": _mean([b["reward"] for b in batch if b["reward"] is not None]),
            "baseline": math.nan if self.baseline is None else float(self.baseline),
            "entropy": entropy0, "loss": losses[0],
            "kl": float(kl),
        }
        self.history.append(self.last_stats)

    def stats(self) -> dict[str, float]:
        """The last policy update's statistics (mean reward, baseline, entropy, loss, KL)."""
        out = super().stats()
        if self.last_stats is not None:
            out.update({k: float(v) for k, v in self.last_stats.items()})
        return out

    # ---------------------------------------------------------------- state
    def _get_state(self) -> dict:
        return {"policy": {k: v.clone() for k, v in self.policy.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "generator": self.generator.get_state(),
                "baseline": self.baseline,
                "reward_range": None if self.reward_range is None else list(self.reward_range),
                "buffer": [dict(b) for b in self._buffer],
                "ahead": [[list(t), lp] for t, lp in self._ahead],
                "updates": self.updates, "history": [dict(h) for h in self.history]}

    def _set_state(self, state: Mapping) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        rr = state.get("reward_range")  # absent in states saved before it existed
        self.reward_range = None if rr is None else (float(rr[0]), float(rr[1]))
        self._buffer = [dict(b) for b in state["buffer"]]
        self._ahead = [([int(x) for x in t], float(lp)) for t, lp in state["ahead"]]
        self.updates = int(state["updates"])
        self.history = [dict(h) for h in state["history"]]
        self.last_stats = self.history[-1] if self.history else None
