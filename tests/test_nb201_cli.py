"""NAS-Bench-201 cell strings wherever a model is accepted (``nasforge.api``, ``info``,
``export``, ``train``) with the ``nb201`` setting and its data set; figures checked against
NAS-Bench-201's published parameter counts and against multiply-adds counted by hand."""
from __future__ import annotations

import json

import pytest

from nasforge import build_model
from nasforge.api import ArchitectureError, model_info, reference_kind, resolve
from nasforge.cli import build_parser, main
from nasforge.flops import count_params
from nasforge.search_spaces.nas_bench_201 import NasBench201StringError
from nasforge.tables import load_sample, load_table

EMPTY = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
FULL = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
        "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
        "|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|")
MIXED = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
         "|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|")
# NAS-Bench-201's figures for its data sets: (input pixels, classes)
DATA = {"cifar10": (32, 10), "cifar100": (32, 100), "imagenet16": (16, 120)}


def _info(capsys, *args) -> dict:
    assert main(["info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("cell,params_M", [(EMPTY, 0.073306), (FULL, 1.531546)])
def test_info_gives_nas_bench_201s_smallest_and_largest_cifar10_networks(capsys, cell,
                                                                        params_M):
    """NAS-Bench-201's API: the smallest and the largest CIFAR-10 network."""
    info = _info(capsys, cell, "--setting", "nb201", "--dataset", "cifar10")
    assert round(info["params"] / 1e6, 6) == params_M
    assert (info["setting"], info["dataset"]) == ("nb201", "cifar10")
    assert info["input_size"] == 32 and info["output_shape"] == [1, 10]


@pytest.mark.parametrize("dataset", list(DATA))
def test_info_of_a_sample_cell_of_each_data_set(capsys, dataset):
    """The parameters of the 200-epoch sample's first cell of each data set, as published."""
    row = next(iter(load_sample(dataset)))
    info = _info(capsys, row["cell"], "--dataset", dataset)  # nb201: the default setting
    assert round(info["params"] / 1e6, 6) == row["params_M"]
    size, classes = DATA[dataset]
    assert info["input_size"] == size and info["output_shape"] == [1, classes]


def test_mult_adds_of_the_empty_cell_counted_by_hand():
    """With every edge ``none`` only the stem, the two residual blocks and the classifier
    compute: (cin x cout x k^2 x output pixels) of each convolution, plus the linear layer."""
    def by_hand(size, classes):
        px = [size * size, (size // 2) ** 2, (size // 4) ** 2]
        return (3 * 16 * 9 * px[0]  # stem
                + 16 * 32 * 9 * px[1] + 32 * 32 * 9 * px[1] + 16 * 32 * px[1]  # block 1
                + 32 * 64 * 9 * px[2] + 64 * 64 * 9 * px[2] + 32 * 64 * px[2]  # block 2
                + 64 * classes)
    assert by_hand(32, 10) == 7_783_040
    for dataset, (size, classes) in DATA.items():
        assert model_info(EMPTY, dataset=dataset)["mult_adds"] == by_hand(size, classes)


def test_info_text_shows_the_tables_arch_index_and_12_epoch_figures(capsys):
    assert main(["info", BEST, "--setting", "nb201"]) == 0
    out = capsys.readouterr().out
    row = load_table().lookup(BEST)
    assert f"arch_index  {row['arch_index']} (NAS-Bench-201)" in out
    # the data's README: the table's best cell, 84.89% CIFAR-10 validation accuracy
    assert "84.89% val" in out and "(nb201, cifar10)" in out and "32x32" in out
    info = _info(capsys, BEST, "--dataset", "imagenet16")
    assert (info["arch_index"], info["hp12_valid"], info["hp12_test"]) == (
        row["arch_index"], row["imagenet16_valid"], row["imagenet16_test"])
    # the string is normalised: edges of a node in any order, surrounding spaces
    shuffled = " " + BEST.replace("|skip_connect~0|nor_conv_1x1~1|",
                                  "|nor_conv_1x1~1|skip_connect~0|") + " "
    assert _info(capsys, shuffled)["cell"] == BEST


def test_the_api_takes_the_string_as_one_more_kind_of_reference():
    assert [reference_kind(r) for r in (BEST, "resnet18", "cell.json")] == ["nb201", "zoo",
                                                                            "file"]
    arch, config = resolve(MIXED, dataset="cifar100")
    assert (config.input_size, config.num_classes) == (32, 100)
    model = build_model(MIXED, "nb201", dataset="imagenet16")
    # NAS-Bench-201's figure for this ImageNet16-120 network would differ only in the head:
    # 120 x 64 weights + 120 biases more than CIFAR-10's 10 x 64 + 10
    assert count_params(model) - count_params(build_model(MIXED)) == 110 * 65
    assert resolve(MIXED, input_size=64)[1].input_size == 64


def test_export_writes_a_string_under_a_file_safe_name(tmp_path, capsys, monkeypatch):
    for fmt in ("json", "dot"):
        assert main(["export", MIXED, "--format", fmt, "--dataset", "cifar100",
                     "-o", str(tmp_path / f"out.{fmt}")]) == 0
    capsys.readouterr()
    # the exported chain file reads back as the same network
    assert model_info(str(tmp_path / "out.json"), input_size=32)["params"] == \
        model_info(MIXED, dataset="cifar100")["params"]
    # default name: one digit per edge, the op's place in none, skip_connect, nor_conv_1x1,
    # nor_conv_3x3, avg_pool_3x3
    monkeypatch.chdir(tmp_path)
    assert main(["export", MIXED, "--format", "json"]) == 0
    assert capsys.readouterr().out.strip() == "nb201-333124.json"
    assert (tmp_path / "nb201-333124.json").is_file()


BAD = {
    "unknown op": ([MIXED.replace("avg_pool_3x3", "conv_5x5")],
                   "unknown op 'conv_5x5' on the edge 2 -> 3"),
    "too few nodes": (["|none~0|+|none~0|none~1|"], "expected 3 nodes separated by '+'"),
    "too many edges": (["|none~0|+|none~0|none~1|none~2|+|none~0|none~1|none~2|"],
                       "node 2 reads node 2"),
    "missing edge": (["|none~0|+|none~0|+|none~0|none~1|none~2|"],
                     "node 2 has no edge from node(s) 1"),
    "bad index": (["|none~0|+|none~0|none~x|+|none~0|none~1|none~2|"],
                  "edge 'none~x' of node 2 is not op~i"),
    "unknown data set": ([BEST, "--dataset", "imagenet"],
                         "unknown NAS-Bench-201 data set 'imagenet' (known: cifar10, cifar100, "
                         "imagenet16) (option --dataset)"),
    "other setting": ([BEST, "--setting", "cifar"], "setting 'cifar' does not apply "
                                                    "(expected nb201) (option --setting)"),
    "nb201 on a zoo model": (["resnet18", "--setting", "nb201"],
                             "resnet18 has no setting 'nb201'"),
    "dataset on a zoo model": (["resnet18", "--dataset", "cifar10"],
                               "dataset 'cifar10' applies to NAS-Bench-201 cells only"),
    "classes": ([BEST, "--dataset", "cifar100", "--num-classes", "10"],
                "has num_classes 100, not 10 (its data set fixes it) (option --dataset)"),
    "cell options": ([BEST, "--N", "3"], "unknown network option(s) for a NAS-Bench-201 "
                                         "cell: N"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_to_info_is_one_line_and_exit_2(capsys, case):
    args, message = BAD[case]
    assert main(["info", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nasforge: error: ") and message in err


def test_nb201_setting_on_cell_files(tmp_path, capsys):
    assert main(["export", MIXED, "--format", "json", "-o", str(tmp_path / "chain.json")]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "chain.json"), "--setting", "nb201"]) == 2
    assert "unknown setting 'nb201' for this architecture" in capsys.readouterr().err


def test_library_errors_are_typed():
    with pytest.raises(NasBench201StringError, match="unknown op 'conv'"):
        resolve("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(ArchitectureError, match="unknown NAS-Bench-201 data set") as e:
        build_model(BEST, dataset="mnist")
    assert e.value.options == ("dataset",)


def test_bad_strings_and_settings_in_a_fresh_interpreter(cli, tmp_path):
    for args, message in [
            (["info", "|nor_conv_3x3~0|+|pool~0|none~1|+|none~0|none~1|none~2|"],
             "unknown op 'pool' on the edge 0 -> 2"),
            (["export", "resnet18", "--setting", "nb201", "--format", "json"],
             "resnet18 has no setting 'nb201'"),
            (["train", "|none~0|+|none~0|none~1|+|none~0|none~1|", "--data", "synthetic"],
             "node 3 has no edge from node(s) 2")]:
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written, no run folder


def test_train_checks_the_data_set_before_loading_data(capsys, tmp_path):
    assert main(["train", "resnet18", "--dataset", "cifar10", "--runs-dir",
                 str(tmp_path)]) == 2
    assert "cells only, not to 'resnet18' (option --dataset)" in capsys.readouterr().err
    assert main(["train", BEST, "--dataset", "svhn", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown NAS-Bench-201 data set 'svhn'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# every command with a --dataset option (one CLI helper, cli/options.py); the arguments that
# would otherwise make each one run (nothing runs: the data set is checked first)
DATASET_COMMANDS = {
    "info": ["info", BEST],
    "export": ["export", BEST, "--format", "json"],
    "train": ["train", BEST, "--data", "synthetic"],
    "bench": ["bench", "searchers", "--benchmark", "nas-bench-201", "--budget", "5"],
    "search": ["search", "--space", "nas-bench-201", "--benchmark", "nas-bench-201"],
    "proxies": ["proxies", BEST, "--proxies", "params", "--data", "synthetic"],
}


@pytest.mark.parametrize("command", list(DATASET_COMMANDS))
def test_unknown_data_set_is_the_same_line_and_exit_2_in_every_command(capsys, tmp_path,
                                                                       monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    assert main([*DATASET_COMMANDS[command], "--dataset", "cifar-10"]) == 2
    err = capsys.readouterr().err
    assert err == ("nasforge: error: unknown NAS-Bench-201 data set 'cifar-10' (known: "
                   "cifar10, cifar100, imagenet16) (option --dataset)\n")
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("command", list(DATASET_COMMANDS))
def test_every_dataset_option_says_its_default(capsys, command):
    argv = DATASET_COMMANDS[command]
    args = build_parser(argv).parse_args(argv)
    assert args.dataset in (None, "cifar10")  # None: the library's default; bench names it
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(cifar10, cifar100, imagenet16; default cifar10)" in text
