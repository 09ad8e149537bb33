"""Latency: measure_latency, the onnxruntime backend, per-op latency tables and their
prediction, and ``nasforge latency``'s one-line errors."""
import json
import logging
import pickle
import time
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.cli import main
from nasforge.compiler.network import NetworkConfig
from nasforge.dsl import Cell, CellPair
from nasforge.latency import (LatencyError, LatencyTable, LatencyTableError, load_table,
                              measure_latency, predict_latency_ms, run_backend)
from nasforge.latency.measure import CLOCKS, device_name
from nasforge.latency.table import network_parts, table_parts
from nasforge.safe_load import RefusedFileError
from nasforge.search_spaces import NasNetSpace
from nasforge.zoo import SETTINGS

SLEEP_S = 0.01


class Sleeper(nn.Module):
    """Sleeps a known time per call."""

    def forward(self, x):
        time.sleep(SLEEP_S)
        return x


class Ticker(nn.Module):
    """Each call advances a fake clock by the next of ``durations_ms``; no real time passes, so
    what is measured does not depend on how busy the machine is."""

    def __init__(self, durations_ms):
        super().__init__()
        self.durations_ms, self.calls, self.now_s = list(durations_ms), 0, 0.0

    def forward(self, x):
        self.now_s += self.durations_ms[self.calls] / 1e3
        self.calls += 1
        return x


WARMUP_MS = [1000.0, 1000.0]  # would dominate every statistic if timed
TIMED_MS = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0]


# ------------------------------------------------------------------------ measure_latency
def test_measured_median_of_a_sleeping_model_is_at_least_its_sleep():
    """The real clock: sleep() never returns early, however loaded the machine is."""
    result = measure_latency(Sleeper(), (3, 8, 8), warmup=1, repeats=9)
    assert result.p10_ms >= SLEEP_S * 1e3
    assert result.p10_ms <= result.median_ms <= result.p90_ms
    assert (result.repeats, result.batch, result.backend) == (9, 1, "torch")


def test_statistics_are_those_of_the_timed_calls_only(monkeypatch):
    """On a fake wall clock the model advances by known durations: the median, deciles and
    IQR are exactly those of the timed calls (numpy's linear percentiles), warmup left out."""
    model = Ticker(WARMUP_MS + TIMED_MS)
    monkeypatch.setitem(CLOCKS, "wall", lambda: model.now_s)
    result = measure_latency(model, (3, 8, 8), warmup=len(WARMUP_MS), repeats=len(TIMED_MS))
    assert model.calls == len(WARMUP_MS) + len(TIMED_MS)
    p10, q25, median, q75, p90 = np.percentile(TIMED_MS, [10, 25, 50, 75, 90])
    assert result.median_ms == pytest.approx(median) and median == 4.0
    assert result.p10_ms == pytest.approx(p10) and result.p90_ms == pytest.approx(p90)
    assert result.iqr_ms == pytest.approx(q75 - q25)
    assert (result.repeats, result.warmup, result.clock) == (len(TIMED_MS), 2, "wall")


def test_warmup_calls_are_not_timed(monkeypatch):
    model = Ticker([200.0, 200.0] + [SLEEP_S * 1e3] * 5)  # the warmup would dominate p90
    monkeypatch.setitem(CLOCKS, "wall", lambda: model.now_s)
    result = measure_latency(model, (3, 8, 8), warmup=2, repeats=5)
    assert model.calls == 7
    assert result.p90_ms == pytest.approx(SLEEP_S * 1e3)


def test_cpu_clock_leaves_out_time_spent_off_the_cpu():
    # a sleeping process spends no CPU time: the cpu clock reads ~0, the wall clock the sleep
    result = measure_latency(Sleeper(), (3, 8, 8), threads=1, warmup=1, repeats=5, clock="cpu")
    assert result.median_ms < SLEEP_S * 1e3 / 4 and result.clock == "cpu"


@pytest.mark.parametrize("kwargs, words", [
    (dict(device="cuda:99"), "cuda:99"), (dict(device="tpu"), "tpu"),
    (dict(backend="tvm"), "unknown backend"), (dict(batch=0), "batch"),
    (dict(threads=0), "threads"), (dict(clock="cpu", threads=2), "threads=1")])
def test_bad_requests_raise_latency_error(kwargs, words):
    with pytest.raises(LatencyError, match=words):
        measure_latency(nn.Identity(), (3, 4, 4), repeats=1, **kwargs)


def test_onnxruntime_backend_computes_what_torch_computes(one_thread):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x).numpy()
    got = run_backend(model, x, backend="onnxruntime", threads=1)[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("args, words", [
    (["resnet18", "--device", "cuda:99"], "not available"),
    (["resnet18", "--backend", "tvm"], "invalid choice"),
    (["resnet18", "--batch", "0"], "--batch"),
    (["resnet18", "--threads", "0"], "--threads"),
    (["no_such_model"], "unknown model"),
    (["--build-table", "--setting", "mobile"], "--space and --out"),
    (["--build-table", "--space", "nasnet", "--out", "t.json", "--setting", "mobile",
      "--backend", "onnxruntime"], "torch backend only"),
    ([], "give a MODEL")])
def test_cli_bad_input_is_one_line_and_exit_2(args, words, capsys):
    assert main(["latency", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


# ------------------------------------------------------------------- tables: JSON, safety
def _table(entries, **fields):
    base = dict(device="cpu", device_name=device_name("cpu"), torch_version=torch.__version__,
                onnxruntime_version=_ort_version(), threads=1, backend="torch", batch=1,
                space="nasnet", setting="cifar", input_size=32, entries=entries)
    return LatencyTable(**{**base, **fields})


def _ort_version():
    try:
        import onnxruntime
        return onnxruntime.__version__
    except ImportError:
        return None


def test_table_round_trips_json(tmp_path):
    table = _table({"op:sep_conv_3x3:s1|4x8x8|4x8x8": 0.25, "stem:Sequential|3x8x8|12x8x8": 1.5},
                   per_part_ms=0.01, calibration={"model": "per_part", "cells": 3})
    table.save(tmp_path / "t.json")
    assert load_table(tmp_path / "t.json", device="cpu", threads=1) == table
    assert json.loads((tmp_path / "t.json").read_text())["format"] == "nasforge.latency-table/1"


def test_a_pickled_or_binary_table_is_refused(tmp_path):
    table = _table({"op:conv_1x1:s1|4x8x8|4x8x8": 0.25})
    pickled = tmp_path / "t.pkl"
    pickled.write_bytes(pickle.dumps(table.to_dict()))
    with pytest.raises(RefusedFileError, match="not UTF-8|not JSON"):
        load_table(pickled)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "nasforge.cellpair/1"}))
    with pytest.raises(LatencyTableError, match="not a nasforge latency table"):
        load_table(other)


def test_a_table_from_other_hardware_is_refused_and_other_software_warned(tmp_path, caplog):
    _table({}, device_name="Imaginary NPU 9000").save(tmp_path / "npu.json")
    with pytest.raises(LatencyTableError, match="Imaginary NPU 9000"):
        load_table(tmp_path / "npu.json", device="cpu")
    assert load_table(tmp_path / "npu.json").device_name == "Imaginary NPU 9000"  # no target
    _table({}, torch_version="1.0.0").save(tmp_path / "old.json")
    with caplog.at_level(logging.WARNING, logger="nasforge.latency.table"):
        load_table(tmp_path / "old.json", device="cpu", threads=1)
    assert "torch 1.0.0" in caplog.text


def test_cli_refuses_a_table_that_is_not_json(tmp_path, capsys):
    path = tmp_path / "t.json"
    path.write_bytes(pickle.dumps({"entries": {}}))
    assert main(["latency", "nasnet_a", "--setting", "mobile", "--table", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "latency table" in err


# ------------------------------------------------------------------------------ prediction
def _one_block_pair():
    """Normal: sep_conv_3x3(h_i) + identity(h_{i-1}); reduction: max_pool_3x3(h_i, /2) +
    sep_conv_3x3(h_{i-1}, /2). One block each, so each cell outputs its block alone.
    Network: cifar stem, N=1, F=4, 32 px, 10 classes: 5 cells (normal, reduction, normal,
    reduction, normal)."""
    normal = Cell("n")
    h0, h1 = normal.inputs()
    normal.combine("add", normal.op("sep_conv_3x3", h0), normal.op("identity", h1))
    normal.set_output()
    reduction = Cell("r", reduction=True)
    h0, h1 = reduction.inputs()
    reduction.combine("add", reduction.op("max_pool_3x3", h0), reduction.op("sep_conv_3x3", h1))
    reduction.set_output()
    return CellPair(normal, reduction, "one_block", network={"N": 1, "filters": 4})


# Every part of _one_block_pair's network, listed by hand from the NASNet macro (stem 3F = 12
# channels; F = 4, 8, 16 per stack; h_{i-1} of the first cell is the stem output itself; a
# cell after a reduction reads h_{i-1} at twice the resolution through a factorized reduction)
RELU_CONV_BN = "ReLU+Conv2dSame+BatchNorm2d"
EXPECTED_PARTS = [
    "stem:Sequential|3x32x32|12x32x32",
    # cell_0 (normal, F=4, 32 px): h_i = stem, h_{i-1} = stem (no pre1)
    f"pre0:{RELU_CONV_BN}|12x32x32|4x32x32",
    "op:sep_conv_3x3:s1|4x32x32|4x32x32", "op:identity:s1|12x32x32|4x32x32",
    "combine:add|4x32x32+4x32x32|4x32x32",
    # reduction_cell_0 (F=8): h_i = cell_0 (4 ch), h_{i-1} = stem (12 ch), both 32 px
    f"pre0:{RELU_CONV_BN}|4x32x32|8x32x32", f"pre1:{RELU_CONV_BN}|12x32x32|8x32x32",
    "op:max_pool_3x3:s2|8x32x32|8x16x16", "op:sep_conv_3x3:s2|8x32x32|8x16x16",
    "combine:add|8x16x16+8x16x16|8x16x16",
    # cell_1 (normal, F=8, 16 px): h_{i-1} = cell_0 at 32 px
    f"pre0:{RELU_CONV_BN}|8x16x16|8x16x16", "pre1:ReLU+FactorizedReduction|4x32x32|8x16x16",
    "op:sep_conv_3x3:s1|8x16x16|8x16x16", "op:identity:s1|8x16x16|8x16x16",
    "combine:add|8x16x16+8x16x16|8x16x16",
    # reduction_cell_1 (F=16): h_i = cell_1, h_{i-1} = reduction_cell_0, both 8 ch at 16 px
    f"pre0:{RELU_CONV_BN}|8x16x16|16x16x16", f"pre1:{RELU_CONV_BN}|8x16x16|16x16x16",
    "op:max_pool_3x3:s2|16x16x16|16x8x8", "op:sep_conv_3x3:s2|16x16x16|16x8x8",
    "combine:add|16x8x8+16x8x8|16x8x8",
    # cell_2 (normal, F=16, 8 px): h_{i-1} = cell_1 at 16 px
    f"pre0:{RELU_CONV_BN}|16x8x8|16x8x8", "pre1:ReLU+FactorizedReduction|8x16x16|16x8x8",
    "op:sep_conv_3x3:s1|16x8x8|16x8x8", "op:identity:s1|16x8x8|16x8x8",
    "combine:add|16x8x8+16x8x8|16x8x8",
    "head:relu_pool_linear|16x8x8|10",
]


def test_a_one_block_network_has_the_parts_listed_by_hand():
    from nasforge.api import resolve

    pair = _one_block_pair()
    _, config = resolve(pair, "cifar")
    assert Counter(p.key for p in network_parts(pair, config)) == Counter(EXPECTED_PARTS)


def test_prediction_is_the_sum_of_the_entries_of_its_parts():
    keys = sorted(set(EXPECTED_PARTS))
    entries = {k: 2.0 ** -i for i, k in enumerate(keys)}  # every subset has its own sum
    table = _table(entries)
    expected = sum(entries[k] for k in EXPECTED_PARTS)  # repeated parts count each time
    assert predict_latency_ms(_one_block_pair(), table) == pytest.approx(expected, rel=1e-12)
    calibrated = _table(entries, per_part_ms=0.5, scale=2.0)
    assert predict_latency_ms(_one_block_pair(), calibrated) == pytest.approx(
        2 * expected + 0.5 * len(EXPECTED_PARTS), rel=1e-12)
    assert predict_latency_ms(_one_block_pair(), calibrated, calibrated=False) == \
        pytest.approx(expected, rel=1e-12)


def test_a_part_the_table_lacks_is_named():
    entries = {k: 1.0 for k in EXPECTED_PARTS if not k.startswith("op:sep_conv_3x3:s2")}
    with pytest.raises(LatencyTableError, match="op:sep_conv_3x3:s2"):
        predict_latency_ms(_one_block_pair(), _table(entries))


def test_width_varying_parts_interpolate_linearly_in_input_channels():
    entries = {f"pre0:{RELU_CONV_BN}|4x8x8|4x8x8": 1.0, f"pre0:{RELU_CONV_BN}|12x8x8|4x8x8": 3.0}
    table = _table(entries)
    from nasforge.latency.table import Part

    part = Part(f"pre0:{RELU_CONV_BN}|8x8x8|4x8x8", "pre0", f"pre0:{RELU_CONV_BN}|*x8x8|4x8x8",
                8, make=None)
    assert table.lookup(part) == pytest.approx(2.0)


@pytest.fixture
def tiny_setting(monkeypatch):
    """A cell-network setting small enough to build tables in a test (32 px, N=1, F=4)."""
    monkeypatch.setitem(SETTINGS, "tiny", NetworkConfig(stem="cifar", N=1, filters=4,
                                                        num_classes=10, input_size=32))
    return "tiny"


def test_table_covers_every_part_of_random_cells(tiny_setting):
    space = NasNetSpace(num_blocks=2)
    table = _table({p.key: 1.0 for p in table_parts(space, tiny_setting)},
                   setting=tiny_setting, space="nasnet")
    ops = set(space.ops)
    rng = np.random.default_rng(7)
    for _ in range(3):
        pair = space.to_graph(space.sample(rng))
        from nasforge.api import resolve

        parts = network_parts(pair, resolve(pair, tiny_setting)[1])
        # every op of a random cell is timed at its exact position; only the parts that
        # read the previous cell's output (its width varies) may be interpolated
        assert all(p.key in table.entries for p in parts if p.kind in ("op", "combine"))
        assert {p.key.split(":")[1] for p in parts if p.kind == "op"} <= ops
        assert predict_latency_ms(pair, table) > 0  # no part is missing


def test_build_table_times_every_op_of_the_space_here(tiny_setting, tmp_path, capsys,
                                                     monkeypatch):
    # the three hand-made probes alone show every op position (random ones only add widths)
    monkeypatch.setattr("nasforge.latency.table.NUM_RANDOM_PROBES", 0)
    out = tmp_path / "table.json"
    assert main(["latency", "--build-table", "--space", "nasnet", "--setting", tiny_setting,
                 "--out", str(out), "--repeats", "1", "--warmup", "0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    table = load_table(out, device="cpu", threads=1)
    assert summary["entries"] == len(table.entries) and table.device_name == device_name("cpu")
    timed_ops = {k.split("|")[0].split(":")[1] for k in table.entries if k.startswith("op:")}
    assert timed_ops == set(NasNetSpace().ops)
    assert all(ms > 0 for k, ms in table.entries.items() if not k.startswith("op:identity:s1"))


def test_cli_refuses_a_table_timed_with_another_clock(tmp_path, capsys):
    _table({}, clock="cpu", setting="mobile", input_size=224).save(tmp_path / "t.json")
    assert main(["latency", "nasnet_a", "--setting", "mobile", "--table",
                 str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--clock cpu" in err
