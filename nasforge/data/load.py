"""``load_data``: format detection, search/final splits and normalisation statistics."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

import nasforge.data.cifar as cifar
import nasforge.data.imagefolder as imagefolder
import nasforge.data.synthetic as synthetic
from nasforge.data.types import DataError, DataSplits, ImageData

FORMATS = ("cifar10-python", "imagefolder", "synthetic")
_TEST_FOLDERS = ("test", "val")


def default_cache_dir() -> Path:
    """``$NASFORGE_CACHE`` or ``~/.cache/nasforge``."""
    env = os.environ.get("NASFORGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nasforge"


def load_data(source, *, split: str = "search", val_size: int = 5000, seed: int = 0,
              cache_dir=None) -> DataSplits:
    """Load a data set and split it; called once per training run (search trial or final run).

    ``source``: ``"synthetic"``, ``"cifar10"`` (the copy in the cache folder, downloaded with
    checksum verification when missing) or a path, whose format is detected: a CIFAR-10 python
    folder (``data_batch_1..5``, ``test_batch``, ``batches.meta``, or a folder holding
    ``cifar-10-batches-py/``), the official ``cifar-10-python.tar.gz``, or an ImageFolder tree
    (``train/`` plus ``test/`` or ``val/``; ``test/`` wins when both exist). The two names take
    precedence over same-named folders in the working directory (write ``./cifar10``).

    ``split="search"``: ``val_size`` training images are held out for validation, stratified by
    class (per-class counts proportional to class frequency, largest remainders first), chosen
    by ``seed``; the test set is not loaded. ``split="final"``: the whole training set and the
    test set. Within each split, images keep the source order. ``mean``/``std`` are computed on
    the returned ``train`` split.

    ``cache_dir``: where ``"cifar10"`` is looked up/downloaded and decoded ImageFolder arrays are
    cached (default :func:`default_cache_dir`). Raises :class:`DataError` on any bad input.
    """
    if split not in ("search", "final"):
        raise DataError(f"unknown split {split!r} (expected 'search' or 'final')")
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)):
        raise DataError(f"val_size must be an integer, got {val_size!r}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    with_test = split == "final"
    name = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(name, str):
        raise DataError(f"data source must be a path or 'synthetic'/'cifar10', got {source!r}")

    if name == "synthetic":
        train, test, classes = synthetic.make_synthetic()
        fmt, resolved = "synthetic", "synthetic"
        if not with_test:
            test = None
    else:
        if name == "cifar10":
            path = cifar.locate_or_download(cache)
        else:
            path = Path(name).expanduser()
            if not path.exists():
                raise DataError(f"data path {path} does not exist")
        path = path.resolve()
        fmt, resolved = _detect(path)
        if fmt == "imagefolder":
            train, test, classes = _read_imagefolder(resolved, with_test, cache)
        elif resolved.is_dir():
            train, test, classes = cifar.read_folder(resolved, with_test)
        else:
            train, test, classes = cifar.read_archive(resolved, with_test)
        resolved = str(resolved)
    return make_splits(train, test, classes, split=split, val_size=int(val_size), seed=seed,
                       source=resolved, format=fmt)


def _detect(path: Path) -> tuple[str, Path]:
    if path.is_file():
        name = path.name.lower()
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            return "cifar10-python", path
        import tarfile

        try:
            is_tar = tarfile.is_tarfile(path)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
        if is_tar:
            return "cifar10-python", path
        raise DataError(f"{path} is not a data set nasforge reads (a CIFAR-10 python folder or "
                        f".tar.gz archive, or an ImageFolder tree)")
    if not path.is_dir():
        raise DataError(f"data path {path} is neither a file nor a folder")
    if cifar.is_cifar_folder(path):
        return "cifar10-python", path
    inner = path / cifar.FOLDER_NAME
    if inner.is_dir():
        return "cifar10-python", inner
    if (path / "train").is_dir():
        return "imagefolder", path
    archive = path / cifar.ARCHIVE_NAME
    if archive.is_file():
        return "cifar10-python", archive
    try:
        empty = not any(e for e in os.scandir(path) if not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list {path}: {exc.strerror or exc}") from None
    if empty:
        raise DataError(f"data folder {path} is empty")
    raise DataError(f"{path} holds no data set nasforge reads: expected CIFAR-10 python files "
                    f"(data_batch_1..5, test_batch, batches.meta), {cifar.FOLDER_NAME}/, "
                    f"{cifar.ARCHIVE_NAME} or an ImageFolder tree (train/ and test/ or val/)")


def _read_imagefolder(root: Path, with_test: bool, cache: Path):
    train_dir = root / "train"
    classes = tuple(imagefolder.class_folders(train_dir))
    if not classes:
        raise DataError(f"{train_dir} has no class folders (expected {train_dir}/<class>/<image>)")
    train = imagefolder.load_folder(train_dir, classes, cache)
    test = None
    if with_test:
        test_dir = next((root / t for t in _TEST_FOLDERS if (root / t).is_dir()), None)
        if test_dir is None:
            raise DataError(f"ImageFolder tree {root} has train/ but neither test/ nor val/ "
                            f"(needed for split='final')")
        test = imagefolder.load_folder(test_dir, classes, cache)
        if test[0].shape[1:] != train[0].shape[1:]:
            raise DataError(f"images in {test_dir} are {test[0].shape[3]}x{test[0].shape[2]} "
                            f"but those in {train_dir} are {train[0].shape[3]}x"
                            f"{train[0].shape[2]}: all images must share one size")
    return train, test, classes


def stratified_split(labels: np.ndarray, val_size: int, seed: int):
    """Sorted ``(train_idx, val_idx)``: ``val_size`` indices drawn per class in proportion.

    Per class ``c`` with ``n_c`` of ``N`` images: ``floor(val_size * n_c / N)`` plus one for the
    classes with the largest remainders (ties: lower class index). Which images of a class go
    to validation is a seeded permutation (``numpy.random.default_rng(seed)``).
    """
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    exact = val_size * counts / n
    quota = np.floor(exact).astype(np.int64)
    extra = val_size - int(quota.sum())
    order = np.lexsort((np.arange(len(classes)), -(exact - quota)))
    quota[order[:extra]] += 1
    rng = np.random.default_rng(seed)
    val = []
    for c, q in zip(classes, quota):
        members = np.flatnonzero(labels == c)
        val.append(members[rng.permutation(len(members))[:q]])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(n, bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[tuple, tuple]:
    """Per-channel mean and population std of uint8 (N, C, H, W) images, in 0..1 units.

    Exact: computed from per-channel histograms of the 256 pixel values.
    """
    c = images.shape[1]
    counts = torch.zeros(c, 256, dtype=torch.int64)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk]
        for k in range(c):
            counts[k] += torch.bincount(part[:, k].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum(1).to(torch.float64)
    mean = (counts * values).sum(1) / total
    var = ((counts * (values[None] - mean[:, None]) ** 2).sum(1) / total).clamp_min(0)
    return tuple(float(v) for v in mean), tuple(float(v) for v in var.sqrt())


def _image_data(x: np.ndarray, y: np.ndarray) -> ImageData:
    return ImageData(torch.from_numpy(np.ascontiguousarray(x)),
                     torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)))


def make_splits(train, test, classes, *, split: str = "search", val_size: int = 5000,
                seed: int = 0, source: str = "memory", format: str = "synthetic") -> DataSplits:
    """Build :class:`DataSplits` from ``train``/``test`` ``(images (N,C,H,W) uint8, labels)``
    numpy pairs (``test`` may be None for ``split="search"``); used by :func:`load_data` and by
    tests that need tiny data sets."""
    x, y = train
    if len(x) == 0:
        raise DataError(f"training set of {source} is empty")
    if split == "search":
        if not 0 < val_size < len(x):
            raise DataError(f"val_size {val_size} must be between 1 and {len(x) - 1}: the "
                            f"training set of {source} has {len(x)} images")
        train_idx, val_idx = stratified_split(y, val_size, seed)
        train_data = _image_data(x[train_idx], y[train_idx])
        val_data, test_data = _image_data(x[val_idx], y[val_idx]), None
    elif split == "final":
        if test is None:
            raise DataError(f"{source} has no test split")
        train_data, val_data, test_data = _image_data(x, y), None, _image_data(*test)
    else:
        raise DataError(f"unknown split {split!r} (expected 'search' or 'final')")
    mean, std = channel_stats(train_data.images)
    return DataSplits(train=train_data, val=val_data, test=test_data, classes=tuple(classes),
                      image_size=(int(x.shape[2]), int(x.shape[3])), mean=mean, std=std,
                      source=str(source), format=format, split=split)
