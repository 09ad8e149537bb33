"""What a one-shot method sees of a supernet: its choice slots, whatever the space.

A supernet family (a search space type and the supernet compiled from it) describes its
choices as a flat list of **slots**, each a choice among named **candidates** (NASNet: an
input slot of a block, a (source state, op) pair; NAS-Bench-201: an edge, an op). A
:class:`ChoiceLayout` converts between that flat list and the family's own forms:

* ``route(values)``: one value per slot (a probability vector, a hard-gate vector) nested as
  the family's ``Supernet.forward(mix=...)`` / ``gates=`` argument takes it;
* ``arch(indices)``: the architecture choosing candidate ``indices[s]`` in slot ``s``;
* ``indices(arch)``: the reverse.

The methods (enas, darts, gdas, spos, rsps) use only this and ``forward(x, arch=..., mix=...,
gates=...)``, so a family plugs in by registering itself (``register_family``) with its space
type, its layout, its supernet builder and its macro rule; no method names a space.
:class:`ArchitectureParameters` (one logit vector per slot) is built on the layout.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from nasforge.errors import NasforgeError
from nasforge.registry import OPS
from nasforge.rules import add_unique

# ops that pass their input through unchanged: what DARTS' derived cells collapse to
SKIP_OPS = ("skip_connect", "identity")


class SupernetError(NasforgeError, ValueError):
    """A search space or macro the supernet cannot share weights over."""


@dataclass(frozen=True)
class Slot:
    """One decision of the supernet: pick one of ``candidates``."""

    group: str  # what it belongs to (a cell kind): one heatmap per group
    label: str  # e.g. "b0a" (block 0, input slot a) or "1<-0" (the edge from node 0 to 1)
    candidates: tuple[str, ...]  # readable names, in index order


class ChoiceLayout(abc.ABC):
    """The flat slots of a family and its conversions (see the module docstring)."""

    slots: tuple[Slot, ...] = ()
    space = None  # the search space the layout describes

    @abc.abstractmethod
    def route(self, values: Sequence) -> Any:
        """One value per slot, nested as the supernet's ``mix``/``gates`` argument."""

    @abc.abstractmethod
    def arch(self, indices: Sequence[int]):
        """The architecture choosing candidate ``indices[s]`` in slot ``s``."""

    @abc.abstractmethod
    def indices(self, arch) -> list[int]:
        """The candidate index of every slot in ``arch``."""

    @abc.abstractmethod
    def ops(self, arch) -> list[str]:
        """The op chosen in every slot of ``arch`` (for collapse statistics)."""

    def derive(self, probabilities: Sequence[torch.Tensor]):
        """The architecture a trained distribution derives (``probabilities``: one vector per
        slot); default: the most likely candidate of every slot."""
        return self.arch([int(p.argmax()) for p in probabilities])

    def drawing(self, arch):
        """The DSL graph TensorBoard draws of a derived ``arch`` (default: the space's graph)."""
        return self.space.to_graph(arch)

    def groups(self) -> dict[str, list[int]]:
        """Slot indices per group, in slot order."""
        out: dict[str, list[int]] = {}
        for s, slot in enumerate(self.slots):
            out.setdefault(slot.group, []).append(s)
        return out

    def one_hot(self, arch) -> Any:
        """``arch`` as a ``mix`` of one-hot probabilities per slot."""
        values = []
        for slot, index in zip(self.slots, self.indices(arch)):
            p = torch.zeros(len(slot.candidates))
            p[index] = 1.0
            values.append(p)
        return self.route(values)


def collapse_shares(ops: Sequence[str]) -> dict[str, float]:
    """How far a derived cell has collapsed: the share of its ``ops`` that are skips
    (``SKIP_OPS``) and that have no parameters (the op registry's ``parameter_free``: skips,
    pools, ``none``)."""
    n = max(len(ops), 1)
    return {"skip_share": sum(op in SKIP_OPS for op in ops) / n,
            "parameter_free_share": sum(op in OPS and OPS[op].parameter_free for op in ops) / n}


@dataclass(frozen=True)
class SupernetFamily:
    """How one space type becomes a supernet."""

    name: str
    space_type: type
    layout: Callable[[Any], ChoiceLayout]  # layout(space)
    build: Callable[[Any, Any], nn.Module]  # build(space, macro) -> supernet
    # macro(space, setting, overrides, data) -> the family's macro config (sized for data)
    macro: Callable[..., Any]
    check: Callable[[Any, Any], None] = lambda space, macro: None  # SupernetError when not
    setting: str = "cifar"  # the zoo setting of the stand-alone children
    # True: a child's static metrics (params, ...) are of the supernet's size (the recipe's
    # overrides); False: of the space's own full-size network (NAS-Bench-201's, the table's)
    children_sized_by_recipe: bool = True
    # space options a one-shot search sets unless told otherwise (NASNet: the add combine)
    space_defaults: tuple[tuple[str, Any], ...] = ()
    # its supernet's mixed forward takes aux_skip=beta (DARTS-' auxiliary skip per edge)
    aux_skip: bool = False
    # any candidate per slot is an architecture (GDAS samples one per slot); the darts
    # space's edge slots are not (a node keeps two edges)
    slot_samples_are_paths: bool = True


FAMILIES: dict[type, SupernetFamily] = {}


def register_family(family: SupernetFamily) -> SupernetFamily:
    """Make spaces of ``family.space_type`` (and subclasses) searchable by one-shot methods."""
    return add_unique(FAMILIES, family.space_type, family, "supernet family")


def family_of(space) -> SupernetFamily:
    """The family of ``space`` (the most specific registered type); SupernetError if none."""
    for cls in type(space).__mro__:
        if cls in FAMILIES:
            return FAMILIES[cls]
    raise SupernetError(f"no supernet for the search space {type(space).__name__} (supernets "
                        f"exist for: {', '.join(f.name for f in FAMILIES.values())})")


def family_space_defaults(factory) -> dict:
    """The ``space_defaults`` of the family of the spaces ``factory`` (a space class, from the
    space registry) builds; none when it is no class or has no family."""
    for cls in getattr(factory, "__mro__", ()):
        if cls in FAMILIES:
            return dict(FAMILIES[cls].space_defaults)
    return {}


def check_space_covered(name: str, factories: dict) -> None:
    """SupernetError, naming the spaces one-shot methods cover, when the space ``name`` of the
    space registry ``factories`` has no registered family; checked before the space is built with the method's options."""
    covered = [n for n, factory in factories.items()
               if any(cls in FAMILIES for cls in getattr(factory, "__mro__", ()))]
    if name not in covered:
        raise SupernetError(f"one-shot search covers the spaces {', '.join(covered)}; there is "
                            f"no supernet for {name!r} yet (search it with a black-box "
                            f"searcher)")


def choice_layout(space) -> ChoiceLayout:
    """The choice slots of ``space``'s supernet."""
    return family_of(space).layout(space)


class ArchitectureParameters(nn.Module):
    """DARTS' architecture weights: one logit per candidate of every slot of ``space``'s
    layout (NASNet: normal then reduction cell, block by block, slot a then b)."""

    def __init__(self, space, generator: torch.Generator | None = None,
                 init_scale: float = 1e-3):  # DARTS initializes alphas as 1e-3 * randn
        super().__init__()
        self.space = space
        self.layout = choice_layout(space)
        self.logits = nn.ParameterList(
            nn.Parameter(init_scale * torch.randn(len(slot.candidates), generator=generator))
            for slot in self.layout.slots)

    def slot_logits(self):
        """The logits nested as the family's ``mix`` (NASNet: ``[cell kind][block][slot]``)."""
        return self.layout.route(list(self.logits))

    def flat_probabilities(self, temperature: float = 1.0) -> list[torch.Tensor]:
        """Softmax per slot, in slot order."""
        return [torch.softmax(t / temperature, 0) for t in self.logits]

    def probabilities(self, temperature: float = 1.0):
        """Softmax per slot: the ``mix`` argument of the supernet's forward."""
        return self.layout.route(self.flat_probabilities(temperature))

    def derive(self):
        """The layout's derived architecture (``ChoiceLayout.derive``: by default the argmax
        candidate of every slot): a valid architecture of the space."""
        return self.layout.derive(self.flat_probabilities())

    def sample_hard(self, temperature: float, generator: torch.Generator):
        """GDAS' sample: per slot, the argmax of Gumbel-perturbed logits, returned as the
        architecture and the ``gates`` of the supernet's forward (straight-through hard
        weights).

        The Gumbel noise is drawn from ``generator`` (torch's ``gumbel_softmax`` draws from the
        global RNG), so every data-parallel rank with the same seed samples the same path."""
        hard, chosen = [], []
        for t in self.logits:
            uniform = torch.rand(t.shape, generator=generator).clamp(1e-10, 1 - 1e-7)
            soft = torch.softmax((t - (-uniform.log()).log().to(t.device)) / temperature, 0)
            index = int(soft.argmax())
            one_hot = torch.zeros_like(soft).index_fill_(
                0, torch.tensor(index, device=soft.device), 1.0)
            hard.append(one_hot - soft.detach() + soft)
            chosen.append(index)
        return self.layout.arch(chosen), self.layout.route(hard)

    def entropy(self) -> float:
        """Mean entropy (nats) of the slots' distributions: how undecided the search is."""
        values = [-(p * p.clamp_min(1e-12).log()).sum() for p in self.flat_probabilities()]
        return float(torch.stack(values).mean().detach())
