"""Builders of small on-disk data sets in the formats nasforge reads (no downloads).

Reusable from any test: ``make_images`` gives deterministic uint8 images, the ``write_*``
functions lay them out as the official CIFAR-10 python folder/archive or as an ImageFolder tree.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")


def make_images(n: int, *, seed: int = 0, size: int = 32, num_classes: int = 10):
    """``(images uint8 (n, 3, size, size), labels int64 (n,))``: random pixels, balanced labels
    in a shuffled order."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    return images, labels


def _batch_bytes(images, labels, name: str) -> bytes:
    return pickle.dumps({b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                         b"data": images.reshape(len(images), -1),
                         b"filenames": [f"{name}_{i}.png".encode() for i in range(len(images))]},
                        protocol=2)


def write_cifar_folder(root, train, test, classes=CIFAR_CLASSES) -> Path:
    """``root/cifar-10-batches-py/`` with ``data_batch_1..5`` (the train images split in five
    consecutive parts), ``test_batch`` and ``batches.meta``, as the official release."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = train
    for i, (xs, ys) in enumerate(zip(np.array_split(x, 5), np.array_split(y, 5)), start=1):
        (folder / f"data_batch_{i}").write_bytes(_batch_bytes(xs, ys, f"data_batch_{i}"))
    (folder / "test_batch").write_bytes(_batch_bytes(*test, "test_batch"))
    meta = {b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": len(x) // 5,
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    (folder / "readme.html").write_text("<html></html>")
    return folder


def write_cifar_archive(path, folder) -> Path:
    """``path`` = a ``.tar.gz`` of ``folder`` stored as ``cifar-10-batches-py/...``."""
    path = Path(path)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return path


def write_imagefolder(root, train, test, classes=CIFAR_CLASSES, *, ext: str = ".png",
                      test_name: str = "test") -> Path:
    """``root/train/<class>/<index>.png`` (index = position in ``train``) and the same for the
    test split under ``root/<test_name>``; ``test=None`` writes no test split."""
    from PIL import Image

    root = Path(root)
    for split, data in (("train", train), (test_name, test)):
        if data is None:
            continue
        x, y = data
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i, (img, label) in enumerate(zip(x, y)):
            Image.fromarray(img.transpose(1, 2, 0)).save(root / split / classes[label] /
                                                         f"{i:05d}{ext}")
    return root


def imagefolder_order(labels) -> np.ndarray:
    """Indices that put images in ImageFolder order (class, then file name = index)."""
    return np.lexsort((np.arange(len(labels)), np.asarray(labels)))


def archive_bytes_of(folder) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return buf.getvalue()
