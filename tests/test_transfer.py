"""nasforge transfer: data-parallel training through Ray Train (2 gloo CPU workers), the
large-image ImageFolder pipeline, the ImageNet networks' sizes, the end-to-end command with its
comparison table, resume after a crash, and bad input."""
from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from data_fixtures import CIFAR_CLASSES, make_images, write_imagefolder
from nasforge.cli import main
from nasforge.data import make_splits
from nasforge.train import RECIPES, Recipe, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for every Ray test of this module."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    # this module's functions and classes travel to Ray's workers by value (tests/ is not
    # importable there)
    modules = [sys.modules[__name__], sys.modules["data_fixtures"]]
    for m in modules:
        ray.cloudpickle.register_pickle_by_value(m)
    yield ray
    for m in modules:
        ray.cloudpickle.unregister_pickle_by_value(m)
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny_imagefolder(tmp_path_factory):
    """10 classes: 8 training and 4 validation images each, 40x40 px PNGs."""
    root = tmp_path_factory.mktemp("imgs") / "tiny"
    write_imagefolder(root, make_images(80, seed=1, size=40), make_images(40, seed=2, size=40),
                      test_name="val")
    return root


# --------------------------------------------------------------------------- recipes, sizes
def test_imagenet_recipes():
    mobile, large = RECIPES["imagenet-nasnet-mobile"], RECIPES["imagenet-nasnet-large"]
    for r in (mobile, large):
        assert r.optim.kind == "rmsprop"
        assert r.optim.rmsprop_eps == 1.0 and r.optim.rmsprop_decay == 0.9
        assert r.regularisation.label_smoothing == 0.1 and r.regularisation.aux_weight == 0.4
    assert mobile.regularisation.drop_path_keep_prob == 1.0
    assert large.regularisation.drop_path_keep_prob == 0.7
    assert (mobile.optim.weight_decay, large.optim.weight_decay) == (4e-5, 5e-5)
    assert (mobile.augmentation.image_size, large.augmentation.image_size) == (224, 331)
    base = RECIPES["imagenet-baseline"]
    assert base.optim.kind == "sgd" and base.regularisation.label_smoothing == 0.1
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'rmsprop'"):
        base.replace(optimizer="adam")


def test_imagenet_networks_match_info_and_published_counts(tmp_path):
    """The transfer's builder gives `nasforge info`'s numbers, and for NASNet-A 4@1056 the
    published ones (5.3M params, 564M mult-adds at 224 px), from the zoo name and from the
    cell pair as a file."""
    from nasforge.flops import count_params
    from nasforge.transfer import baseline_specs, build, cell_spec, resolve_cell, spec_info

    pair, origin = resolve_cell("nasnet_a")
    assert origin == "zoo:nasnet_a"
    zoo = cell_spec("nasnet_a", pair, "mobile")
    from_file = cell_spec(str(tmp_path / "x.json"), pair, "mobile", N=4, penultimate=1056,
                          cell_file=tmp_path / "nasnet_a.json")
    infos = [spec_info(spec, 1000, 224) for spec in (zoo, from_file)]
    for info in infos:
        # docs/reference.md sections 6 and 7: pretrainedmodels nasnetamobile, 564M mult-adds
        assert info["params"] == 5_289_978
        assert round(info["mult_adds"] / 1e6) == 564
        assert (info["N"], info["penultimate"]) == (4, 1056)
    # a baseline's row against its reference implementation (torchvision, 1000 and 10 classes)
    import torchvision

    (resnet,) = baseline_specs(["resnet18"])
    assert spec_info(resnet, 1000, 224)["params"] == 11_689_512  # docs/reference.md section 7
    assert spec_info(resnet, 10, 64)["params"] == count_params(
        torchvision.models.resnet18(num_classes=10))
    # the trained network = the inference network + the auxiliary head (training only), whose
    # size follows from its definition (docs/reference.md section 4): on the 528-channel
    # output of the cell before the second reduction (6 states x 2 x 44 filters), 14 x 14 at
    # 224 px, pooled 5 x 5 stride 3 to 4 x 4: 1x1 conv to 128 + BN, a 4 x 4 conv to 768 + BN,
    # a linear layer to the classes
    model = build(zoo, 10, 224)
    assert count_params(model) == spec_info(zoo, 10, 224)["params"]
    with_aux = build(zoo, 10, 224, "imagenet-nasnet-mobile")
    aux_head = 528 * 128 + 2 * 128 + 128 * 768 * 4 * 4 + 2 * 768 + 768 * 10 + 10
    assert with_aux.config.aux_head
    assert count_params(with_aux) - count_params(model) == aux_head


def test_a_baseline_trains_with_the_recipes_stochastic_depth_as_nasforge_train_does():
    """A recipe with stochastic depth p_L < 1 reaches a transfer baseline whose builder takes
    the option (as `nasforge train` builds it): block l of L survives with p_l = 1 - l / L
    (1 - p_L) (Huang et al. 2016, eq. 4); with p_L = 1 the blocks have no stochastic depth."""
    from nasforge.transfer import build
    from nasforge.transfer.models import ModelSpec

    spec = ModelSpec(label="resnet110", kind="baseline", ref="resnet110", setting="cifar")
    recipe = RECIPES["imagenet-baseline"].replace(stochastic_depth=0.5)
    survivals = [m.survival for m in build(spec, 10, 32, recipe).modules()
                 if hasattr(m, "survival")]
    blocks = 54  # ResNet-110: 3 stages of (110 - 2) / 6 residual blocks
    assert survivals == pytest.approx([1 - b / blocks * 0.5 for b in range(1, blocks + 1)])
    plain = build(spec, 10, 32, RECIPES["imagenet-baseline"])
    assert not any(hasattr(m, "survival") for m in plain.modules())


def test_info_cli_agrees(tmp_path, capsys):
    from nasforge.transfer import cell_spec, resolve_cell, spec_info

    pair, _ = resolve_cell("nasnet_a")
    spec = cell_spec("x", pair, "mobile", N=2, penultimate=528, cell_file=tmp_path / "c.json")
    assert main(["info", spec.ref, "--setting", "mobile", "--N", "2", "--penultimate", "528",
                 "--num-classes", "10", "--input-size", "96", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    info = spec_info(spec, 10, 96)
    assert (out["params"], out["mult_adds"]) == (info["params"], info["mult_adds"])


# --------------------------------------------------------------------------- streaming data
def test_stream_loader_shards_every_global_batch(tiny_imagefolder):
    """The ImageFolder pipeline: uint8 decode, crop to image_size, normalise on the device;
    2 ranks' shards of each step are disjoint and together one slice of the epoch's order."""
    from nasforge.data.stream import ImageFolderStream

    recipe = RECIPES["imagenet-baseline"].replace(batch_size=20, eval_batch_size=8)
    data = ImageFolderStream(tiny_imagefolder, image_size=32, workers=0)
    assert data.num_classes == 10 and data.classes == tuple(sorted(CIFAR_CLASSES))
    shards = []
    for rank in (0, 1):
        tl, ev = data.make_loaders(recipe, device="cpu", seed=3, rank=rank, world=2)
        assert len(tl) == 4 and tl.batch_size == 10
        x, y = next(iter(tl))
        assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (10,)
        assert -3 < float(x.mean()) < 3
        shards.append(list(tl.sampler)[:10])
        assert sum(len(b[1]) for b in ev["val"]) == 20  # 40 images, half per rank
    assert not set(shards[0]) & set(shards[1])


# --------------------------------------------------------------------------- data parallel
class NoBN(nn.Module):
    """No BatchNorm: a data-parallel step's gradient is then exactly the mean over ranks of
    the half-batch gradients (BN's batch statistics would couple the examples of a batch and
    differ between one batch of 16 and two of 8)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


DP_RECIPE = Recipe(name="dp").replace(epochs=1, batch_size=16, eval_batch_size=6, lr=0.2,
                                      momentum=0.9, nesterov=True, weight_decay=5e-4,
                                      label_smoothing=0.1, grad_clip=0.5, crop_padding=2,
                                      flip=True, cutout=3)


def _dp_data():
    train_set = make_images(32, seed=5, size=8)
    test_set = make_images(14, seed=6, size=8)
    return make_splits(train_set, test_set, CIFAR_CLASSES, split="final")


def _dp_rank(rank: int, world: int, port: int, out: str) -> None:
    """One of 2 gloo processes: the trainer in data-parallel mode, as under Ray Train."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.manual_seed(0)
        model = NoBN()
        res = train(model, _dp_data(), DP_RECIPE, device="cpu", seed=1, distributed=True)
        torch.save({"state": model.state_dict(), "result": res}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_against_single_process(out_dir) -> None:
    torch.manual_seed(0)
    ref_model = NoBN()
    ref = train(ref_model, _dp_data(), DP_RECIPE, device="cpu", seed=1)
    assert ref["epochs"] == 1 and len(ref["history"]) == 1
    for r in (0, 1):
        out = torch.load(out_dir / f"rank{r}.pt", weights_only=False)
        for k, v in ref_model.state_dict().items():
            torch.testing.assert_close(out["state"][k], v, rtol=1e-5, atol=1e-6)
        res = out["result"]
        # each rank trained on 16 of the 32 images: the all-reduced count is 32, not 64
        assert res["train_images"] == ref["train_images"] == 32
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "test_top5"):
            assert res[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k
    assert ref_model.state_dict()["fc.bias"].abs().sum() > 0


def test_two_gloo_workers_on_half_batches_equal_one_on_full_batches(tmp_path):
    """Two SGD steps (global batch 16 of 32 images) on 2 gloo processes, each on its 8-image
    half of every batch (DDP all-reduces the gradients), give the weights and metrics of one
    process on the full batches: same augmentation draws (every rank draws the global batch,
    then slices it), same momentum, weight decay, label smoothing and gradient clipping."""
    import torch.multiprocessing as mp

    mp.spawn(_dp_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    _check_against_single_process(tmp_path)


def _dp_ray_worker(config):
    import ray.train

    torch.set_num_threads(1)
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(0)
    model = NoBN()
    res = train(model, _dp_data(), DP_RECIPE, device="cpu", seed=1, distributed=True)
    torch.save({"state": model.state_dict(), "result": res},
               f"{config['out']}/rank{rank}.pt")


@pytest.mark.slow
def test_two_ray_train_gloo_workers_equal_one_process(ray_local, tmp_path):
    """The same check with the process group set up by Ray Train's TorchTrainer (30 s here;
    the end-to-end test below covers the Ray path in the default suite)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(_dp_ray_worker, train_loop_config={"out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                 run_config=RunConfig(name="dp", storage_path=str(tmp_path / "ray"))).fit()
    _check_against_single_process(tmp_path)


# --------------------------------------------------------------------------- end to end
def _fake_search_run(path):
    """A search run folder whose best trial holds a small cell pair (NASNet-A's cells)."""
    from nasforge.zoo import ZOO

    pair = ZOO["nasnet_a"].build_pair()
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    records = [{"trial": 0, "status": "ok", "metrics": {"val_acc": 0.3}, "arch": None},
               {"trial": 1, "status": "ok", "metrics": {"val_acc": 0.6},
                "arch": dict(pair.to_dict(), name="found")}]
    (path / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("baselines", ["resnet18",
                                       pytest.param("resnet18,mobilenet_v2",
                                                    marks=pytest.mark.slow)])
def test_transfer_end_to_end_crash_and_resume(baselines, ray_local, tiny_imagefolder, tmp_path,
                                              monkeypatch, capsys):
    """`nasforge transfer RUN --baselines resnet18,mobilenet_v2` on 2 Ray Train CPU workers:
    a crash after resnet18's first epoch stops the run (exit 1); --resume skips the finished
    cell network, continues resnet18 after its epoch-1 checkpoint and writes the table. The
    fast twin (default suite) leaves out mobilenet_v2, a model trained once like the cell."""
    from torch.utils.flop_counter import FlopCounterMode

    from nasforge import build_model
    from nasforge.transfer.models import ModelSpec
    from nasforge.faults import ENV_VAR

    run = _fake_search_run(tmp_path / "search")
    args = ["transfer", str(run), "--data", str(tiny_imagefolder), "--workers", "2",
            "--epochs", "2", "--image-size", "32", "--batch-size", "40", "--N", "1",
            "--penultimate", "96", "--loader-workers", "0", "--max-failures", "0",
            "--runs-dir", str(tmp_path / "runs"), "--name", "t", "--baselines", baselines]
    monkeypatch.setenv(ENV_VAR, "raise:resnet18")  # after its first epoch
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "training resnet18 failed" in err and "--resume" in err
    run_dir = tmp_path / "runs" / "t"
    cell_result = (run_dir / "found" / "result.json").stat().st_mtime_ns
    first = (run_dir / "resnet18" / "metrics.jsonl").read_text().splitlines()
    assert len(first) == 1 and not (run_dir / "resnet18" / "result.json").exists()
    assert torch.load(run_dir / "resnet18" / "checkpoint.pt", weights_only=False)["epoch"] == 1

    monkeypatch.delenv(ENV_VAR)
    assert main(["transfer", "--resume", "--name", "t", "--runs-dir",
                 str(tmp_path / "runs")]) == 0
    out, err = capsys.readouterr()
    assert "found: finished before, skipped" in err
    assert "resnet18: resuming after epoch 1" in err
    assert (run_dir / "found" / "result.json").stat().st_mtime_ns == cell_result
    lines = (run_dir / "resnet18" / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == first[0] and [json.loads(ln)["epoch"] for ln in lines] == [1, 2]

    plan = json.loads((run_dir / "transfer.json").read_text())
    rows = list(csv.DictReader((run_dir / "comparison.csv").open()))
    assert [r["model"] for r in rows] == ["found", *baselines.split(",")]
    for row, entry in zip(rows, plan["models"]):
        # the inference network built independently, counted with torch's own tools
        spec = ModelSpec.from_dict(entry["spec"])
        net = build_model(spec.ref, spec.setting, num_classes=10, input_size=32,
                          **spec.overrides).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            net(torch.zeros(1, 3, 32, 32))
        assert int(row["params"]) == sum(p.numel() for p in net.parameters())
        assert int(row["mult_adds"]) == flops.get_total_flops() // 2
        top1, top5 = float(row["top1"]), float(row["top5"])
        assert top1 <= top5 and round(top1 * 40, 6).is_integer()  # of 40 val images
        assert float(row["train_images_per_s"]) > 0 and float(row["wall_s"]) > 0
        assert row["epochs"] == "2" and row["status"] == "ok"
        assert (run_dir / row["model"] / "checkpoint.pt").is_file()
        assert list((run_dir / row["model"]).glob("events.out.tfevents.*"))
    assert rows[0]["setting"] == "mobile"
    assert json.loads((run_dir / "found" / "result.json").read_text())["N@P"] == "1@96"
    md = (run_dir / "comparison.md").read_text()
    assert "| found | mobile 1@96 | 32 |" in md and "| resnet18 |" in md
    assert "| model | setting | px | params | mult-adds | top-1 | top-5 |" in out
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "cell.json").is_file()


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("option, resource", [("--gpus", "GPU"), ("--workers", "CPU")])
def test_more_than_the_cluster_has_is_one_line_naming_the_option(option, resource, ray_local,
                                                                 tiny_imagefolder, tmp_path,
                                                                 capsys):
    """ray_session refuses what the module's 2-CPU, GPU-less Ray cannot give; the CLI names
    its option, nothing trains."""
    run = _fake_search_run(tmp_path / "search")
    code = main(["transfer", str(run), "--data", str(tiny_imagefolder), option, "4",
                 "--epochs", "1", "--image-size", "32", "--N", "1", "--penultimate", "96",
                 "--runs-dir", str(tmp_path / "runs"), "--name", "t"])
    have = 0 if resource == "GPU" else 2
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == \
        [f"nasforge: error: {option} 4 asked for, but the Ray cluster has {have} {resource}(s)"]
    assert not list((tmp_path / "runs" / "t").glob("*/checkpoint.pt"))


@pytest.mark.parametrize("case, expect", [
    ("no_val", "has no val/ folder"),
    ("no_train", "has no train/ folder"),
    ("classes_differ", "class folders differ"),
    ("baseline", "unknown baseline 'resnet17'"),
    ("setting", "unknown setting 'cifar'"),
    ("cell", "neither a cell-pair JSON file"),
    ("chain_as_cell", "hand-designed network"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, expect):
    tiny = (make_images(20, seed=1, size=8), make_images(10, seed=2, size=8))
    root = tmp_path / "d"
    cell, extra = "nasnet_a", []
    if case == "no_val":
        write_imagefolder(root, tiny[0], None)
    elif case == "no_train":
        write_imagefolder(root, tiny[1], None)
        (root / "train").rename(root / "val")
    elif case == "classes_differ":
        write_imagefolder(root, *tiny, test_name="val")
        (root / "val" / "truck").rename(root / "val" / "lorry")
    else:
        write_imagefolder(root, *tiny, test_name="val")
        extra = {"baseline": ["--baselines", "resnet18,resnet17"],
                 "setting": ["--setting", "cifar"]}.get(case, [])
        cell = {"cell": "no_such_cell", "chain_as_cell": "resnet18"}.get(case, cell)
    code = main(["transfer", cell, "--data", str(root), "--runs-dir", str(tmp_path / "runs"),
                 "--name", "bad", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("nasforge: error:") and expect in err, err


def test_resume_of_a_missing_run_and_an_existing_name(tmp_path, capsys, tiny_imagefolder):
    assert main(["transfer", "--resume", "--name", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "holds no transfer" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "transfer.json").write_text("{}")
    assert main(["transfer", "nasnet_a", "--data", str(tiny_imagefolder), "--runs-dir",
                 str(tmp_path), "--name", "x"]) == 2
    assert "already holds a transfer" in capsys.readouterr().err


def test_val_split_option_names_the_evaluation_folder(tmp_path):
    from nasforge.data import DataError
    from nasforge.data.stream import check_imagefolder

    root = write_imagefolder(tmp_path / "d", make_images(20, size=8), make_images(10, size=8))
    with pytest.raises(DataError, match="it has test/: use val_split 'test'"):
        check_imagefolder(root)
    assert len(check_imagefolder(root, "test")) == 10
    assert np.all(np.array(check_imagefolder(root, "test")) == sorted(CIFAR_CLASSES))
