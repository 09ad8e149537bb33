"""Evaluation of a model on a split: mean loss, top-1 and top-5, plain or with test-time
augmentation (``recipe.augmentation.tta``), summed over data-parallel ranks."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nasforge.train.placement import Placement


def split_output(out):
    """``(logits, auxiliary logits or None)`` of a model's output (a tensor or a tuple)."""
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def all_reduce_sum(values: list[torch.Tensor], device) -> list[float]:
    """Sums over ranks (one collective) when a process group is up, else the values."""
    t = torch.stack([v.to(device, torch.float64) for v in values])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def tta_logits(model, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Logits of ``model`` on ``x`` with test-time augmentation ``tta`` (a recipe's
    ``augmentation.tta``): "none"; "flip": the mean of the logits of ``x`` and of its mirror
    image; "flip_translate": 1/2 x that + 1/4 x that for ``x`` shifted one pixel down-right
    and 1/4 x that for ``x`` shifted one pixel up-left (reflect padding; airbench's level 2)."""
    def plain(v):
        return split_output(model(v))[0].float()

    def flipped(v):
        return 0.5 * plain(v) + 0.5 * plain(v.flip(-1))

    if tta == "none":
        return plain(x)
    if tta == "flip":
        return flipped(x)
    if tta != "flip_translate":
        raise ValueError(f"unknown tta {tta!r}")
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    shifted = [padded[..., :h, :w], padded[..., 2:2 + h, 2:2 + w]]
    return 0.5 * flipped(x) + 0.25 * sum(flipped(v.contiguous(memory_format=fmt))
                                         for v in shifted)


@torch.no_grad()
def evaluate(model, loader, amp: bool, device: torch.device, *,
             distributed: bool = False, tta: str = "none") -> dict:
    """``{"loss", "acc", "top5"}`` (mean cross-entropy, top-1 and top-5 fractions) of
    ``model`` on ``loader``, its logits taken with test-time augmentation ``tta`` (see
    ``tta_logits``); with ``distributed``, ``loader`` gives this rank's share and the
    sums are all-reduced, so every rank returns the figures of the whole split."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    top5 = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    for x, y in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = tta_logits(model, x, tta)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        k = min(5, logits.shape[1])
        top5 += (logits.topk(k, 1).indices == y[:, None]).any(1).sum()
        n += len(y)
    if distributed:
        loss, c, c5, n = all_reduce_sum([loss_sum, correct, top5, torch.tensor(float(n))],
                                        device)
    else:
        loss, c, c5 = float(loss_sum), int(correct), int(top5)
    n = max(n, 1)
    return {"loss": loss / n, "acc": c / n, "top5": c5 / n}


def evaluate_splits(model, eval_fwd, eval_sets: dict, place: Placement,
                    tta: str = "none") -> dict:
    """Called after each training pass that did not diverge: ``{"<split>_loss",
    "<split>_acc", "<split>_top5"}`` of ``eval_fwd`` (``model``'s evaluation forward) on
    every loader of ``eval_sets``, with test-time augmentation ``tta`` (the last epoch's)."""
    if place.distributed:  # rank 0's BN statistics, as DDP's forward would broadcast them
        for b in model.buffers():
            dist.broadcast(b, 0)
    out = {}
    for name, loader in eval_sets.items():
        m = evaluate(eval_fwd, loader, place.amp, place.device,
                     distributed=place.distributed, tta=tta)
        out[f"{name}_loss"], out[f"{name}_acc"] = m["loss"], m["acc"]
        out[f"{name}_top5"] = m["top5"]
    return out
