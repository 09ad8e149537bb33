"""Registries: the stable public vocabulary of ops, combines and activations.

Every architecture in nasforge names its operations by these strings (and an op's ``act``
argument names an activation), so a name, once published, keeps its meaning. Later work adds
entries (``register_op``/``register_combine``/``register_activation``) instead of editing
if-chains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from nasforge.rules import add_unique

OpFactory = Callable[..., nn.Module]
# ``factory(inplace=...)``: the layer, or None for a name that means "no activation"
ActivationFactory = Callable[..., "nn.Module | None"]


@dataclass(frozen=True)
class OpSpec:
    """A registered op: ``factory(c_in, c_out, stride, **args) -> nn.Module``."""

    name: str
    factory: OpFactory
    family: str = "nasnet"  # which paper/code base defines it
    doc: str = ""
    parameter_free: bool = False  # True when the op has no weights at c_in == c_out, stride 1
    # True when permuting the input channels changes the result beyond a permutation of the
    # op's own weights (channel shuffle/split): then the order of concatenations matters.
    channel_order_sensitive: bool = False
    # True when the output is zero whatever the input (NAS-Bench-201's ``none``): the canonical
    # hash drops such ops and what only they feed (nasforge.dsl.zero_paths).
    zero_output: bool = False


@dataclass(frozen=True)
class CombineSpec:
    """How a combine node merges its inputs.

    ``channels`` maps the input channel counts to the output channel count (and raises
    ValueError when they cannot be merged); ``apply`` does the merge on tensors;
    ``commutative``: input order never matters (add); ``permutes_channels``: input order only
    permutes output channels (concat), which the canonical hash ignores unless the cell has a
    channel-order-sensitive op.
    """

    name: str
    apply: Callable
    channels: Callable[[list[int]], int]
    commutative: bool
    min_inputs: int = 2
    max_inputs: int | None = None
    doc: str = ""
    permutes_channels: bool = False


OPS: dict[str, OpSpec] = {}
COMBINES: dict[str, CombineSpec] = {}
ACTIVATIONS: dict[str, ActivationFactory] = {}  # filled by nasforge.ops.activations


def register_op(name: str, *, family: str = "nasnet", parameter_free: bool = False,
                channel_order_sensitive: bool = False, zero_output: bool = False):
    """Decorator: register ``factory(c_in, c_out, stride, **args)`` under ``name``."""

    def wrap(factory: OpFactory) -> OpFactory:
        add_unique(OPS, name, OpSpec(name, factory, family, (factory.__doc__ or "").strip(),
                                     parameter_free, channel_order_sensitive, zero_output),
                   "op")
        return factory

    return wrap


def register_combine(spec: CombineSpec) -> CombineSpec:
    """Add ``spec`` to the combines; ValueError if its name is taken."""
    return add_unique(COMBINES, spec.name, spec, "combine")


def create_op(name: str, c_in: int, c_out: int, stride: int = 1, **args) -> nn.Module:
    """Build the module of a registered op (called by the compiler once per op node)."""
    try:
        spec = OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}") from None
    return spec.factory(c_in, c_out, stride, **args)


def register_activation(name: str):
    """Decorator: register ``factory(inplace=...) -> nn.Module | None`` under ``name``."""

    def wrap(factory: ActivationFactory) -> ActivationFactory:
        return add_unique(ACTIVATIONS, name, factory, "activation")

    return wrap


def create_activation(name: str, *, inplace: bool) -> nn.Module | None:
    """The layer of activation ``name`` (an op's ``act`` argument; None for ``"none"``), built
    by an op factory. ``inplace=True`` only inside an op, on a tensor the op itself made: a
    graph state may have other consumers."""
    try:
        factory = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(ACTIVATIONS)})") \
            from None
    return factory(inplace=inplace)
