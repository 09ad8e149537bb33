"""How much memory a supernet step needs, measured before anything real is allocated.

The supernet is built on PyTorch's ``meta`` device (shapes, no storage) and one training
forward of a single image runs there under ``saved_tensors_hooks``, which sees every tensor
autograd keeps for the backward pass: their bytes are the activation memory per image. A
mixture (darts) keeps every candidate's activations, a path (enas, gdas, spos) one
candidate's per slot, so the estimate follows the method's mode. The total (weights, their
gradients and two optimiser moments, plus a batch of activations) is compared with the memory
the device has free.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from nasforge.oneshot.choices import choice_layout, family_of
from nasforge.oneshot.supernet import (SLOTS, Candidate, Supernet, SupernetError, op_key,
                                       slot_candidates)

log = logging.getLogger(__name__)

# weights + gradients + momentum (SGD) -- with Adam's two moments it would be 4
WEIGHT_COPIES = 3
# second-order DARTS (unrolled.py) holds two more at once: the training gradient and the
# virtual weights, then those and the validation gradient, then that and the shifted weights
UNROLLED_EXTRA_COPIES = 2
# the allocator's slack, the evaluation pass, the data on the device: measured peaks of small
# CPU runs stayed below 1.5 x the estimate (docs/benchmarks.md, one-shot)
SAFETY = 1.5


@dataclass(frozen=True)
class MemoryEstimate:
    params: int  # parameters of the supernet
    weight_bytes: int  # parameters x WEIGHT_COPIES x 4 bytes
    activation_bytes_per_image: int  # tensors saved for the backward pass, one image
    batch: int  # images per step on one process

    @property
    def total_bytes(self) -> int:
        return int(SAFETY * (self.weight_bytes + self.activation_bytes_per_image * self.batch))


def _saved_bytes(fn, *args) -> tuple[int, object]:
    """(bytes autograd saves for the backward pass of ``fn(*args)``, its output)."""
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return saved[0], out


def estimate(space, config, batch: int, mixed: bool, unrolled: bool = False) -> MemoryEstimate:
    """The memory of one training step of the supernet of ``space`` under ``config``
    (``unrolled``: second-order DARTS, ``UNROLLED_EXTRA_COPIES`` more weight copies).

    A path's activations are measured by one meta forward of the path whose every slot
    reads the first op from h_i. A mixture's are that, minus those slots' ops, plus every
    candidate's op (each measured once per distinct op, input shape and cell, since all the
    candidates of a cell with the same source kind see the same shapes) and the weighted copy
    of its output the mixture keeps."""
    with torch.device("meta"):
        supernet = family_of(space).build(space, config).train()
        params = sum(p.numel() for p in supernet.parameters())
        x = torch.empty(1, config.in_channels, config.input_size, config.input_size,
                        requires_grad=True)
        weight_bytes = params * (WEIGHT_COPIES + UNROLLED_EXTRA_COPIES * unrolled) * 4
        if not isinstance(supernet, Supernet):  # another family: measured whole
            return MemoryEstimate(params, weight_bytes,
                                  _measured_bytes(space, supernet, x, mixed), batch)
        cell_inputs = []
        hooks = [cell.register_forward_pre_hook(
            lambda m, args, kw: cell_inputs.append((m, kw.get("arch_cell") if kw else None,
                                                    args)), with_kwargs=True)
                 for cell in supernet.cells]
        path = space.decode([0] * len(space.decisions()))
        try:
            path_bytes, _ = _saved_bytes(lambda: supernet(x, arch=path))
        finally:
            for h in hooks:
                h.remove()
        if not mixed:
            return MemoryEstimate(params, weight_bytes, path_bytes, batch)
        total = path_bytes
        with torch.no_grad():
            for cell, _, (h_i, h_prev) in cell_inputs:
                states = [cell.pre0(*h_i), h_i[0] if cell.pre1 is None else
                          cell.adjust_prev(*h_prev)]
                block_state = cell.ops[op_key(0, "a", Candidate(0, space.ops[0]))](states[0])
                cache = {}
                for k in range(space.num_blocks):
                    for side in SLOTS:
                        for cand in slot_candidates(space, k):
                            source = states[cand.source] if cand.source < 2 else block_state
                            kind = (cand.op, min(cand.source, 2))
                            if kind not in cache:
                                module = cell.ops[op_key(k, side, cand)]
                                with torch.enable_grad():
                                    nbytes, out = _saved_bytes(
                                        module, source.detach().requires_grad_())
                                cache[kind] = nbytes + out.numel() * out.element_size()
                            total += cache[kind]
                    total -= 2 * cache[(space.ops[0], 0)]  # the path's own ops, counted twice
    return MemoryEstimate(params, weight_bytes, total, batch)


def _measured_bytes(space, supernet, x, mixed: bool) -> int:
    """Activation bytes of one image through ``supernet`` (a family without NASNet's per-op
    shortcut), on the meta device: the uniform mixture when ``mixed``, else the largest of the
    paths the layout derives from candidate c in every slot (``ChoiceLayout.derive``: those
    paths, where any candidate per slot is one)."""
    layout = choice_layout(space)
    if mixed:
        mix = layout.route([torch.full((len(s.candidates),), 1 / len(s.candidates))
                            for s in layout.slots])
        return _saved_bytes(lambda: supernet(x, mix=mix))[0]
    fewest = min(len(s.candidates) for s in layout.slots)
    def path(c: int):  # the probabilities on the CPU: a derivation reads their values
        return layout.derive([(torch.arange(len(s.candidates), device="cpu") == c).float()
                              for s in layout.slots])
    return max(_saved_bytes(lambda: supernet(x, arch=path(c)))[0] for c in range(fewest))


def available_bytes(device: torch.device) -> int:
    """Free memory of ``device``: CUDA's free memory, else the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_fits(space, config, batch: int, mixed: bool, device: torch.device,
               processes: int = 1, unrolled: bool = False) -> MemoryEstimate:
    """Raise SupernetError (one line, sizes in GiB) when ``processes`` copies of a supernet
    step do not fit in ``device``'s free memory; return the estimate otherwise."""
    est = estimate(space, config, batch, mixed, unrolled)
    need = est.total_bytes * (processes if device.type != "cuda" else 1)
    have = available_bytes(device)
    log.info("supernet: %d parameters, %.1f MiB activations per image, %.2f GiB needed, "
             "%.2f GiB free", est.params, est.activation_bytes_per_image / 2 ** 20,
             need / 2 ** 30, have / 2 ** 30)
    if need > have:
        copies = f" x {processes} processes" if processes > 1 and device.type != "cuda" else ""
        raise SupernetError(
            f"the supernet does not fit in memory: about {need / 2 ** 30:.1f} GiB needed "
            f"({est.params / 1e6:.1f}M parameters, {est.activation_bytes_per_image / 2 ** 20:.1f}"
            f" MiB of activations per image x batch {batch}{copies}), {have / 2 ** 30:.1f} GiB "
            f"free on {device.type}: use fewer blocks/ops, a smaller N/filters or batch")
    return est
