"""The GPU check (benchmarks/gpu_check.py) runs in its reduced mode on the CPU and reports every
figure it promises."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def reduced_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "check.json"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--reduced",
                           "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_reduced_mode_reports_every_figure(reduced_check):
    r = reduced_check
    assert set(gpu_check.FIGURES) <= set(r)
    assert r["device"] == "cpu" and r["reduced"] is True
    assert set(gpu_check.CHILD_FIGURES) <= set(r["child"])
    assert set(gpu_check.CIFAR_FAST_FIGURES) <= set(r["cifar_fast"])
    assert set(gpu_check.HAND_FIGURES) <= set(r["hand_loop"])
    for key in ("images_per_s_eager", "images_per_s_compiled", "compile_s",
                "mult_adds_per_image"):
        assert _positive(r["child"][key]), key
    assert _positive(r["cifar_fast"]["images_per_s"])
    assert _positive(r["hand_loop"]["images_per_s"])
    assert len(r["cifar_fast"]["epoch_s"]) == r["cifar_fast"]["epochs"] == 1
    assert all(_positive(s) for s in r["cifar_fast"]["epoch_s"] + r["hand_loop"]["epoch_s"])
    # accuracies are counts of the 128 test images: multiples of 1/128
    for acc in (r["cifar_fast"]["final_test_acc"], r["hand_loop"]["final_test_acc"]):
        assert acc is not None and abs(acc * 128 - round(acc * 128)) < 1e-6
    assert math.isclose(r["trainer_over_hand"],
                        r["hand_loop"]["images_per_s"] / r["cifar_fast"]["images_per_s"])
    assert set(r["peak_memory_mb"]) == {"child", "cifar_fast", "hand_loop"}
    assert all(_positive(v) for v in r["peak_memory_mb"].values())
    # a CPU has no dense bf16 tensor-core peak: utilisation is not applicable
    assert r["peak_bf16_tflops"] is None
    assert r["child"]["mfu_eager"] is None and r["cifar_fast"]["mfu"] is None


@pytest.mark.parametrize("name, tflops", [("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0),
                                          ("NVIDIA A100-SXM4-80GB", 312.0)])
def test_peak_table_matches_published_dense_bf16(name, tflops, monkeypatch):
    # NVIDIA data sheets: H100/H200 SXM 989 TFLOP/s dense bf16, A100 312
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert gpu_check.peak_tflops(torch.device("cuda")) == tflops
    # MFU = 6 x mult-adds x images/s / peak
    assert math.isclose(gpu_check.mfu(1000.0, 10 ** 9, tflops), 6e12 / (tflops * 1e12))


def test_unknown_device_has_no_peak(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Mystery GPU 9000")
    assert gpu_check.peak_tflops(torch.device("cuda")) is None
    assert gpu_check.mfu(1000.0, 10 ** 9, None) is None
