"""ImageFolder trees of small images, decoded once with Pillow and cached as uint8 ``.npz``.

Layout (torchvision's ``ImageFolder``, the ImageNet layout): ``ROOT/train/<class>/<image>`` and
``ROOT/test/<class>/...`` (or ``ROOT/val/...``). Class index = position of the folder name in the
sorted list of ``train/``'s class folders; images are found recursively, in sorted path order,
by extension (torchvision's list, case-insensitive); other files and hidden entries are ignored.

Every image is converted to RGB. All images must share one size (no silent resizing) of at most
``MAX_SIDE`` pixels a side: bigger images (ImageNet) do not belong in an in-memory uint8 array
and need a streaming pipeline. A decoded folder is cached under
``<cache_dir>/imagefolder/<name>-<path hash>-<content hash>.npz``; the content hash covers the
folder's absolute path, the class list and every file's relative path, size and mtime, so any
change to the tree triggers a fresh decode (and replaces the stale cache file).
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import warnings
from pathlib import Path

import numpy as np

from nasforge.data.types import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MAX_SIDE = 64
CACHE_VERSION = "imagefolder-v1"
PARALLEL_MIN_FILES = 4096  # below this, a worker pool costs more than it saves


def class_folders(folder: Path) -> list[str]:
    try:
        entries = sorted(e.name for e in os.scandir(folder)
                         if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"cannot list {folder}: {exc.strerror or exc}") from None
    return entries


def scan(folder: Path, classes: tuple[str, ...]) -> tuple[list[str], list[int]]:
    """Image files (sorted within each class) and their class indices under ``folder``."""
    index = {c: i for i, c in enumerate(classes)}
    present = class_folders(folder)
    if not present:
        raise DataError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
    unknown = [c for c in present if c not in index]
    if unknown:
        raise DataError(f"{folder} has class folder(s) {', '.join(unknown)} that train/ lacks")
    files: list[str] = []
    labels: list[int] = []
    for name in present:
        found = []
        for dirpath, dirnames, filenames in os.walk(folder / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                         if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS))
        if not found:
            raise DataError(f"class folder {folder / name} has no images "
                            f"({', '.join(IMG_EXTENSIONS)})")
        found.sort()
        files.extend(found)
        labels.extend([index[name]] * len(found))
    return files, labels


def _open_rgb(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = im.size
            if max(size) > MAX_SIDE:
                raise DataError(f"image {path} is {size[0]}x{size[1]}: the in-memory loader "
                                f"takes images up to {MAX_SIDE}x{MAX_SIDE}; larger images "
                                f"(ImageNet) need a streaming pipeline")
            arr = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise DataError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
    return arr


def _decode_into(out: np.ndarray, paths: list[str], first: str) -> None:
    h, w = out.shape[1:3]
    for i, path in enumerate(paths):
        arr = _open_rgb(path)
        if arr.shape[:2] != (h, w):
            raise DataError(f"image {path} is {arr.shape[1]}x{arr.shape[0]} but {first} is "
                            f"{w}x{h}: all images must share one size (resize them first)")
        out[i] = arr


def _decode_chunk(args) -> np.ndarray:
    paths, shape, first = args
    out = np.empty((len(paths), *shape), np.uint8)
    _decode_into(out, paths, first)
    return out


def _workers() -> int:
    env = os.environ.get("NASFORGE_DECODE_WORKERS")
    if env is not None:
        return max(1, int(env))
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:
        return max(1, min(8, os.cpu_count() or 1))


def decode_images(paths: list[str]) -> np.ndarray:
    """Decode ``paths`` to one uint8 (N, H, W, 3) array (Pillow, RGB); checks sizes.

    Large lists are split over a fork-based process pool (``NASFORGE_DECODE_WORKERS`` overrides
    the worker count; 1 = serial).
    """
    first = _open_rgb(paths[0])
    out = np.empty((len(paths), *first.shape), np.uint8)
    out[0] = first
    rest = paths[1:]
    workers = _workers()
    if (workers > 1 and len(rest) >= PARALLEL_MIN_FILES
            and "fork" in multiprocessing.get_all_start_methods()):
        step = max(256, -(-len(rest) // (workers * 8)))
        chunks = [(rest[i:i + step], first.shape, paths[0]) for i in range(0, len(rest), step)]
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pos = 1
            for arr in pool.imap(_decode_chunk, chunks):
                out[pos:pos + len(arr)] = arr
                pos += len(arr)
    else:
        _decode_into(out[1:], rest, paths[0])
    return out


def _cache_key(folder: Path, classes, files: list[str], labels: list[int]) -> str:
    h = hashlib.sha256()
    h.update(f"{CACHE_VERSION}\0{folder}\0{chr(1).join(classes)}\0".encode())
    root = len(str(folder)) + 1
    for path, label in zip(files, labels):
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
        h.update(f"{path[root:]}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_prefix(folder: Path) -> str:
    name = "-".join(p for p in (folder.parent.name, folder.name) if p) or "root"
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"


def _read_cache(path: Path, n: int, classes):
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, cached_classes = z["images"], z["labels"], z["classes"]
    except Exception:  # noqa: BLE001 - any unreadable cache file is rebuilt
        return None
    if (images.dtype != np.uint8 or images.ndim != 4 or len(images) != n
            or labels.shape != (n,) or tuple(cached_classes.tolist()) != tuple(classes)):
        return None
    return images, labels.astype(np.int64)


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray, classes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels, classes=np.array(classes, dtype=str))
        os.replace(tmp, path)
        prefix = path.name.rsplit("-", 1)[0] + "-"
        for old in path.parent.glob(prefix + "*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"nasforge: cannot write the image cache {path}: {exc}", stacklevel=3)


def load_folder(folder: Path, classes: tuple[str, ...], cache_dir: Path | None):
    """``(images uint8 (N, 3, H, W), labels int64 (N,))`` of one split folder, via the cache."""
    folder = folder.absolute()
    files, labels = scan(folder, classes)
    cache_path = None
    if cache_dir is not None:
        key = _cache_key(folder, classes, files, labels)
        cache_path = cache_dir / "imagefolder" / f"{_cache_prefix(folder)}-{key[:20]}.npz"
        if cache_path.is_file():
            hit = _read_cache(cache_path, len(files), classes)
            if hit is not None:
                return hit
    images = np.ascontiguousarray(decode_images(files).transpose(0, 3, 1, 2))
    label_array = np.asarray(labels, dtype=np.int64)
    if cache_path is not None:
        _write_cache(cache_path, images, label_array, classes)
    return images, label_array
