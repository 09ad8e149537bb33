"""Load weights of reference implementations into nasforge models.

Supported sources (state dicts; neither package is needed to load a saved checkpoint):
timm ``nasnetalarge`` and ``pnasnet5large``, and ``nasnetamobile`` of the ``pretrainedmodels``
package (whose layout timm's NASNet code came from). Cells are matched by name (nasforge names
its cell slots like those implementations, but pretrainedmodels numbers the mobile cells
with gaps, so cells are matched in forward order, which is their registration order), and inside
a cell block k's two ops by ``comb_iter_k_left``/``_right``; the tensors of each matched
module pair are copied in registration order after checking every shape.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from nasforge.compiler.network import Network
from nasforge.dsl import CellPair, module_key
from nasforge.errors import NasforgeError

STEM_NAMES = ("conv0", "conv_0")
CLASSIFIER_NAME = "last_linear"


class WeightImportError(NasforgeError, ValueError):
    """Reference weights whose tensors do not line up with the model's."""


def timm_compatible(pair: CellPair) -> CellPair:
    """The pair with timm's strided average-pool padding rule (see ``AvgPool2dSame``).

    timm's ``nasnetalarge`` counts SAME padding in strided average pools where TF does not;
    build with this pair to reproduce timm's logits exactly.
    """
    pair = CellPair.from_dict(pair.to_dict())
    for cell in (pair.normal, pair.reduction):
        for n, d in cell.graph.nodes(data=True):
            if d["kind"] == "op" and d["op"] == "avg_pool_3x3":
                d["args"] = {**d.get("args", {}), "count_pad_when_strided": True}
    return pair


def _entries(state: dict, prefixes: list[str]) -> list[tuple[str, torch.Tensor]]:
    out = []
    for p in prefixes:
        out += [(k, v) for k, v in state.items() if k.startswith(p + ".")]
    return out


def _module_pairs(model: Network, state: dict) -> list[tuple[str, list[str]]]:
    """(nasforge prefix, [reference prefixes]) for every module holding weights."""
    stem = next((s for s in STEM_NAMES if f"{s}.conv.weight" in state), None)
    if stem is None:
        raise WeightImportError("no stem conv (conv0/conv_0) in the state dict")
    pairs = [("stem.0", [f"{stem}.conv"]), ("stem.1", [f"{stem}.bn"])]
    ref_cells = list(OrderedDict.fromkeys(k.split(".")[0] for k in state
                                          if "cell" in k.split(".")[0]))
    if len(ref_cells) != len(model.schedule.slots):
        raise WeightImportError(f"the state dict has {len(ref_cells)} cells, the model "
                                f"{len(model.schedule.slots)} (architecture mismatch?)")
    modules = _prefixes(state)
    for i, ref in enumerate(ref_cells):
        ours = f"cells.{i}"
        pairs.append((f"{ours}.pre0", [f"{ref}.conv_1x1"]))
        if model.cells[i].pre1 is not None:
            pre1 = [f"{ref}.conv_prev_1x1"] if f"{ref}.conv_prev_1x1" in modules else \
                [f"{ref}.path_1", f"{ref}.path_2", f"{ref}.final_path_bn"]
            pairs.append((f"{ours}.pre1", pre1))
        for node, _ in model.cells[i].body.op_modules():
            block, side = node.split("_")  # b{k}_{a|b}, as cell_from_blocks names them
            pairs.append((f"{ours}.body.ops.{module_key(node)}",
                          [f"{ref}.comb_iter_{block[1:]}_{'left' if side == 'a' else 'right'}"]))
    pairs.append(("classifier", [CLASSIFIER_NAME]))
    return pairs


def _prefixes(state: dict) -> set[str]:
    out = set()
    for k in state:
        parts = k.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def copy_matched(model, state: dict, pairs: list[tuple[str, list[str]]]):
    """Copy ``state`` into ``model``: each (our prefix, [their prefixes]) pair's tensors in
    registration order, every shape checked, every tensor on both sides used exactly once."""
    ours = model.state_dict()
    new_state, used = OrderedDict(), set()
    for mine, theirs in pairs:
        dst, src = _entries(ours, [mine]), _entries(state, theirs)
        if len(dst) != len(src):
            raise WeightImportError(f"{mine} has {len(dst)} tensors but {'+'.join(theirs)} "
                                    f"has {len(src)}")
        for (dk, dv), (sk, sv) in zip(dst, src):
            if dv.shape != sv.shape:
                raise WeightImportError(f"shape mismatch: {dk} {tuple(dv.shape)} vs "
                                        f"{sk} {tuple(sv.shape)}")
            new_state[dk] = sv.detach().clone()
            used.add(sk)
    missing = [k for k in ours if k not in new_state]
    unused = [k for k in state if k not in used]
    if missing or unused:
        raise WeightImportError(f"unmatched tensors: ours {missing[:3]}, theirs {unused[:3]}")
    model.load_state_dict(new_state)
    return model


def load_reference_state(model: Network, state: dict) -> Network:
    """Copy a timm/pretrainedmodels NASNet-A or PNASNet-5 state dict into ``model``.

    Raises WeightImportError naming the first module whose tensors do not line up.
    """
    return copy_matched(model, state, _module_pairs(model, state))


def load_chain_state(model, state: dict, theirs) -> "torch.nn.Module":
    """Copy ``state`` into a ChainNetwork: every op holding weights is paired with the
    reference modules ``theirs(cell_name, node_id, op)`` names (our module is
    ``ops.<module_key(node_id)>``), then ``copy_matched`` does the checked copy."""
    pairs = []
    named = [(f"blocks.{i}", b) for i, b in enumerate(model.blocks)]
    if getattr(model, "aux", None) is not None:
        named.append(("aux", model.aux))
    for ours, block in named:
        for node, op in block.op_modules():
            if any(True for _ in op.parameters()):
                pairs.append((f"{ours}.ops.{module_key(node)}",
                              theirs(block.cell_name, node, op)))
    return copy_matched(model, state, pairs)


def reference_module(modules: set[str], path: str) -> str:
    """The reference module named by ``path`` (a cell prefix plus an op's module key), where
    each ``_`` may stand for a ``.`` of the op's node id (module keys cannot hold dots, and
    reference names hold both: timm's ``branch1_0`` and ``branch1.0`` in one network).
    ``modules`` is ``module_prefixes(state)``; exactly one reading must name a module."""
    parts = path.split("_")
    readings = [parts[0]]
    for part in parts[1:]:
        readings = [r + sep + part for r in readings for sep in "_."]
    found = [r for r in readings if r in modules]
    if len(found) != 1:
        raise WeightImportError(f"{path}: {'no' if not found else 'more than one'} reference "
                                f"module matches ({', '.join(found) or 'none'})")
    return found[0]


def module_prefixes(state: dict) -> set[str]:
    """Every module path of a state dict (``a``, ``a.b`` for a key ``a.b.weight``)."""
    return _prefixes(state)


def cell_prefix(cell_name: str) -> str:
    """Reference module prefix of a residual-style cell: its name, or none for stem/head."""
    return "" if cell_name in ("stem", "head") else cell_name + "."


def load_resnet_state(model, state: dict):
    """Copy a torchvision ResNet/ResNeXt/wide ResNet (or timm SE-ResNet) state dict into the
    zoo's DSL version.

    Our op ``convN`` holds the reference's ``convN`` + ``bnN``; other op ids are the
    reference's names (``downsample``, ``se``, ``fc``); residual cells are named ``layerS.J``
    like the reference's blocks.
    """
    def theirs(cell, node, op):
        prefix = cell_prefix(cell)
        return [prefix + node, f"{prefix}bn{node[4:]}"] if node.startswith("conv") else [
            prefix + node]

    return load_chain_state(model, state, theirs)
