"""CIFAR-10 in the official python format: a folder, the ``.tar.gz`` archive, or a download.

The official release (https://www.cs.toronto.edu/~kriz/cifar.html) is ``cifar-10-python.tar.gz``
holding ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``: pickled dicts with
``b'data'`` (N x 3072 uint8, rows R..G..B of 32x32 each), ``b'labels'`` and, in the meta file,
``b'label_names'``. The pickles are read with a restricted unpickler that only rebuilds numpy
arrays, so a crafted file cannot run code. Archives are read member by member straight from the
(gzip) stream; nothing is extracted.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from nasforge.data.types import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
# the official archive's digests: SHA-256 as Keras' cifar10.load_data checks it (file_hash),
# MD5 as torchvision's CIFAR10 (tgz_md5); tests/test_data.py compares both with those sources
SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_BYTES = 170_498_071

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
MEMBERS = (*TRAIN_BATCHES, TEST_BATCH, META)

_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/bytes/numpy arrays only (no arbitrary globals)."""

    def find_class(self, module, name):
        if module.startswith("numpy.core"):  # numpy 1.x pickles; numpy 2 renamed the module
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError:  # numpy 1.x has no numpy._core
            return getattr(importlib.import_module(module.replace("numpy._core", "numpy.core")),
                           name)


def _unpickle(raw: bytes, what: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise DataError(f"corrupt CIFAR-10 file {what}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise DataError(f"corrupt CIFAR-10 file {what}: expected a pickled dict, "
                        f"got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _parse_meta(raw: bytes, what: str) -> tuple[str, ...]:
    names = _unpickle(raw, what).get("label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"corrupt CIFAR-10 file {what}: no label_names")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _parse_batch(raw: bytes, what: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(raw, what)
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"corrupt CIFAR-10 file {what}: no data/labels arrays")
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"corrupt CIFAR-10 file {what}: data is {data.dtype} "
                        f"{data.shape}, expected uint8 (N, 3072)")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"corrupt CIFAR-10 file {what}: {len(data)} images but labels of "
                        f"shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"corrupt CIFAR-10 file {what}: label {int(labels.max())} outside "
                        f"0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _assemble(raw: dict[str, bytes], where: str, with_test: bool):
    classes = _parse_meta(raw[META], f"{where}/{META}")
    parts = [_parse_batch(raw[b], f"{where}/{b}", len(classes)) for b in TRAIN_BATCHES]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _parse_batch(raw[TEST_BATCH], f"{where}/{TEST_BATCH}", len(classes)) \
        if with_test else None
    return train, test, classes


def read_folder(folder: Path, with_test: bool = True):
    """Read a ``cifar-10-batches-py`` folder: ``((x, y), (x_test, y_test) | None, classes)``."""
    raw = {}
    for name in MEMBERS:
        if name == TEST_BATCH and not with_test:
            continue
        path = folder / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 folder {folder} lacks {name}")
        try:
            raw[name] = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _assemble(raw, str(folder), with_test)


def read_archive(path: Path, with_test: bool = True):
    """Read the official ``cifar-10-python.tar.gz`` (any member prefix) without extracting."""
    wanted = set(MEMBERS) if with_test else set(MEMBERS) - {TEST_BATCH}
    raw: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:  # streaming: one pass over the gzip data
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in wanted and name not in raw:
                    f = tar.extractfile(member)
                    raw[name] = f.read() if f is not None else b""
                    if len(raw) == len(wanted):
                        break
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DataError(f"corrupt or truncated archive {path}: {msg}") from None
    missing = [m for m in MEMBERS if m in wanted and m not in raw]
    if missing:
        raise DataError(f"archive {path} is not a CIFAR-10 python archive: it lacks "
                        f"{', '.join(missing)}")
    return _assemble(raw, str(path), with_test)


def is_cifar_folder(folder: Path) -> bool:
    return (folder / META).is_file() or (folder / TRAIN_BATCHES[0]).is_file()


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (tests replace this function; they never touch the network)."""
    request = urllib.request.Request(url, headers={"User-Agent": "nasforge"})
    with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def locate_or_download(cache_dir: Path, digests: tuple[str, str] = (SHA256, MD5)) -> Path:
    """The CIFAR-10 copy in ``cache_dir`` (folder or archive); download the archive if absent.

    The download goes to ``<archive>.part``, is checked against ``digests`` (SHA-256, MD5; the
    official archive's unless a test passes its fixture's) and only then renamed, so a cache
    never holds a partial or wrong archive.
    """
    for candidate in (cache_dir / FOLDER_NAME, cache_dir / ARCHIVE_NAME):
        if candidate.is_dir() and is_cifar_folder(candidate) or candidate.is_file():
            return candidate
    archive = cache_dir / ARCHIVE_NAME
    part = cache_dir / (ARCHIVE_NAME + ".part")
    hint = (f"give an existing copy as the data path (a {FOLDER_NAME} folder, "
            f"{ARCHIVE_NAME} or an ImageFolder tree), or place {ARCHIVE_NAME} in {cache_dir}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"CIFAR-10 is not cached and the cache folder {cache_dir} cannot be "
                        f"created ({exc.strerror or exc}); {hint}", options=("data",)) from None
    print(f"nasforge: downloading CIFAR-10 ({ARCHIVE_BYTES / 1e6:.0f} MB) from {URL} "
          f"to {cache_dir}", file=sys.stderr)
    try:
        _fetch(URL, part)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise DataError(f"CIFAR-10 is not in {cache_dir} and downloading {URL} failed "
                        f"({reason}); {hint}", options=("data",)) from None
    sha, md5 = _digests(part)
    if (sha, md5) != tuple(digests):
        part.unlink(missing_ok=True)
        raise DataError(f"downloaded {URL} fails its checksum (sha256 {sha}, expected "
                        f"{digests[0]}); "
                        f"the partial file was removed; {hint}", options=("data",))
    os.replace(part, archive)
    return archive
