"""nasforge.data: readers (CIFAR-10 python folder/archive, ImageFolder, synthetic), splits,
caching, one-line DataErrors, and the device-resident loader's exact batches."""
from __future__ import annotations

import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch
from data_fixtures import (CIFAR_CLASSES, imagefolder_order, make_images, write_cifar_archive,
                           write_cifar_folder, write_imagefolder)
from PIL import Image

from nasforge.data import DataError, DataSplits, DeviceLoader, ImageData, load_data
from nasforge.data import cifar, imagefolder
from nasforge.data.load import make_splits

N_TRAIN, N_TEST = 250, 60


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """The same images as a CIFAR-10 folder, its .tar.gz, and a PNG ImageFolder tree."""
    root = tmp_path_factory.mktemp("data")
    train, test = make_images(N_TRAIN, seed=1), make_images(N_TEST, seed=2)
    folder = write_cifar_folder(root / "cifar", train, test)
    archive = write_cifar_archive(root / "cifar-10-python.tar.gz", folder)
    tree = write_imagefolder(root / "tree", train, test)
    return dict(root=root, train=train, test=test, folder=folder, archive=archive, tree=tree)


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path, monkeypatch):
    """Nothing a test does may write to the user's ~/.cache/nasforge."""
    monkeypatch.setenv("NASFORGE_CACHE", str(tmp_path / "default-cache"))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.numpy()


def _error(source, match: str, **kw) -> str:
    with pytest.raises(DataError, match=match) as info:
        load_data(source, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- formats ---------------------------------------------------------------------------------

def test_cifar_folder_final_split_gives_exact_arrays(fx, tmp_path):
    s = load_data(fx["folder"], split="final", cache_dir=tmp_path)
    assert isinstance(s, DataSplits) and s.format == "cifar10-python" and s.split == "final"
    assert s.source == str(fx["folder"].resolve())
    assert s.classes == CIFAR_CLASSES and s.num_classes == 10 and s.image_size == (32, 32)
    assert s.val is None and len(s.train) == N_TRAIN and len(s.test) == N_TEST
    assert s.train.images.dtype == torch.uint8 and s.train.labels.dtype == torch.int64
    np.testing.assert_array_equal(_np(s.train.images), fx["train"][0])
    np.testing.assert_array_equal(_np(s.train.labels), fx["train"][1])
    np.testing.assert_array_equal(_np(s.test.images), fx["test"][0])
    np.testing.assert_array_equal(_np(s.test.labels), fx["test"][1])
    x = fx["train"][0].astype(np.float64) / 255
    np.testing.assert_allclose(s.mean, x.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.std, x.std(axis=(0, 2, 3)), rtol=0, atol=1e-9)


def test_archive_and_parent_folder_are_detected(fx, tmp_path):
    ref = load_data(fx["folder"], split="final", cache_dir=tmp_path)
    for source, resolved in ((fx["archive"], fx["archive"]), (fx["root"] / "cifar", fx["folder"])):
        s = load_data(source, split="final", cache_dir=tmp_path)
        assert s.format == "cifar10-python" and s.source == str(resolved.resolve())
        assert torch.equal(s.train.images, ref.train.images)
        assert torch.equal(s.train.labels, ref.train.labels)
        assert torch.equal(s.test.images, ref.test.images) and s.classes == ref.classes


def test_imagefolder_png_equals_cifar_in_folder_order(fx, tmp_path):
    s = load_data(fx["tree"], split="final", cache_dir=tmp_path)
    assert s.format == "imagefolder" and s.classes == CIFAR_CLASSES
    for got, (x, y) in ((s.train, fx["train"]), (s.test, fx["test"])):
        order = imagefolder_order(y)
        np.testing.assert_array_equal(_np(got.images), x[order])
        np.testing.assert_array_equal(_np(got.labels), y[order])


def test_imagefolder_sorted_classes_val_folder_nested_gray_and_jpeg(tmp_path):
    root = tmp_path / "t"
    px = {}
    for split in ("train", "val"):
        for k, cls in enumerate(("zebra", "ant", "mole")):  # created unsorted
            d = root / split / cls / "sub"
            d.mkdir(parents=True)
            arr = np.full((8, 6), 40 * k + (split == "val"), np.uint8)
            Image.fromarray(arr, mode="L").save(d / "b.png")  # grayscale -> RGB
            rgb = np.random.default_rng(k).integers(0, 256, (8, 6, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / split / cls / "a.jpg", quality=90)
            (root / split / cls / "notes.txt").write_text("ignored")
            (root / split / cls / ".hidden.png").write_bytes(b"ignored")
            with Image.open(root / split / cls / "a.jpg") as im:
                px[split, cls, "a"] = np.asarray(im.convert("RGB"))
            px[split, cls, "b"] = np.repeat(arr[:, :, None], 3, axis=2)
    s = load_data(root, split="final", cache_dir=tmp_path / "cache")
    assert s.classes == ("ant", "mole", "zebra") and s.image_size == (8, 6)
    assert s.test is not None and s.train.images.shape == (6, 3, 8, 6)
    for data, split in ((s.train, "train"), (s.test, "val")):
        assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]  # a.jpg before sub/b.png per class
        expected = [px[split, c, f] for c in ("ant", "mole", "zebra") for f in ("a", "b")]
        np.testing.assert_array_equal(_np(data.images), np.stack(expected).transpose(0, 3, 1, 2))


def test_synthetic_is_deterministic_balanced_and_learnable(tmp_path):
    a = load_data("synthetic", split="final")
    b = load_data("synthetic", split="final")
    assert a.format == "synthetic" and a.source == "synthetic" and a.num_classes == 10
    assert len(a.train) == 10_000 and len(a.test) == 2_000 and a.image_size == (32, 32)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert torch.bincount(a.train.labels).tolist() == [1000] * 10
    # nearest class-mean colour, fitted on train: well above chance (10%) on test
    col = a.train.images.double().mean(dim=(2, 3))
    centres = torch.stack([col[a.train.labels == c].mean(0) for c in range(10)])
    test_col = a.test.images.double().mean(dim=(2, 3))
    pred = torch.cdist(test_col, centres).argmin(1)
    acc = (pred == a.test.labels).double().mean().item()
    assert 0.3 < acc < 0.99, acc


# --- splits ------------------------------------------------------------------------------------

def test_search_split_is_seeded_stratified_disjoint_and_has_no_test(fx, tmp_path):
    a = load_data(fx["folder"], val_size=50, seed=3, cache_dir=tmp_path)
    b = load_data(fx["folder"], val_size=50, seed=3, cache_dir=tmp_path)
    c = load_data(fx["folder"], val_size=50, seed=4, cache_dir=tmp_path)
    assert a.split == "search" and a.test is None
    assert len(a.train) == 200 and len(a.val) == 50
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)
    x, y = fx["train"]
    rows = {img.tobytes(): i for i, img in enumerate(x)}
    val_idx = [rows[img.tobytes()] for img in _np(a.val.images)]
    train_idx = [rows[img.tobytes()] for img in _np(a.train.images)]
    assert val_idx == sorted(val_idx) and train_idx == sorted(train_idx)  # source order kept
    assert sorted(val_idx + train_idx) == list(range(N_TRAIN))  # disjoint, complete
    np.testing.assert_array_equal(_np(a.val.labels), y[val_idx])
    assert torch.bincount(a.val.labels, minlength=10).tolist() == [5] * 10  # 25 per class
    # statistics come from the search-train part only
    xt = x[train_idx].astype(np.float64) / 255
    np.testing.assert_allclose(a.mean, xt.mean(axis=(0, 2, 3)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.std, xt.std(axis=(0, 2, 3)), rtol=0, atol=1e-9)


def test_stratified_quota_with_unequal_classes():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)
    x = np.zeros((10, 3, 2, 2), np.uint8)
    s = make_splits((x, labels), None, ("a", "b", "c"), val_size=5, seed=0)
    # exact quotas 3, 1.5, 0.5 -> 3 + largest remainders (tie: lower class first) -> 3, 2, 0
    assert torch.bincount(s.val.labels, minlength=3).tolist() == [3, 2, 0]


# --- ImageFolder cache -----------------------------------------------------------------------

def test_imagefolder_cache_hit_skips_decoding_and_change_invalidates(fx, tmp_path, monkeypatch):
    calls = []
    real = imagefolder.decode_images

    def counting(paths):
        calls.append(len(paths))
        return real(paths)

    monkeypatch.setattr(imagefolder, "decode_images", counting)
    first = load_data(fx["tree"], val_size=50, cache_dir=tmp_path)
    assert calls == [N_TRAIN]  # search split: the test folder is not decoded
    cached = list((tmp_path / "imagefolder").glob("*.npz"))
    assert len(cached) == 1 and cached[0].name.startswith("tree-train-")
    second = load_data(fx["tree"], val_size=50, cache_dir=tmp_path)
    assert calls == [N_TRAIN]
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.val.labels, second.val.labels)
    final = load_data(fx["tree"], split="final", cache_dir=tmp_path)
    assert calls == [N_TRAIN, N_TEST] and len(final.test) == N_TEST

    # a changed file (new mtime) misses the cache and replaces the stale entry
    tree = tmp_path / "tree2"
    write_imagefolder(tree, (fx["train"][0][:20], fx["train"][1][:20]), None)
    load_data(tree, val_size=5, cache_dir=tmp_path)
    png = sorted((tree / "train" / "bird").iterdir())[0]
    os.utime(png, ns=(1, 1))
    load_data(tree, val_size=5, cache_dir=tmp_path)
    assert calls == [N_TRAIN, N_TEST, 20, 20]
    assert len(list((tmp_path / "imagefolder").glob("tree2-train-*.npz"))) == 1


def test_corrupt_cache_file_is_rebuilt(fx, tmp_path):
    load_data(fx["tree"], val_size=50, cache_dir=tmp_path)
    (cache_file,) = (tmp_path / "imagefolder").glob("*.npz")
    cache_file.write_bytes(b"garbage")
    s = load_data(fx["tree"], val_size=50, cache_dir=tmp_path)
    assert len(s.train) == 200 and cache_file.stat().st_size > 1000


# --- DataError cases -------------------------------------------------------------------------

def test_missing_path(tmp_path):
    msg = _error(tmp_path / "nope", "does not exist")
    assert str(tmp_path / "nope") in msg


def test_empty_folder(tmp_path):
    _error(tmp_path, f"data folder {tmp_path} is empty")


def test_unknown_folder_and_file(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    _error(tmp_path, "holds no data set nasforge reads")
    _error(tmp_path / "x.txt", "is not a data set nasforge reads")


def test_imagefolder_without_classes(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    _error(tmp_path, "has no class folders")


def test_class_folder_without_images(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "dog").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "cat" / "0.png")
    (tmp_path / "train" / "dog" / "readme.txt").write_text("no images")
    msg = _error(tmp_path, "has no images", cache_dir=tmp_path / "c")
    assert str(tmp_path / "train" / "dog") in msg


def test_unreadable_image_is_named(tmp_path):
    for i in range(3):
        (tmp_path / "train" / "cat").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (i, i, i)).save(tmp_path / "train" / "cat" / f"{i}.png")
    bad = tmp_path / "train" / "cat" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    msg = _error(tmp_path, "cannot read image", cache_dir=tmp_path / "c")
    assert str(bad) in msg


def test_truncated_jpeg_is_named(tmp_path):
    d = tmp_path / "train" / "cat"
    d.mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "0.jpg")
    data = (d / "0.jpg").read_bytes()
    (d / "1.jpg").write_bytes(data[: len(data) // 2])
    msg = _error(tmp_path, "cannot read image", cache_dir=tmp_path / "c")
    assert str(d / "1.jpg") in msg


def test_mixed_image_sizes(tmp_path):
    d = tmp_path / "train" / "cat"
    d.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(d / "a.png")
    Image.new("RGB", (8, 7)).save(d / "b.png")
    msg = _error(tmp_path, "all images must share one size", cache_dir=tmp_path / "c")
    assert f"image {d / 'b.png'} is 8x7 but {d / 'a.png'} is 8x8" in msg


def test_large_images_are_refused(tmp_path):
    d = tmp_path / "train" / "cat"
    d.mkdir(parents=True)
    Image.new("RGB", (65, 40)).save(d / "big.png")
    _error(tmp_path, r"is 65x40: the in-memory loader takes images up to 64x64",
           cache_dir=tmp_path / "c")


def test_test_class_not_in_train_and_missing_test_split(tmp_path):
    for split, cls in (("train", "cat"), ("test", "cow")):
        (tmp_path / split / cls).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / split / cls / "0.png")
    _error(tmp_path, "class folder.*cow.*that train/ lacks", split="final",
           cache_dir=tmp_path / "c")
    other = tmp_path / "only-train"
    (other / "train" / "cat").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(other / "train" / "cat" / "0.png")
    _error(other, "neither test/ nor val/", split="final", cache_dir=tmp_path / "c")


def test_corrupt_and_truncated_archives(fx, tmp_path):
    garbage = tmp_path / "cifar-10-python.tar.gz"
    garbage.write_bytes(os.urandom(2048))
    msg = _error(garbage, "corrupt or truncated archive")
    assert str(garbage) in msg
    data = fx["archive"].read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    msg = _error(cut, "corrupt or truncated archive")
    assert str(cut) in msg


def test_archive_without_cifar_members(tmp_path):
    import tarfile

    (tmp_path / "f.txt").write_text("x")
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "f.txt", arcname="f.txt")
    _error(tmp_path / "other.tar.gz", "not a CIFAR-10 python archive: it lacks data_batch_1")


def test_cifar_folder_missing_batch_and_corrupt_batch(fx, tmp_path):
    import shutil

    folder = shutil.copytree(fx["folder"], tmp_path / "c")
    (folder / "data_batch_3").unlink()
    _error(folder, f"CIFAR-10 folder {folder} lacks data_batch_3")
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    _error(folder, "corrupt CIFAR-10 file .*data_batch_3")


def test_cifar_pickle_with_foreign_globals_is_rejected(fx, tmp_path):
    import shutil

    folder = shutil.copytree(fx["folder"], tmp_path / "c")
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": os.system}))
    _error(folder, "corrupt CIFAR-10 file .*data_batch_2.*forbidden global")


def test_val_size_too_large_and_bad_split(fx, tmp_path):
    msg = _error(fx["folder"], "val_size 250 must be between 1 and 249", val_size=N_TRAIN)
    assert str(fx["folder"].resolve()) in msg
    _error(fx["folder"], "unknown split", split="test")


# --- "cifar10": cache lookup and download ------------------------------------------------------

def test_cifar10_offline_message(tmp_path, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar, "_fetch", offline)
    msg = _error("cifar10", "downloading .* failed", cache_dir=tmp_path)
    assert "an existing copy as the data path" in msg and str(tmp_path) in msg
    assert "name resolution" in msg
    assert not list(tmp_path.iterdir())  # no partial file left


def test_cifar10_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NASFORGE_CACHE", str(tmp_path / "envcache"))
    seen = []

    def offline(url, dest):
        seen.append(dest)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(cifar, "_fetch", offline)
    _error("cifar10", "an existing copy as the data path")
    assert seen == [tmp_path / "envcache" / "cifar-10-python.tar.gz.part"]


def test_cifar10_download_is_verified_then_cached(fx, tmp_path, monkeypatch):
    payload = fx["archive"].read_bytes()
    fetched = []

    def fake_fetch(url, dest):
        fetched.append(url)
        dest.write_bytes(payload)

    monkeypatch.setattr(cifar, "_fetch", fake_fetch)
    _error("cifar10", "fails its checksum", cache_dir=tmp_path)  # official sums do not match
    assert not list(tmp_path.iterdir())
    import hashlib

    # the fixture's digests are passed in; the shipped official ones stay as they are
    fixture = (hashlib.sha256(payload).hexdigest(), hashlib.md5(payload).hexdigest())
    for wrong in ((fixture[0], cifar.MD5), (cifar.SHA256, fixture[1])):  # both must match
        with pytest.raises(DataError, match="fails its checksum"):
            cifar.locate_or_download(tmp_path, wrong)
    assert not list(tmp_path.iterdir())
    assert cifar.locate_or_download(tmp_path, fixture) == tmp_path / "cifar-10-python.tar.gz"
    s = load_data("cifar10", split="final", cache_dir=tmp_path)
    assert fetched == [cifar.URL] * 4
    assert s.source == str((tmp_path / "cifar-10-python.tar.gz").resolve())
    np.testing.assert_array_equal(_np(s.test.images), fx["test"][0])
    load_data("cifar10", cache_dir=tmp_path, val_size=10)
    assert len(fetched) == 4  # found in the cache, not fetched again


def test_cifar10_checksums_are_the_published_ones():
    """The digests nasforge checks a download against are the official archive's, as
    torchvision (CIFAR10.tgz_md5) and Keras (cifar10.load_data's file_hash) publish them."""
    import torchvision

    assert cifar.MD5 == torchvision.datasets.CIFAR10.tgz_md5 == "c58f30108f718f92721af3b95e74349a"
    assert cifar.SHA256 == "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    assert cifar.URL == torchvision.datasets.CIFAR10.url
    assert cifar.ARCHIVE_NAME == torchvision.datasets.CIFAR10.filename


def test_cifar10_uses_an_extracted_copy_in_the_cache(fx, tmp_path, monkeypatch):
    import shutil

    def no_network(url, dest):
        raise AssertionError("must not download")

    monkeypatch.setattr(cifar, "_fetch", no_network)
    shutil.copytree(fx["folder"], tmp_path / "cifar-10-batches-py")
    s = load_data("cifar10", val_size=10, cache_dir=tmp_path)
    assert s.source == str((tmp_path / "cifar-10-batches-py").resolve()) and len(s.val) == 10


# --- DeviceLoader ----------------------------------------------------------------------------

MEAN, STD = (0.25, 0.5, 0.75), (0.5, 0.25, 0.125)


def _norm(x: np.ndarray) -> np.ndarray:
    m = np.array(MEAN)[None, :, None, None]
    s = np.array(STD)[None, :, None, None]
    return (x.astype(np.float64) / 255 - m) / s


def _tiny(n=7, c=3, h=6, w=5):
    images = torch.arange(n * c * h * w, dtype=torch.int64).remainder(251).to(torch.uint8)
    return ImageData(images.view(n, c, h, w), torch.arange(n, dtype=torch.int64) * 10)


def test_eval_loader_is_ordered_normalised_and_keeps_last_batch():
    data = _tiny()
    loader = DeviceLoader(data, 3, train=False, mean=MEAN, std=STD)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [3, 3, 1]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (7, 3, 6, 5) and x.is_contiguous()
    np.testing.assert_allclose(x.numpy(), _norm(data.images.numpy()), rtol=0, atol=1e-5)
    assert torch.equal(torch.cat([b[1] for b in batches]), data.labels)
    again = torch.cat([b[0] for b in loader])
    assert torch.equal(x, again)  # deterministic, unshuffled, no augmentation


def _hand_batches(data, batch_size, seed, p, pad_mode, flip, cutout):
    """The documented draws, replayed; crops/flips/cutout computed with numpy per image."""
    x = data.images.numpy()
    n, c, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).numpy()
    shift = torch.randint(-p, p + 1, (n, 2), generator=g).numpy() if p else np.zeros((n, 2), int)
    flips = torch.randint(0, 2, (n,), generator=g).numpy() if flip else np.zeros(n, int)
    if cutout:
        cy = torch.randint(0, h, (n,), generator=g).numpy()
        cx = torch.randint(0, w, (n,), generator=g).numpy()
    mode = "reflect" if pad_mode == "reflect" else "constant"
    out = []
    for i, k in enumerate(perm):
        padded = np.pad(x[k], ((0, 0), (p, p), (p, p)), mode=mode)
        dy, dx = shift[i]
        img = padded[:, p + dy:p + dy + h, p + dx:p + dx + w]
        if flips[i]:
            img = img[:, :, ::-1]
        img = _norm(img[None])[0]
        if cutout:
            y0, x0 = cy[i] - cutout // 2, cx[i] - cutout // 2
            img[:, max(0, y0):max(0, y0 + cutout), max(0, x0):max(0, x0 + cutout)] = 0
        out.append(img)
    out = np.stack(out)
    labels = data.labels.numpy()[perm]
    nb = n // batch_size
    return [(out[i * batch_size:(i + 1) * batch_size], labels[i * batch_size:(i + 1) * batch_size])
            for i in range(nb)]


@pytest.mark.parametrize("pad_mode,p,flip,cutout", [("reflect", 2, True, 0), ("zero", 3, True, 0),
                                                    ("reflect", 0, False, 3),
                                                    ("zero", 1, True, 4)])
def test_train_batches_match_hand_computation(pad_mode, p, flip, cutout):
    data = _tiny()
    loader = DeviceLoader(data, 3, mean=MEAN, std=STD, crop_padding=p, pad_mode=pad_mode,
                          flip=flip, cutout=cutout, generator=torch.Generator().manual_seed(5))
    assert len(loader) == 2  # drop_last defaults to True when training
    got = list(loader)
    want = _hand_batches(data, 3, 5, p, pad_mode, flip, cutout)
    assert len(got) == len(want) == 2
    for (x, y), (ex, ey) in zip(got, want):
        assert x.shape == (3, 3, 6, 5) and x.dtype == torch.float32 and y.dtype == torch.int64
        np.testing.assert_allclose(x.numpy(), ex, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(y.numpy(), ey)


def test_train_loader_reads_the_set_in_place_and_keeps_no_padded_copy():
    # a search child's loader must not hold a private copy of the images Ray shares among the
    # workers (it used to keep them padded and mirrored: 3.1x the set for CIFAR)
    data = _tiny(n=64)
    loader = DeviceLoader(data, 16, mean=MEAN, std=STD, crop_padding=4, flip=True, cutout=2,
                          generator=torch.Generator().manual_seed(0))
    assert loader.images.untyped_storage().data_ptr() == \
        data.images.untyped_storage().data_ptr()
    own = sum(v.untyped_storage().nbytes() for v in vars(loader).values()
              if isinstance(v, torch.Tensor) and v.untyped_storage().data_ptr() !=
              data.images.untyped_storage().data_ptr())
    assert own < data.images.nbytes  # labels, normalisation constants, index ranges
    assert len(list(loader)) == 4


def test_augmentation_really_crops_and_flips():
    data = _tiny(n=64)
    loader = DeviceLoader(data, 64, mean=MEAN, std=STD, crop_padding=2,
                          generator=torch.Generator().manual_seed(0))
    ((x, y),) = list(loader)
    plain = torch.from_numpy(_norm(data.images.numpy())).float()[y // 10]
    same = [(x[i] - plain[i]).abs().max().item() < 1e-5 for i in range(64)]
    flipped = [(x[i] - plain[i].flip(-1)).abs().max().item() < 1e-5 for i in range(64)]
    assert 0 < sum(same) < 16 and sum(flipped) < 16  # most images are shifted


def test_cutout_zeros_one_square():
    data = ImageData(torch.full((4, 3, 12, 12), 200, dtype=torch.uint8), torch.zeros(4).long())
    loader = DeviceLoader(data, 4, mean=MEAN, std=STD, crop_padding=0, flip=False, cutout=4,
                          generator=torch.Generator().manual_seed(1))
    ((x, _),) = list(loader)
    g = torch.Generator().manual_seed(1)
    torch.randperm(4, generator=g)
    cy, cx = torch.randint(0, 12, (4,), generator=g), torch.randint(0, 12, (4,), generator=g)
    for i in range(4):
        zero = (x[i] == 0).all(0)
        assert (zero == (x[i] == 0).any(0)).all()  # all channels together
        rows = torch.nonzero(zero.any(1)).flatten().tolist()
        cols = torch.nonzero(zero.any(0)).flatten().tolist()
        y0, x0 = int(cy[i]) - 2, int(cx[i]) - 2
        assert rows == [r for r in range(y0, y0 + 4) if 0 <= r < 12]
        assert cols == [c for c in range(x0, x0 + 4) if 0 <= c < 12]
        assert int(zero.sum()) == len(rows) * len(cols)
        grey = torch.tensor(_norm(np.full((1, 3, 1, 1), 200)).ravel(), dtype=torch.float32)
        assert torch.allclose(x[i][:, ~zero], grey[:, None])


def test_generator_state_round_trip_resumes_identically():
    data = _tiny(n=20)
    kw = dict(mean=MEAN, std=STD, crop_padding=2, cutout=2)
    a = DeviceLoader(data, 4, generator=torch.Generator().manual_seed(9), **kw)
    list(a)  # epoch 1
    state = a.state_dict()
    assert state["epoch"] == 1
    epoch2 = list(a)
    b = DeviceLoader(data, 4, generator=torch.Generator().manual_seed(123), **kw)
    b.load_state_dict(state)
    assert b.epoch == 1
    resumed = list(b)
    assert b.epoch == a.epoch == 2
    for (xa, ya), (xb, yb) in zip(epoch2, resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = list(a)  # epoch 3 differs from epoch 2
    assert not torch.equal(other[0][0], epoch2[0][0])


def test_channels_last_dtype_and_drop_last_options():
    data = _tiny(n=10)
    kw = dict(mean=MEAN, std=STD, crop_padding=1, cutout=2)
    ref = list(DeviceLoader(data, 4, generator=torch.Generator().manual_seed(2), **kw))
    cl = list(DeviceLoader(data, 4, generator=torch.Generator().manual_seed(2), channels_last=True,
                           **kw))
    for (x, _), (y, _) in zip(ref, cl, strict=True):
        assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)
    bf = list(DeviceLoader(data, 4, generator=torch.Generator().manual_seed(2),
                           dtype=torch.bfloat16, drop_last=False, **kw))
    assert [len(b[1]) for b in bf] == [4, 4, 2] and bf[0][0].dtype == torch.bfloat16
    torch.testing.assert_close(bf[0][0].float(), ref[0][0], atol=0.05, rtol=0.01)
    ev = DeviceLoader(data, 4, train=False, mean=MEAN, std=STD, channels_last=True)
    assert next(iter(ev))[0].is_contiguous(memory_format=torch.channels_last)


def test_loader_rejects_bad_arguments():
    data = _tiny()
    with pytest.raises(ValueError, match="explicit torch.Generator"):
        DeviceLoader(data, 2, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="one per channel"):
        DeviceLoader(data, 2, train=False, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="reflect padding 5"):
        DeviceLoader(data, 2, mean=MEAN, std=STD, crop_padding=5,
                     generator=torch.Generator())


def test_loader_on_loaded_splits(fx, tmp_path):
    s = load_data(fx["folder"], val_size=50, cache_dir=tmp_path)
    train = DeviceLoader(s.train, 32, mean=s.mean, std=s.std, cutout=8,
                         generator=torch.Generator().manual_seed(0))
    val = DeviceLoader(s.val, 32, train=False, mean=s.mean, std=s.std)
    assert len(train) == 200 // 32 and len(val) == 2
    xs = torch.cat([x for x, _ in val])
    assert xs.shape == (50, 3, 32, 32)
    val_mean = (s.val.images.double() / 255).mean(dim=(0, 2, 3))
    expected = (val_mean - torch.tensor(s.mean)) / torch.tensor(s.std)
    torch.testing.assert_close(xs.double().mean(dim=(0, 2, 3)), expected, atol=1e-5, rtol=0)
    x, y = next(iter(train))
    assert x.shape == (32, 3, 32, 32) and y.shape == (32,)
