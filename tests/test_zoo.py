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
    out = model(torch.randn(2, config.in_channels, size, size))
    outputs = out if isinstance(out, tuple) else (out,)  # (logits, aux_logits) with aux heads
    assert all(o.shape == (2, config.num_classes) for o in outputs)
    sum(o.square().mean() for o in outputs).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    if not isinstance(arch, CellPair):
        with torch.device("meta"):  # counting needs no weights
            same = compile_architecture(*resolve(str(path), setting))
        assert count_params(same) == count_params(model)


def readme_zoo_rows() -> list[list[str]]:
    """The cells of the generated zoo table in docs/zoo.md, one list per row (header excluded)."""
    from pathlib import Path

    from nasforge.cli.zoo import README_BEGIN, README_END

    text = (Path(__file__).resolve().parents[1] / "docs" / "zoo.md").read_text()
    block = text[text.index(README_BEGIN) + len(README_BEGIN):text.index(README_END)]
    lines = [line for line in block.strip().splitlines()[2:]]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_readme_zoo_table_lists_every_entry_with_its_reference():
    expected = {(name, setting, entry.reference or "") for name, entry in ZOO.items()
                for setting in entry.settings}
    listed = {(row[0], row[2].split(" (")[0], row[6]) for row in readme_zoo_rows()}
    assert listed == expected


@pytest.mark.slow
def test_readme_zoo_table_is_the_output_of_nasforge_zoo():
    from nasforge.cli.zoo import format_table, zoo_rows

    lines = format_table(zoo_rows()).splitlines()[2:]
    assert [[c.strip() for c in line.strip("|").split("|")] for line in lines] == readme_zoo_rows()
