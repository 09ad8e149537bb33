"""hlb-CIFAR10/airbench's lookahead (``recipe.optim.lookahead_every``): an EMA of the weights
that the model is reset to every few steps, averaging out the noise of a short, high-lr run."""
from __future__ import annotations

import torch


def lookahead_decay(step: int, total_steps: int, final_decay: float) -> float:
    """The lookahead EMA's decay after iteration ``step`` (1-based) of ``total_steps``:
    ``final_decay * (step / total_steps) ** 3`` (airbench: near 0, i.e. no averaging, early
    on; ``final_decay`` at the end)."""
    return final_decay * (step / total_steps) ** 3


class Lookahead:
    """An EMA of a model's floating-point state (weights and BN statistics) that the model is
    reset to at every update. Built before the first step (the EMA starts at the model's
    state); ``update`` is called every ``recipe.optim.lookahead_every`` steps and after the
    last one (with decay 1: the model takes the EMA)."""

    def __init__(self, model: torch.nn.Module):
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()
                    if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay: float) -> None:
        """``ema <- decay * ema + (1 - decay) * model``, then ``model <- ema``."""
        for k, v in model.state_dict().items():
            if k in self.ema:
                self.ema[k].lerp_(v, 1.0 - decay)
                v.copy_(self.ema[k])

    def state_dict(self) -> dict:
        return dict(self.ema)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.ema[k].copy_(v)


def lookahead_step(lookahead: Lookahead, model: torch.nn.Module, step: int, total_steps: int,
                   every: int, final_decay: float) -> None:
    """Called after optimizer step ``step`` (1-based over the run's ``total_steps``): the
    update every ``every`` steps, and at the last step the model takes the EMA."""
    if step % every == 0:
        lookahead.update(model, lookahead_decay(step, total_steps, final_decay))
    if step >= total_steps:  # as airbench: the steps since the last update are dropped
        lookahead.update(model, 1.0)
