"""Every zoo model: builds, trains a step, renders, round-trips through JSON."""
import pytest
import torch

from nasforge.api import build_model, compile_architecture, resolve
from nasforge.dsl import CellPair, load_architecture
from nasforge.flops import count_params
from nasforge.zoo import ZOO


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model(name, tmp_path, one_thread):
    entry = ZOO[name]
    setting = entry.default_setting
    arch, config = resolve(name, setting)
    # JSON round trip keeps the canonical hash, and the file builds the same network
    path = tmp_path / f"{name}.json"
    path.write_text(arch.to_json())
    again = load_architecture(path.read_text())
    assert again.canonical_hash() == arch.canonical_hash() and again == arch
    dot = arch.to_dot()
    assert dot.startswith("digraph") and "->" in dot
    # forward and backward at a small input (a few cells/blocks keep it quick)
    small = dict(N=1, filters=8) if isinstance(arch, CellPair) else {}
    model = build_model(name, setting, **small)
    size = max(32 if config.input_size <= 32 else 64, getattr(config, "min_input_size", 0))
    model.train()
    out = model(torch.randn(2, 3, size, size))
    outputs = out if isinstance(out, tuple) else (out,)  # (logits, aux_logits) with aux heads
    assert all(o.shape == (2, config.num_classes) for o in outputs)
    sum(o.square().mean() for o in outputs).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    if not isinstance(arch, CellPair):
        with torch.device("meta"):  # counting needs no weights
            same = compile_architecture(*resolve(str(path), setting))
        assert count_params(same) == count_params(model)
