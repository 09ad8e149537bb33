"""nasforge.export and `nasforge export`: every format, checked against the nasforge model.

The standalone PyTorch file runs in a fresh interpreter where nasforge cannot be imported;
ONNX runs in onnxruntime; TorchScript is loaded back with torch.jit.load.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import nasforge
from nasforge.api import load_file, resolve
from nasforge.cli import main
from nasforge.dsl import Cell, CellPair
from nasforge.export import (EXPORTERS, ExportError, ExportSource, export, export_source,
                             register_exporter)
from nasforge.export.pysource import LeafTracer
from nasforge.ops.layers import _same_total, same_padding
from nasforge.search_spaces import get_space

from conftest import requires_dot

pytestmark = pytest.mark.usefixtures("one_thread")


def _sample(seed: int) -> CellPair:
    space = get_space("nasnet")
    return space.to_graph(space.sample(np.random.default_rng(seed)), name=f"sample_{seed}")


# name -> (architecture (or a callable making it), setting, overrides): small and fast networks
ARCHS = {
    "sample0-cifar": (lambda: _sample(0), "cifar", dict(N=1, filters=8)),
    "sample1-mobile": (lambda: _sample(1), "mobile", dict(N=1, filters=8, input_size=63,
                                                         num_classes=10)),
    "nasnet_a-cifar": ("nasnet_a", "cifar", dict(N=1, filters=8)),
    "pnasnet_5-mobile": ("pnasnet_5", "mobile", dict(N=1, filters=8, input_size=64,
                                                    num_classes=10)),
    "resnet18": ("resnet18", None, dict(input_size=64)),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", None, dict(input_size=64)),
}


def _tiny_pair() -> CellPair:
    """Two blocks per cell with strided ops in the reduction cell: fast to export to ONNX."""
    def cell(reduction):
        c = Cell("tiny_reduction" if reduction else "tiny_normal", reduction=reduction)
        h0, h1 = c.inputs()
        s = 2 if reduction else 1
        a = c.combine("add", c.op("sep_conv_3x3", h0, stride=s),
                      c.op("avg_pool_3x3", h1, stride=s))
        c.combine("add", c.op("max_pool_3x3", h0, stride=s), c.op("identity", a))
        c.set_output()
        return c

    return CellPair(cell(False), cell(True), name="tiny")


ARCHS["tiny-mobile"] = (_tiny_pair, "mobile", dict(N=1, filters=8, input_size=63,
                                                   num_classes=10))


def _arch(key):
    arch, setting, overrides = ARCHS[key]
    return (arch() if callable(arch) else arch), setting, dict(overrides)


# input sizes of the settings (README: 32 px for cifar, 224 px for the ImageNet settings)
SETTING_PX = {"cifar": 32, "mobile": 224, None: 224}


def _model_and_input(key, batch=2):
    """The compiled network built independently of the exporters (``nasforge.build_model``),
    random BN statistics, and an input at the setting's size."""
    arch, setting, overrides = _arch(key)
    torch.manual_seed(1)
    model = nasforge.build_model(arch, setting, **overrides).eval()
    _randomize_bn(model)
    px = overrides.get("input_size", SETTING_PX[setting])
    x = torch.randn((batch, 3, px, px), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
    return arch, setting, overrides, model, x, expected


def _randomize_bn(model):
    """Non-trivial running statistics, so a BN mix-up would show in the logits."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# ------------------------------------------------------------------ the padding rewrite

def test_traceable_same_padding_equals_the_reference_rule():
    for size in range(1, 70):
        for kernel in range(1, 8):
            for stride in range(1, 5):
                for dilation in (1, 2, 3):
                    effective = (kernel - 1) * dilation + 1
                    total = _same_total(size, effective, stride)
                    before, after = same_padding(size, kernel, stride, dilation)
                    assert total == before + after and total // 2 == before


@pytest.mark.parametrize("op", ["identity", "conv_1x3_3x1", "conv_1x7_7x1", "dil_conv_3x3",
                                "avg_pool_3x3", "max_pool_3x3", "max_pool_5x5",
                                "max_pool_7x7", "conv_1x1", "conv_3x3", "sep_conv_3x3",
                                "sep_conv_5x5", "sep_conv_7x7", "dil_sep_conv_3x3"])
def test_every_nasnet_op_traces_with_torch_fx_to_the_same_function(op):
    from nasforge.registry import create_op

    torch.manual_seed(0)
    for stride, c_in in ((1, 8), (2, 8), (2, 6)):
        module = create_op(op, c_in, 8, stride).eval()
        traced = torch.fx.GraphModule(module, LeafTracer().trace(module))
        for size in (7, 8, 9):
            x = torch.randn(2, c_in, size, size)
            with torch.no_grad():
                assert torch.equal(traced(x), module(x)), (op, stride, size)
    if op == "avg_pool_3x3":  # timm's strided rule takes the other branch
        module = create_op(op, 8, 8, 2, count_pad_when_strided=True).eval()
        traced = torch.fx.GraphModule(module, LeafTracer().trace(module))
        x = torch.randn(1, 8, 9, 9)
        assert torch.equal(traced(x), module(x))


# ------------------------------------------------------------------ the registry

def test_registry_lists_the_formats_and_rejects_unknown_ones(tmp_path):
    assert set(EXPORTERS) == {"json", "dot", "svg", "png", "py", "onnx", "torchscript"}
    assert all(e.suffix.startswith(".") and e.doc for e in EXPORTERS.values())
    with pytest.raises(ValueError, match=r"unknown export format 'pdf' \(known: json, .*onnx"):
        export("nasnet_a", "pdf", tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="already registered"):
        register_exporter("json", ".json")(lambda source, path: None)


def test_default_path_is_the_name_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = export("nasnet_a", "json")
    assert path == tmp_path.joinpath("nasnet_a.json").relative_to(tmp_path)
    assert (tmp_path / "nasnet_a.json").is_file()
    nested = export(_sample(0), "dot", tmp_path / "a" / "b" / "cells.dot")
    assert nested.read_text().startswith("digraph")


# ------------------------------------------------------------------ json and drawings

def test_json_round_trip_is_accepted_by_load_file_and_info(tmp_path, cli):
    pair = _sample(0)
    path = export(pair, "json", tmp_path / "pair.json")
    assert load_file(str(path)) == pair
    chain = export("resnet18", "json", tmp_path / "resnet18.json")
    assert load_file(str(chain)) == resolve("resnet18")[0]
    result = cli("info", path, "--N", "1", "--filters", "8", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output_shape"] == [1, 10]


def test_dot_export_is_the_cells_drawing(tmp_path):
    """The file, read back by pydot, draws exactly the cells' graphs: one node per DSL node
    and one edge per DSL edge of each cell."""
    import pydot

    pair = _sample(0)
    text = export(pair, "dot", tmp_path / "p.dot").read_text()
    assert "normal cell" in text and "reduction cell" in text
    (graph,) = pydot.graph_from_dot_data(text)
    nodes, edges, pending = set(), set(), [graph]
    while pending:
        g = pending.pop()
        nodes |= {n.get_name().strip('"') for n in g.get_nodes()} - {"node", "edge", "graph"}
        edges |= {(e.get_source().strip('"'), e.get_destination().strip('"'))
                  for e in g.get_edges()}
        pending += g.get_subgraphs()
    assert nodes == {f"{kind}/{n}" for kind, cell in (("normal", pair.normal),
                                                      ("reduction", pair.reduction))
                     for n in cell.graph.nodes}
    assert edges == {(f"{kind}/{a}", f"{kind}/{b}") for kind, cell in
                     (("normal", pair.normal), ("reduction", pair.reduction))
                     for a, b in cell.graph.edges}


@requires_dot
def test_svg_and_png_are_rendered_by_graphviz(tmp_path):
    svg = export("nasnet_a", "svg", tmp_path / "a.svg").read_bytes()
    assert b"<svg" in svg and b"normal cell" in svg
    png = export("nasnet_a", "png", tmp_path / "a.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_svg_and_png_without_graphviz_are_an_export_error(tmp_path, no_dot, fmt):
    with pytest.raises(ExportError, match="needs Graphviz's 'dot' program"):
        export("nasnet_a", fmt, tmp_path / f"a.{fmt}")
    assert not (tmp_path / f"a.{fmt}").exists()


# ------------------------------------------------------------------ standalone PyTorch

RUNNER = textwrap.dedent('''
    """Run an exported network where nasforge cannot be imported."""
    import importlib.abc
    import importlib.util
    import sys


    class NoNasforge(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "nasforge" or name.startswith("nasforge."):
                raise ImportError(f"{name} is blocked in this interpreter")
            return None


    sys.meta_path.insert(0, NoNasforge())
    try:
        import nasforge  # noqa: F401
    except ImportError:
        pass
    else:
        sys.exit("nasforge is importable")

    import torch

    torch.set_num_threads(1)
    source, data, out = sys.argv[1:]
    spec = importlib.util.spec_from_file_location("exported_net", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = torch.load(data)
    net = module.Net()
    net.load_state_dict(inputs["state_dict"], strict=True)
    net.eval()
    with torch.no_grad():
        logits = net(inputs["x"])
    torch.save({"logits": logits, "params": sum(p.numel() for p in net.parameters()),
                "keys": list(net.state_dict()),
                "modules": [name for name, _ in net.named_modules()],
                "nasforge_loaded": any(m.split(".")[0] == "nasforge" for m in sys.modules),
                "input_shape": module.INPUT_SHAPE}, out)
''')


def _run_isolated(script, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-I", str(script), *map(str, args)],
                          cwd=script.parent, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("key", sorted(ARCHS))
def test_py_export_runs_without_nasforge_and_matches(key, tmp_path):
    arch, setting, overrides, model, x, expected = _model_and_input(key)
    path = export(arch, "py", tmp_path / "net.py", setting=setting, **overrides)
    source = path.read_text()
    assert "nasforge" not in "\n".join(l for l in source.splitlines() if "import" in l)
    assert source.startswith("# architecture: ") and "class Net(torch.nn.Module):" in source
    if setting:
        assert f"# setting: {setting}" in source
    torch.save({"state_dict": model.state_dict(), "x": x}, tmp_path / "inputs.pt")
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    result = _run_isolated(runner, path, tmp_path / "inputs.pt", tmp_path / "out.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert not out["nasforge_loaded"]
    assert out["keys"] == list(model.state_dict())
    assert out["modules"] == [name for name, _ in model.named_modules()]
    assert out["params"] == sum(p.numel() for p in model.parameters())
    assert tuple(out["input_shape"]) == (1,) + tuple(x.shape[1:])
    assert out["logits"].shape == expected.shape
    assert (out["logits"] - expected).abs().max().item() < 1e-5


def test_py_export_header_says_what_it_is(tmp_path):
    text = export("nasnet_a", "py", tmp_path / "n.py", setting="cifar", N=1,
                  filters=8).read_text()
    header = text.split("import torch")[0]
    assert "# architecture: nasnet_a (cell pair 'nasnet_a', canonical hash " in header
    assert "# setting: cifar" in header and "N=1" in header and "filters=8" in header
    assert f"nasforge {nasforge.__version__}" in header
    assert "torch.nn.Conv2d(" in text and "def forward(self, x" in text
    compile(text, "n.py", "exec")


def test_py_export_of_a_model_with_its_aux_head_keeps_every_weight(tmp_path):
    torch.manual_seed(1)
    model = nasforge.build_model("nasnet_a", "cifar", N=1, filters=8, aux_head=True).eval()
    path = export("nasnet_a", "py", tmp_path / "aux.py", setting="cifar", N=1, filters=8,
                  aux_head=True)
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102
    net = namespace["Net"]()
    net.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (net.eval()(x) - model(x)).abs().max().item() < 1e-5


# ------------------------------------------------------------------ ONNX and TorchScript

@pytest.mark.parametrize("key", ["tiny-mobile", "resnet18",
                                 pytest.param("sample1-mobile", marks=pytest.mark.slow)])
def test_onnx_export_matches_in_onnxruntime(key, tmp_path):
    """torch.export-based ONNX export takes seconds per network: small networks here."""
    ort = pytest.importorskip("onnxruntime")
    arch, setting, overrides, model, x, expected = _model_and_input(key, batch=3)
    path = export(arch, "onnx", tmp_path / "net.onnx", setting=setting,
                  state_dict=model.state_dict(), **overrides)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert logits.shape == tuple(expected.shape)  # batch 3: the batch dimension is dynamic
    assert np.abs(logits - expected.numpy()).max() < 1e-4


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("key", ["sample0-cifar", "resnet18"])
def test_torchscript_export_loads_and_matches(key, tmp_path):
    arch, setting, overrides, model, x, expected = _model_and_input(key, batch=1)
    path = export(arch, "torchscript", tmp_path / "net.pt", setting=setting,
                  state_dict=model.state_dict(), **overrides)
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        assert (loaded(x) - expected).abs().max().item() < 1e-5


def test_weights_default_to_a_seeded_initialisation(tmp_path):
    source = export_source("nasnet_a", "cifar", N=1, filters=8)
    a, b = source.build(), source.build()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
    assert isinstance(source, ExportSource) and source.input_shape() == (1, 3, 32, 32)


# ------------------------------------------------------------------ the command line

def _write_run(run_dir, cut_short=True):
    """A search run folder: trials 0..4 (1 failed with the highest val_acc, 2 and 3 tied);
    with ``cut_short``, then a repeat of trial 0 (ignored) and a line a killed writer cut."""
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"space": "nasnet", "setting": "cifar"}))
    pairs = {i: _sample(10 + i) for i in range(5)}
    rows = [(0, "ok", 0.50), (1, "failed", 0.90), (2, "ok", 0.70), (3, "ok", 0.70),
            (4, "pruned", 0.80)]
    lines = [json.dumps({"trial": t, "status": s, "arch": pairs[t].to_dict(),
                         "hash": pairs[t].canonical_hash(), "metrics": {"val_acc": acc},
                         "params": 1000 + t, "mult_adds": 10 ** 6}) for t, s, acc in rows]
    if cut_short:
        lines += [lines[0].replace('"val_acc": 0.5', '"val_acc": 0.99'),
                  '{"trial": 9, "status": "ok", "ar']
    (run_dir / "trials.jsonl").write_text("\n".join(lines))
    return pairs


def test_cli_best_cell_picks_the_best_finished_trial(tmp_path, capsys, caplog):
    pairs = _write_run(tmp_path / "run")
    assert main(["export", "best_cell", "--run", str(tmp_path / "run"), "--format",
                 "json"]) == 0
    out, err = capsys.readouterr()
    path = tmp_path / "run" / "export" / "best_cell.json"
    assert out.splitlines() == [str(path)]
    assert "trial 2" in err and "val_acc 0.7000" in err and str(path) in err
    assert load_file(str(path)) == pairs[2]  # 1 failed, 4 pruned; 2 beats 3 on the tie
    warnings = [r.getMessage() for r in caplog.records]
    assert any("line 6 repeats trial 0" in w for w in warnings)
    assert any("line 7 is not complete JSON" in w for w in warnings)


def test_cli_trial_and_top(tmp_path, capsys):
    pairs = _write_run(tmp_path / "run")
    run = str(tmp_path / "run")
    assert main(["export", "best_cell", "--run", run, "--trial", "3", "-f", "json"]) == 0
    assert load_file(str(tmp_path / "run" / "export" / "trial_3.json")) == pairs[3]
    assert main(["export", "--run", run, "--top", "2", "-f", "dot",
                 "-o", str(tmp_path / "top")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [str(tmp_path / "top" / "best_cell_top1.dot"),
                        str(tmp_path / "top" / "best_cell_top2.dot")]
    assert (tmp_path / "top" / "best_cell_top1.dot").read_text() == pairs[2].to_dot()
    assert (tmp_path / "top" / "best_cell_top2.dot").read_text() == pairs[3].to_dot()
    assert main(["export", "best_cell", "--run", run, "--top", "5", "-f", "json"]) == 0
    assert sorted(p.name for p in (tmp_path / "run" / "export").glob("best_cell_top*")) == [
        "best_cell_top1.json", "best_cell_top2.json", "best_cell_top3.json"]
    assert "only 3 finished trial(s)" in capsys.readouterr().err


def test_cli_exports_a_zoo_model_to_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "nasnet_a", "--format", "py", "--setting", "cifar",
                 "--input-size", "40"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "nasnet_a.py"
    text = (tmp_path / "nasnet_a.py").read_text()
    assert "INPUT_SHAPE = (1, 3, 40, 40)" in text and "setting: cifar" in text
    assert "wrote nasnet_a as py (setting cifar): nasnet_a.py" in err


def test_cli_output_format_from_the_suffix(tmp_path, capsys):
    pair_file = export(_sample(0), "json", tmp_path / "pair.json")
    assert main(["export", str(pair_file), "-o", str(tmp_path / "cells.dot")]) == 0
    assert (tmp_path / "cells.dot").read_text() == _sample(0).to_dot()


def _bad_runs(tmp_path):
    (tmp_path / "notrun").mkdir()
    (tmp_path / "notrun" / "config.json").write_text("{}")
    _write_run(tmp_path / "unfinished", cut_short=False)
    lines = (tmp_path / "unfinished" / "trials.jsonl").read_text().splitlines()
    (tmp_path / "unfinished" / "trials.jsonl").write_text("\n".join(
        l.replace('"status": "ok"', '"status": "failed"') for l in lines))
    _write_run(tmp_path / "run", cut_short=False)
    (tmp_path / "pair.json").write_text(_sample(0).to_json())


BAD_CLI = [
    (["nasnet_a", "--format", "pdf"], "unknown format 'pdf' (known: json, dot, svg"),
    (["nasnet_a"], "give --format"),
    (["best_cell", "--format", "json"], "best_cell needs --run"),
    (["best_cell", "--run", "{tmp}/nowhere", "-f", "json"], "no such folder"),
    (["best_cell", "--run", "{tmp}/notrun", "-f", "json"], "is not a run folder (needs config.json and trials.jsonl)"),
    (["best_cell", "--run", "{tmp}/unfinished", "-f", "json"], "has no finished trial"),
    (["best_cell", "--run", "{tmp}/run", "--trial", "42", "-f", "json"], "has no trial 42"),
    (["best_cell", "--run", "{tmp}/run", "--top", "0", "-f", "json"], "--top must be at least 1"),
    (["best_cell", "--run", "{tmp}/run", "--top", "2", "--trial", "1", "-f", "json"],
     "exclude each other"),
    (["nasnet_a", "--run", "{tmp}/run", "-f", "json"], "only apply to best_cell"),
    (["no_such_model", "-f", "json"], "unknown model 'no_such_model'"),
    (["nasnet_a", "-f", "py", "--input-size", "0"], "--input-size must be at least 1"),
    (["{tmp}/pair.json", "-f", "json", "-o", "{tmp}/pair.json"], "would overwrite its input"),
    (["nasnet_a", "--setting", "huge", "-f", "json"], "invalid choice"),
]


@pytest.mark.parametrize("args,words", BAD_CLI, ids=[w for _, w in BAD_CLI])
def test_cli_bad_input_is_one_line_and_exit_2(args, words, tmp_path, capsys):
    _bad_runs(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["export", *args]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and out == ""


def test_cli_bad_input_exit_code_in_a_fresh_interpreter(cli):
    result = cli("export", "best_cell", "--format", "json")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == ("nasforge: error: best_cell needs --run RUN_DIR "
                                     "(a search run folder)")
