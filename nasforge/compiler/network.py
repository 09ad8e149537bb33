"""Stack a (normal, reduction) cell pair into a network: the CIFAR and ImageNet layouts [P], [TF].

The cell schedule follows the TF reference builders literally (``_build_nasnet_base`` and
``_build_pnasnet_base``), so every published wiring quirk is reproduced:

* ``reduction_layout="insert"`` (NASNet, AmoebaNet, DARTS): ``3N`` normal cells, with an extra
  reduction cell inserted before normal cells ``N`` and ``2N``;
* ``reduction_layout="replace"`` (PNASNet): ``3N`` cells in all; the cells at the reduction
  indices run the *normal* cell with stride 2 (the pair's reduction cell is that variant);
* ``skip_reduction_layer_input``: the cell after a reduction takes as h_{i-1} the state before
  the reduction (NASNet-A large, PNASNet) instead of the reduction's input.

``macro`` names the wiring around that schedule (``MACROS``): ``tf`` as above, or ``darts``,
DARTS' ``NetworkCIFAR`` [D] (quark0/darts ``model.py``): the first cell reads the stem as both
inputs, h_{i-1} always goes through ReLU -> 1x1 conv -> BN (or ReLU -> factorized reduction
after a reduction), the auxiliary head reads the second reduction cell's output, the last
cell's output is pooled without a ReLU, and drop path has the same probability in every cell.
With the ``insert`` layout, ``3N`` normal cells are DARTS' ``layers = 3N + 2`` cells with
reductions at ``layers // 3`` and ``2 * layers // 3`` (20 cells: N = 6; 8 cells: N = 2).
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nasforge.compiler.cell_module import NasNetCell, after_relu
from nasforge.dsl.cell import CellError, CellPair
from nasforge.ops.layers import batch_norm


@dataclass(frozen=True)
class Macro:
    """The wiring choices where the TF NASNet builders [TF] and DARTS' NetworkCIFAR [D]
    differ (module docstring)."""

    first_prev_is_stem: bool  # first cell's h_{i-1}: the stem output (DARTS) or absent (TF)
    project_prev: bool  # h_{i-1} through ReLU-1x1-BN even at equal width (DARTS' preprocess0)
    aux_after_reduction: bool  # aux head on the 2nd reduction's output (DARTS), else before it
    relu_before_pool: bool  # ReLU on the last cell's output before global pooling (TF)
    drop_path_by_depth: bool  # keep probability scaled by cell depth (TF) or equal (DARTS)


MACROS: dict[str, Macro] = {
    "tf": Macro(first_prev_is_stem=False, project_prev=False, aux_after_reduction=False,
                relu_before_pool=True, drop_path_by_depth=True),
    "darts": Macro(first_prev_is_stem=True, project_prev=True, aux_after_reduction=True,
                   relu_before_pool=False, drop_path_by_depth=False),
}


def macro_of(config: "NetworkConfig") -> Macro:
    """``MACROS[config.macro]``; ValueError naming the known macros."""
    try:
        return MACROS[config.macro]
    except KeyError:
        raise ValueError(f"unknown network macro {config.macro!r} (known: "
                         f"{', '.join(MACROS)})") from None


@dataclass(frozen=True)
class NetworkConfig:
    """Macro-architecture of a cell network. Units in comments."""

    stem: str = "cifar"  # "cifar": 3x3 conv stride 1; "imagenet": 3x3 stride-2 conv + stem cells
    N: int = 6  # normal cells per stack (3 stacks)
    filters: int = 32  # F: filters per op in the first stack (doubles at each reduction)
    num_classes: int = 10
    stem_multiplier: float = 3.0  # cifar stem: multiplier*F filters; imagenet: 32*multiplier
    reduction_layout: str = "insert"  # "insert" (NASNet) or "replace" (PNASNet)
    skip_reduction_layer_input: bool = False  # see module docstring
    num_reduction_layers: int = 2  # reductions between the 3 stacks
    filter_scaling_rate: float = 2.0  # filter multiplier at each reduction
    num_stem_cells: int = 2  # imagenet: reduction cells at filter scale 1/4, 1/2
    drop_path_keep_prob: float = 1.0  # ScheduledDropPath keep probability at the last cell
    aux_head: bool = False  # auxiliary classifier before the second reduction
    dropout: float = 0.0  # probability of dropping a penultimate feature
    input_size: int = 32  # pixels (square); used by `info` and flop counting
    in_channels: int = 3
    macro: str = "tf"  # a key of MACROS: TF's NASNet wiring or DARTS' NetworkCIFAR


@dataclass(frozen=True)
class CellSlot:
    """One cell application: which cell, at what filter count, fed by which earlier outputs."""

    kind: str  # "normal" | "reduction"
    filters: int
    cur: int  # index into the outputs list (h_i)
    prev: int | None  # index into the outputs list (h_{i-1}); None: absent
    stride: int = 1  # 2 when this slot halves the resolution
    name: str = ""


@dataclass
class Schedule:
    slots: list[CellSlot] = field(default_factory=list)
    aux_after: int | None = None  # slot index whose output feeds the auxiliary head


def reduction_indices(num_cells: int, num_reductions: int) -> list[int]:
    """TF ``calc_reduction_layers``."""
    return [int(k / (num_reductions + 1) * num_cells) for k in range(1, num_reductions + 1)]


def schedule(config: NetworkConfig) -> Schedule:
    """The cell schedule, transcribed from the TF builders (outputs[0] is the stem)."""
    sched = Schedule()
    macro = macro_of(config)
    # TF's cell_outputs; ints index our outputs list (0: the stem), None = absent
    outputs = [0, 0] if macro.first_prev_is_stem else [None, 0]

    def emit(kind, filters, cur, prev, stride, name):
        sched.slots.append(CellSlot(kind, filters, cur, prev, stride, name))
        return len(sched.slots)  # index of this slot's output (0 is the stem)

    F, rate = config.filters, config.filter_scaling_rate
    if config.stem == "imagenet":
        scaling = 1.0 / rate ** config.num_stem_cells
        for k in range(config.num_stem_cells):  # stem cells are strided (reduction) cells
            out = emit("reduction", int(F * scaling), outputs[-1], outputs[-2], 2,
                       f"cell_stem_{k}")
            outputs.append(out)
            scaling *= rate
    num_cells = 3 * config.N
    reductions = reduction_indices(num_cells, config.num_reduction_layers)
    with_aux = config.aux_head and len(reductions) > 1
    # the aux head reads the cell before the second reduction (TF) or the reduction (DARTS)
    aux_cell = reductions[1] - 1 if with_aux and not macro.aux_after_reduction else None
    aux_reduction = reductions[1] if with_aux and macro.aux_after_reduction else None
    scaling = 1.0
    prev = None
    for cell_num in range(num_cells):
        is_reduction = cell_num in reductions
        if config.reduction_layout == "insert":
            if config.skip_reduction_layer_input:
                prev = outputs[-2]
            if is_reduction:
                scaling *= rate
                out = emit("reduction", int(F * scaling), outputs[-1], outputs[-2], 2,
                           f"reduction_cell_{reductions.index(cell_num)}")
                outputs.append(out)
                if cell_num == aux_reduction:
                    sched.aux_after = len(sched.slots) - 1
            if not config.skip_reduction_layer_input:
                prev = outputs[-2]
            out = emit("normal", int(F * scaling), outputs[-1], prev, 1, f"cell_{cell_num}")
        else:
            if is_reduction:
                scaling *= rate
            if config.skip_reduction_layer_input or not is_reduction:
                prev = outputs[-2]
            out = emit("reduction" if is_reduction else "normal", int(F * scaling),
                       outputs[-1], prev, 2 if is_reduction else 1, f"cell_{cell_num}")
        outputs.append(out)
        if cell_num == aux_cell or (cell_num == aux_reduction and
                                    config.reduction_layout != "insert"):
            sched.aux_after = len(sched.slots) - 1
    return sched


def build_stem(config: NetworkConfig) -> tuple[nn.Module, int, int]:
    """The stem conv + BN of [TF]: (module, output channels, output size in pixels)."""
    if config.stem == "cifar":
        c_stem = int(config.stem_multiplier * config.filters)
        return (nn.Sequential(nn.Conv2d(config.in_channels, c_stem, 3, padding=1, bias=False),
                              batch_norm(c_stem)), c_stem, config.input_size)
    if config.stem == "imagenet":
        c_stem = int(32 * config.stem_multiplier)
        return (nn.Sequential(nn.Conv2d(config.in_channels, c_stem, 3, stride=2, bias=False),
                              batch_norm(c_stem)), c_stem, (config.input_size - 3) // 2 + 1)
    raise ValueError(f"unknown stem {config.stem!r} (expected 'cifar' or 'imagenet')")


class AuxiliaryHead(nn.Module):
    """[TF] ReLU -> avgpool 5x5 s3 -> 1x1 conv 128 -> BN -> ReLU -> conv 768 over the full
    extent -> BN -> ReLU -> FC."""

    def __init__(self, c_in: int, num_classes: int, spatial: int):
        super().__init__()
        pooled = max((spatial - 5) // 3 + 1, 1)
        self.features = nn.Sequential(
            nn.ReLU(inplace=False), nn.AvgPool2d(5, 3) if spatial >= 5 else nn.Identity(),
            nn.Conv2d(c_in, 128, 1, bias=False), batch_norm(128), nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, pooled if spatial >= 5 else spatial, bias=False),
            batch_norm(768), nn.ReLU(inplace=False))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x, relu_x=None):
        """``relu_x``: the ReLU of ``x`` when the network has it (shared ReLUs)."""
        features = self.features(x) if relu_x is None else after_relu(self.features, relu_x)
        return self.classifier(torch.flatten(features.mean((2, 3)), 1))


@contextlib.contextmanager
def buffers_restored(module: nn.Module):
    """Every buffer of ``module`` (BN running statistics, batch counters) holds on exit
    exactly what it held on entry, whatever the forwards inside did to it: a recomputed
    cell's BatchNorms see the batch again, and second-order DARTS' virtual forwards run, but
    the statistics move once per step."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _recompute_contexts(cell: nn.Module):
    """``checkpoint``'s ``context_fn`` for ``cell``: nothing around the forward pass, its
    buffers (BN statistics) restored around the recomputation (called by ``checkpoint`` once
    per cell call)."""
    return contextlib.nullcontext(), buffers_restored(cell)


class Network(nn.Module):
    """A compiled cell network. ``forward`` returns logits, or ``(logits, aux_logits)`` in
    training mode when the auxiliary head is on.

    Recomputed cells (``recompute_cells``, off unless ``set_cell_recompute(model, True)``): in
    training with gradients on, each cell runs under ``torch.utils.checkpoint`` (non-reentrant):
    autograd keeps only the cell's inputs and recomputes the cell's inside during the backward
    pass, with the forward's RNG state (the same drop-path masks) and its BatchNorm running
    statistics left as the forward set them (updated once per step). Same loss and gradients;
    a `search` child keeps a fraction of its activations for about a third more compute.
    """

    recompute_cells = False  # see set_cell_recompute

    def __init__(self, pair: CellPair, config: NetworkConfig):
        super().__init__()
        self.config = config
        self.macro = macro_of(config)
        self.arch_name = pair.name
        self.stem, c_stem, spatial = build_stem(config)
        self.schedule = schedule(config)
        channels, levels = [c_stem], [0]
        total = len(self.schedule.slots)
        self.cells = nn.ModuleList()
        cells = {"normal": pair.normal, "reduction": pair.reduction}
        for kind, expected in (("normal", 0), ("reduction", 1)):
            if cells[kind].validate().output_level() != expected:
                raise CellError(f"a {kind} cell must halve the resolution {expected} time(s), "
                                f"this one does {cells[kind].output_level()} (strided ops on "
                                f"cell inputs reduce)", None, cells[kind].name)
        for i, slot in enumerate(self.schedule.slots):
            depth = (i + 1) / total if self.macro.drop_path_by_depth else 1.0
            keep = 1 - depth * (1 - config.drop_path_keep_prob)
            prev_larger = slot.prev is not None and levels[slot.prev] < levels[slot.cur]
            cell = NasNetCell(cells[slot.kind], slot.filters, channels[slot.cur],
                              None if slot.prev is None else channels[slot.prev],
                              prev_larger, keep, project_prev=self.macro.project_prev)
            self.cells.append(cell)
            channels.append(cell.out_channels)
            levels.append(levels[slot.cur] + (slot.stride == 2))
            if i == self.schedule.aux_after:
                self.aux_head = AuxiliaryHead(cell.out_channels, config.num_classes,
                                              math.ceil(spatial / 2 ** levels[-1]))
        if config.aux_head and self.schedule.aux_after is None:
            raise ValueError("auxiliary head needs two reductions")
        self.num_features = channels[-1]
        self.dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.classifier = nn.Linear(self.num_features, config.num_classes)

    def set_drop_path_progress(self, progress: float):
        """Called by the trainer (fraction of training done, 0..1) to schedule drop-path."""
        for cell in self.cells:
            cell.drop_path.progress = float(progress)

    def _cell_caller(self):
        """How ``forward_features`` calls a cell in this pass: directly, or (recomputed cells,
        training with gradients on) through ``checkpoint``."""
        if not (self.recompute_cells and self.training and torch.is_grad_enabled()):
            return lambda cell, *args: cell(*args)

        def call(cell, *args):
            return checkpoint(cell, *args, use_reentrant=False, preserve_rng_state=True,
                              context_fn=functools.partial(_recompute_contexts, cell))
        return call

    def forward_features(self, x):
        outputs = [self.stem(x)]
        aux = None
        if self.training and all(cell.body.share_relu for cell in self.cells):
            return self._forward_features_shared(outputs)
        call = self._cell_caller()
        for i, (slot, cell) in enumerate(zip(self.schedule.slots, self.cells)):
            outputs.append(call(cell, outputs[slot.cur],
                                None if slot.prev is None else outputs[slot.prev]))
            if i == self.schedule.aux_after and self.training:
                aux = self.aux_head(outputs[-1])
        return (torch.relu(outputs[-1]) if self.macro.relu_before_pool else outputs[-1]), aux

    def _forward_features_shared(self, outputs: list):
        """``forward_features`` in training mode with shared ReLUs: each cell output's ReLU,
        which the next cell's h_i input, the cell after's h_{i-1} input and the auxiliary
        head would each compute, is computed once (``CompiledGraph``)."""
        relus: dict[int, torch.Tensor] = {}

        def relu_of(i: int) -> torch.Tensor:
            if i not in relus:
                relus[i] = torch.relu(outputs[i])
            return relus[i]

        aux = None
        call = self._cell_caller()
        for i, (slot, cell) in enumerate(zip(self.schedule.slots, self.cells)):
            has_prev = slot.prev is not None
            outputs.append(call(cell, outputs[slot.cur],
                                outputs[slot.prev] if has_prev else None,
                                relu_of(slot.cur),
                                relu_of(slot.prev) if has_prev and cell.reads_relu_prev
                                else None))
            if i == self.schedule.aux_after:
                aux = self.aux_head(outputs[-1], relu_of(len(outputs) - 1))
        last = len(outputs) - 1
        return (relu_of(last) if self.macro.relu_before_pool else outputs[last]), aux

    def forward(self, x):
        features, aux = self.forward_features(x)
        logits = self.classifier(self.dropout(torch.flatten(features.mean((2, 3)), 1)))
        return (logits, aux) if aux is not None else logits


def set_cell_recompute(model: nn.Module, on: bool) -> nn.Module:
    """Turn recomputed cells (``Network``) on or off in every cell network of ``model``;
    called by ``nasforge.train.train`` with ``Recipe.speed.recompute_cells``. Returns ``model``."""
    for m in model.modules():
        if isinstance(m, Network):
            m.recompute_cells = bool(on)
    return model
