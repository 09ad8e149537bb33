"""A weight-sharing supernet compiled from a NASNet block-choice space and the NASNet macro.

One module holds a weight set for every choice, at ENAS's granularity (docs/reference.md
section 9): one op module per (cell position, block, input slot, source state, op), each built by
the op registry exactly as the stand-alone child builds it (``create_op(op, c_in, F, stride)``),
so a path's op and the child's op have the same parameter shapes and weights copy one to one.

Two forward modes:

* **path** (``forward(x, arch=...)``): one architecture; only its chosen ops run, so a step costs
  what the child's step costs. With ``gates`` (GDAS), each slot has hard weights ``h`` (one-hot
  in value, softmax in gradient: ``ArchitectureParameters.sample_hard``); the chosen op's output
  is multiplied by its weight and the others' weights (zeros) are added, as GDAS' cells do, so
  the gradient reaches every logit of the slot while only the chosen op runs.
* **mixed** (``forward(x, mix=...)``): DARTS' continuous relaxation adapted to block choice:
  every input slot of every block is a softmax-weighted sum over all its (source state, op)
  candidates; the derived architecture is the argmax of each slot (``ArchitectureParameters
  .derive``), always a valid NASNet cell pair.

Decisions where the literature leaves room:

* The combine is fixed to ``add`` (ENAS and DARTS both sum): a concat combine changes a state's
  width with the choice, so the ops reading it could not share one weight set.
* A cell's output is, in path mode, the concatenation of the unused states (the NASNet rule, the
  child's output); in mixed mode the concatenation of every block (DARTS' rule: "unused" is not
  defined for a mixture). The 1x1 convs that read a cell's output (the next cells' input
  adjustments, the classifier) hold weights for every state and use the columns of the states
  that are present, as ENAS gathers its final 1x1 weights by the unused states' indices.
* The supernet has no auxiliary head and no drop-path; those stay training options of the child.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.compiler.network import Network, NetworkConfig, build_stem, schedule
from nasforge.dsl import module_key, state_id
from nasforge.ops.layers import FactorizedReduction, ReLUConvBN
from nasforge.oneshot.choices import (ArchitectureParameters, ChoiceLayout, Slot,  # noqa: F401
                                      SupernetError, SupernetFamily, register_family)
from nasforge.registry import create_op
from nasforge.search_spaces.nasnet import NUM_INPUTS, NasNetArch, NasNetSpace
from nasforge.zoo import SETTINGS

CELL_KINDS = ("normal", "reduction")  # the order of NasNetArch.cells()
SLOTS = "ab"  # a block's two input slots, in the order of the space's decisions


@dataclass(frozen=True)
class Candidate:
    """One choice of an input slot: an op applied to a source state."""

    source: int  # state index: 0 = h_i, 1 = h_{i-1}, 2 + k = block k
    op: str


def slot_candidates(space: NasNetSpace, block: int) -> list[Candidate]:
    """The (source, op) choices of either input slot of ``block``, in flat-index order."""
    return [Candidate(source, op) for source in range(NUM_INPUTS + block) for op in space.ops]


def candidate_index(space: NasNetSpace, source: int, op: str) -> int:
    """The flat index of (source, op) among ``slot_candidates``."""
    return source * len(space.ops) + space.ops.index(op)


def check_shareable(space, config: NetworkConfig) -> None:
    """Raise SupernetError, naming the problem, when the supernet cannot be built."""
    if not isinstance(space, NasNetSpace):
        raise SupernetError(f"the supernet needs a NASNet block-choice space, got "
                            f"{type(space).__name__}")
    if tuple(space.combines) != ("add",):
        raise SupernetError(f"the supernet shares weights only with the 'add' combine (a concat "
                            f"changes a state's width with the choice); this space has "
                            f"{', '.join(space.combines)}")
    if config.reduction_layout != "insert":
        raise SupernetError("the supernet supports the NASNet 'insert' reduction layout only")
    if config.macro != "tf":
        raise SupernetError(f"the supernet supports the TF NASNet macro only, not "
                            f"{config.macro!r}")


# ----------------------------------------------------------------- cell output selections
@dataclass(frozen=True)
class Selection:
    """Which equally wide states a concatenated cell output holds, in order."""

    states: tuple[int, ...]
    width: int  # channels per state

    def channels(self, device=None) -> torch.Tensor:
        return torch.cat([torch.arange(s * self.width, (s + 1) * self.width, device=device)
                          for s in self.states])


def take_columns(weight: torch.Tensor, selection: Selection | None) -> torch.Tensor:
    """``weight``'s input-channel columns for the states in ``selection`` (all when None)."""
    if selection is None:
        return weight
    return weight.index_select(1, selection.channels(weight.device))


class SelectedReLUConvBN(ReLUConvBN):
    """ReLU -> 1x1 conv -> BN reading a cell output whose states vary with the architecture.

    Its conv holds a column block for every state the producer can output; a forward uses the
    blocks of the states present (the stand-alone child's ``ReLUConvBN`` is that slice, with the
    same state-dict keys).
    """

    def __init__(self, c_in_max: int, c_out: int):
        super().__init__(c_in_max, c_out, 1)

    def forward(self, x, selection: Selection | None):
        relu, conv, bn = self
        return bn(F.conv2d(relu(x), take_columns(conv.weight, selection)))


class SelectedFactorizedReduction(FactorizedReduction):
    """ReLU -> FactorizedReduction (stride 2) over a cell output of varying states (the child's
    ``Sequential(ReLU, FactorizedReduction)``'s second module is its slice)."""

    def __init__(self, c_in_max: int, c_out: int):
        super().__init__(c_in_max, c_out, 2)

    def forward(self, x, selection: Selection | None):
        x = F.relu(x)
        path_1 = x[:, :, ::2, ::2]
        path_2 = F.pad(x, (0, 1, 0, 1))[:, :, 1::2, 1::2]
        return self.bn(torch.cat([F.conv2d(path_1, take_columns(self.conv_1.weight, selection)),
                                  F.conv2d(path_2, take_columns(self.conv_2.weight, selection))],
                                 1))


def copy_selected(source: nn.Module, target: nn.Module, selection: Selection | None) -> None:
    """Copy a Selected* module into the child's fixed-width module of the same layout (same
    state-dict keys): conv weights sliced to the selection's columns, the rest as it is."""
    target.load_state_dict({name: take_columns(value, selection) if value.dim() == 4 else value
                            for name, value in source.state_dict().items()})


# ---------------------------------------------------------------------------- the cell
def op_key(block: int, side: str, cand: Candidate) -> str:
    """The ModuleDict key of one shared op: block, input slot, source state, op."""
    return f"b{block}_{side}_from{cand.source}_{cand.op}"


class SupernetCell(nn.Module):
    """Every choice of one cell position (a slot of the macro's schedule).

    ``forward(h_i, h_prev, ...)`` is called once per cell application; ``h_i``/``h_prev`` are
    ``(tensor, Selection | None)`` pairs (None: a fixed-width tensor such as the stem).
    """

    def __init__(self, space: NasNetSpace, reduction: bool, filters: int,
                 c_cur: int, c_prev: int | None, prev_is_larger: bool):
        super().__init__()
        self.space, self.filters = space, filters
        self.num_states = NUM_INPUTS + space.num_blocks
        self.pre0 = SelectedReLUConvBN(c_cur, filters)
        # h_{i-1} adjusted as NasNetCell does; absent in the first cell (h_i's raw tensor).
        c_h1 = c_cur if c_prev is None else filters
        self.pre1 = (None if c_prev is None else
                     SelectedFactorizedReduction(c_prev, filters) if prev_is_larger else
                     SelectedReLUConvBN(c_prev, filters))
        input_channels = (filters, c_h1)
        self.ops = nn.ModuleDict()
        for block in range(space.num_blocks):
            for side in SLOTS:
                for cand in slot_candidates(space, block):
                    c_in = input_channels[cand.source] if cand.source < NUM_INPUTS else filters
                    stride = 2 if reduction and cand.source < NUM_INPUTS else 1
                    self.ops[op_key(block, side, cand)] = create_op(cand.op, c_in, filters,
                                                                    stride)
        # An unused cell input joins the output at the cell's resolution and width [TF].
        self.adapt = nn.ModuleDict()
        for index, c in enumerate(input_channels):
            if reduction or c != filters:
                self.adapt[state_id(index)] = FactorizedReduction(c, filters,
                                                                  2 if reduction else 1)

    def forward(self, h_i, h_prev, arch_cell=None, probs=None, gates=None):
        """Path mode with ``arch_cell`` (a tuple of Blocks; ``gates[block][slot]``, hard
        weights per candidate, optional),
        mixed mode with ``probs[block][slot]`` (a probability per candidate). Returns the cell
        output as ``(tensor, Selection)``."""
        states = [self.pre0(*h_i), h_i[0] if self.pre1 is None else self.adjust_prev(*h_prev)]
        if arch_cell is not None:
            for k, block in enumerate(arch_cell):
                total = 0
                for j, side in enumerate(SLOTS):
                    cand = Candidate(block.inputs[j], block.ops[j])
                    y = self.ops[op_key(k, side, cand)](states[cand.source])
                    if gates is not None:
                        h = gates[k][j]
                        chosen = candidate_index(self.space, cand.source, cand.op)
                        y = y * h[chosen] + (h.sum() - h[chosen])
                    total = total + y
                states.append(total)
            output = unused_states(arch_cell, self.num_states)
        else:
            for k in range(self.space.num_blocks):
                total = 0
                for j, side in enumerate(SLOTS):
                    for weight, cand in zip(probs[k][j], slot_candidates(self.space, k)):
                        total = total + weight * self.ops[op_key(k, side, cand)](
                            states[cand.source])
                states.append(total)
            output = tuple(range(NUM_INPUTS, self.num_states))
        outs = [self.adapt[state_id(s)](states[s]) if state_id(s) in self.adapt else states[s]
                for s in output]
        return torch.cat(outs, 1), Selection(output, self.filters)

    def adjust_prev(self, tensor, selection):
        if isinstance(self.pre1, SelectedReLUConvBN) and tensor.shape[1] == self.filters:
            return tensor  # the child's NasNetCell has no op here (nn.Identity)
        return self.pre1(tensor, selection)


def unused_states(arch_cell, num_states: int) -> tuple[int, ...]:
    """The states no block reads, in state order: the cell output of the NASNet rule."""
    used = {s for block in arch_cell for s in block.inputs}
    return tuple(s for s in range(num_states) if s not in used)


# ---------------------------------------------------------------------------- the network
class Supernet(nn.Module):
    """Every architecture of ``space`` stacked by the NASNet macro ``config``, sharing weights.

    ``forward(x, arch=NasNetArch)`` runs one path; ``forward(x, arch=..., gates=...)`` a gated
    path (GDAS); ``forward(x, mix=probabilities)`` the mixture (DARTS), with ``probabilities``
    from ``ArchitectureParameters.probabilities()``.
    """

    def __init__(self, space: NasNetSpace, config: NetworkConfig):
        super().__init__()
        check_shareable(space, config)
        self.space, self.config = space, config
        self.stem, c_stem, _ = build_stem(config)
        self.schedule = schedule(config)
        num_states = NUM_INPUTS + space.num_blocks
        # The widest output of each earlier slot (index 0 = the stem: a fixed width).
        widest, levels = [c_stem], [0]
        self.cells = nn.ModuleList()
        for slot in self.schedule.slots:
            prev_larger = slot.prev is not None and levels[slot.prev] < levels[slot.cur]
            self.cells.append(SupernetCell(
                space, slot.kind == "reduction", slot.filters, widest[slot.cur],
                None if slot.prev is None else widest[slot.prev], prev_larger))
            widest.append(num_states * slot.filters)
            levels.append(levels[slot.cur] + (slot.stride == 2))
        self.classifier = nn.Linear(widest[-1], config.num_classes)

    def forward(self, x, arch: NasNetArch | None = None, mix=None, gates=None):
        if (arch is None) == (mix is None):
            raise ValueError("give exactly one of arch (path mode) and mix (mixed mode)")
        outputs = [(self.stem(x), None)]
        for slot, cell in zip(self.schedule.slots, self.cells):
            kind = CELL_KINDS.index(slot.kind)
            outputs.append(cell(
                outputs[slot.cur], None if slot.prev is None else outputs[slot.prev],
                arch_cell=None if arch is None else arch.cells()[kind],
                probs=None if mix is None else mix[kind],
                gates=None if gates is None else gates[kind]))
        features, selection = outputs[-1]
        pooled = torch.flatten(F.relu(features).mean((2, 3)), 1)
        return F.linear(pooled, take_columns(self.classifier.weight, selection),
                        self.classifier.bias)

    def child(self, arch: NasNetArch, inherit: bool = True) -> Network:
        """The stand-alone network of ``arch`` (the compiler's ``Network`` under this macro,
        without aux head or drop-path), with this supernet's weights for its choices when
        ``inherit``."""
        config = replace(self.config, aux_head=False, drop_path_keep_prob=1.0)
        network = Network(self.space.to_graph(arch), config)
        if inherit:
            inherit_weights(self, network, arch)
        return network


def inherit_weights(supernet: Supernet, network: Network, arch: NasNetArch) -> None:
    """Copy the weights and BN statistics of ``arch``'s path into its stand-alone network
    (built by ``Network`` from ``space.to_graph(arch)`` under the supernet's macro)."""
    with torch.no_grad():
        network.stem.load_state_dict(supernet.stem.state_dict())
        selections: list[Selection | None] = [None]  # per schedule output; the stem: all
        for slot, cell, target in zip(supernet.schedule.slots, supernet.cells, network.cells):
            arch_cell = arch.cells()[CELL_KINDS.index(slot.kind)]
            copy_selected(cell.pre0, target.pre0, selections[slot.cur])
            if isinstance(cell.pre1, SelectedFactorizedReduction):
                copy_selected(cell.pre1, target.pre1[1], selections[slot.prev])
            elif cell.pre1 is not None and not isinstance(target.pre1, nn.Identity):
                copy_selected(cell.pre1, target.pre1, selections[slot.prev])
            for k, block in enumerate(arch_cell):
                for j, side in enumerate(SLOTS):
                    source = cell.ops[op_key(k, side, Candidate(block.inputs[j], block.ops[j]))]
                    target.body.ops[module_key(f"b{k}_{side}")].load_state_dict(
                        source.state_dict())
            output = unused_states(arch_cell, cell.num_states)
            for s in output:
                if state_id(s) in cell.adapt:
                    target.body.adapt[module_key(state_id(s))].load_state_dict(
                        cell.adapt[state_id(s)].state_dict())
            selections.append(Selection(output, slot.filters))
        network.classifier.weight.copy_(take_columns(supernet.classifier.weight,
                                                     selections[-1]))
        network.classifier.bias.copy_(supernet.classifier.bias)


def arch_from_choices(space: NasNetSpace, choices) -> NasNetArch:
    """The architecture whose slot ``choices[cell kind][block][slot]`` are these Candidates."""
    tokens = []
    for cell in choices:
        for a, b in cell:
            tokens += [a.source, b.source, space.ops.index(a.op), space.ops.index(b.op),
                       space.combines.index("add")]
    return space.decode(tokens)


def path_one_hot(space: NasNetSpace, arch: NasNetArch) -> list:
    """``arch`` as a ``mix`` of one-hot probabilities per slot."""
    return NasNetLayout(space).one_hot(arch)


class NasNetLayout(ChoiceLayout):
    """NASNet's choice slots (``choices.ChoiceLayout``): for the normal then the reduction
    cell, block by block, input slot a then b, each a choice among ``slot_candidates``
    (labelled ``h<source>:<op>``); ``route`` nests them ``[cell kind][block][slot]``."""

    def __init__(self, space: NasNetSpace):
        self.space = space
        self.slots = tuple(
            Slot(kind, f"b{k}{side}", tuple(f"h{c.source}:{c.op}"
                                            for c in slot_candidates(space, k)))
            for kind in CELL_KINDS for k in range(space.num_blocks) for side in SLOTS)

    def route(self, values):
        it = iter(values)
        return [[[next(it) for _ in SLOTS] for _ in range(self.space.num_blocks)]
                for _ in CELL_KINDS]

    def arch(self, indices):
        nested = self.route(indices)
        return arch_from_choices(self.space, [
            [[slot_candidates(self.space, k)[int(i)] for i in block]
             for k, block in enumerate(cell)] for cell in nested])

    def ops(self, arch):
        return [op for cell in arch.cells() for block in cell for op in block.ops]

    def indices(self, arch):
        return [candidate_index(self.space, block.inputs[j], block.ops[j])
                for cell in arch.cells() for block in cell for j in range(len(SLOTS))]


def nasnet_macro(space, setting: str | None, overrides: dict, data) -> NetworkConfig:
    """The supernet's NASNet macro: the zoo ``setting`` (default cifar) with ``overrides``
    (the recipe's N, filters, ...), sized for ``data``."""
    setting = setting or "cifar"
    if setting not in SETTINGS:
        raise SupernetError(f"setting {setting!r} is not a cell-network setting "
                            f"({', '.join(SETTINGS)})")
    return replace(SETTINGS[setting], **overrides, num_classes=data.num_classes,
                   input_size=data.image_size[0], in_channels=data.channels)


NASNET_FAMILY = register_family(SupernetFamily(
    "nasnet", NasNetSpace, NasNetLayout, lambda space, macro: Supernet(space, macro),
    nasnet_macro, check_shareable, space_defaults=(("combines", ("add",)),)))
