"""The command line: info, zoo, and one-line errors with exit code 2 for bad input."""
import json

import pytest

from nasforge.cli import main
from nasforge.zoo import ZOO

GOOD = {"format": "nasforge.cellpair/1", "name": "tiny"}
H = [{"id": "h0", "kind": "input", "index": 0}, {"id": "h1", "kind": "input", "index": 1}]


def _cell(nodes, reduction=False):
    return {"format": "nasforge.cell/1", "name": "c", "reduction": reduction, "nodes": nodes}


OK_NODES = H + [{"id": "a", "kind": "op", "op": "sep_conv_3x3", "stride": 1, "inputs": ["h0"]},
                {"id": "b", "kind": "op", "op": "identity", "stride": 1, "inputs": ["h1"]},
                {"id": "s", "kind": "combine", "combine": "add", "inputs": ["a", "b"]},
                {"id": "out", "kind": "output", "policy": "unused", "inputs": ["s"]}]
RED_NODES = [dict(n, stride=2) if n["kind"] == "op" else n for n in OK_NODES]


def _pair_with_normal(nodes):
    return json.dumps(dict(GOOD, normal=_cell(nodes), reduction=_cell(RED_NODES, True)))


def test_info_json_of_a_cell_pair_file(tmp_path, capsys):
    path = tmp_path / "pair.json"
    path.write_text(_pair_with_normal(OK_NODES))
    assert main(["info", str(path), "--N", "1", "--filters", "8", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"params", "mult_adds", "input_size"} <= set(info)
    assert info["input_size"] == 32 and info["output_shape"] == [1, 10] and info["params"] > 0


def test_info_of_a_zoo_model_and_space(capsys):
    assert main(["info", "nasnet_a", "--setting", "mobile"]) == 0
    out = capsys.readouterr().out
    assert "5,289,978" in out and "4@1056" in out and "224x224" in out
    assert main(["info", "--space", "nasnet", "--json"]) == 0
    space = json.loads(capsys.readouterr().out)
    assert space["decisions"] == 50 and space["size"] > 10 ** 36


BAD = {
    "malformed JSON": ("{not json", "malformed JSON"),
    "unknown op": (_pair_with_normal([dict(n, op="conv_9x9") if n["id"] == "a" else n
                                      for n in OK_NODES]), "unknown op 'conv_9x9'"),
    "cycle": (_pair_with_normal(H + [
        {"id": "a", "kind": "op", "op": "conv_1x1", "inputs": ["b"]},
        {"id": "b", "kind": "op", "op": "conv_1x1", "inputs": ["a"]},
        {"id": "out", "kind": "output", "inputs": ["a"]}]), "cycle"),
    "input index out of range": (_pair_with_normal(
        [dict(n, index=5) if n["id"] == "h1" else n for n in OK_NODES]),
        "input index 5 out of range"),
    "missing output": (_pair_with_normal(OK_NODES[:-1]), "missing output"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, cli, capsys):
    text, words = BAD[case]
    path = tmp_path / "bad.json"
    path.write_text(text)
    if case == "cycle":  # one case as a real command: nothing else reaches its stderr either
        result = cli("info", path)
        code, out, err = result.returncode, result.stdout, result.stderr
    else:  # in-process: a subprocess's time is mostly the interpreter's start and torch's import
        code = main(["info", str(path)])
        out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize("args,words", [
    (["info", "no_such_model"], "unknown model 'no_such_model'"),
    (["info", "/nonexistent/pair.json"], "cannot read"),
    (["info", "nasnet_a", "--setting", "huge"], "invalid choice"),
    (["info", "--space", "nope"], "unknown search space"),
    (["info", "nasnet_a", "--penultimate", "1000"], "not a multiple of 24"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors(args, words, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_zoo_table_lists_every_registered_model(capsys):
    assert main(["zoo", "--setting", "cifar"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == ("| name | family | setting | N@P | params | mult-adds | "
                                   "reference | checked |")
    for name, entry in ZOO.items():
        assert (f"| {name} |" in out) == ("cifar" in entry.settings)
    assert "| nasnet_a | NASNet | cifar (32px) | 6@768 | 3.35M |" in out
    assert "| densenet_bc_100_12 | DenseNet | cifar (32px) | - | 0.77M | 288M | paper: " in out
