"""Data containers shared by the data readers, the device loader and the trainer."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from nasforge.errors import NasforgeError


class DataError(NasforgeError, ValueError):
    """Bad data input: a missing path, an unknown or corrupt format, unusable images.

    The message is one line that names the problem and the path; the CLI prints it and exits 2.
    """


def fixed_subset_indices(length: int, n: int | None):
    """Sorted indices of ``n`` of ``length`` items drawn without replacement by a fixed seed
    (the same in every process and rank, source order kept), or None for all of them. Not
    the first ``n``: those of an ImageFolder tree would all be of its first class."""
    if n is None or n >= length:
        return None
    return torch.randperm(length, generator=torch.Generator().manual_seed(0))[:n].sort().values


@dataclass(frozen=True, eq=False)
class ImageData:
    """A whole image set in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"ImageData.images must be a uint8 (N, C, H, W) tensor, got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"ImageData.labels must be an int64 (N,) tensor, got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"ImageData has {len(self.images)} images but "
                             f"{len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"ImageData({len(self)} x {tuple(self.images.shape[1:])} uint8)"

    def __reduce__(self):
        """Pickled as numpy arrays: Ray's object store hands numpy arrays to every worker of a
        node zero-copy (one shared read-only copy of the images per node), where a pickled
        tensor is deserialized into a private copy per worker (``tune.with_parameters`` ships
        a search's data to its children this way; measured in benchmarks/bench_memory.py)."""
        return (_image_data_from_numpy, (self.images.numpy(), self.labels.numpy()))


def _image_data_from_numpy(images, labels) -> ImageData:
    """Unpickling ``ImageData``: tensors viewing the arrays, no copy. Arrays from Ray's object
    store are read-only; nasforge never writes into a data set's images (the loaders copy what
    they augment), so the views are safe and torch's non-writable warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return ImageData(torch.from_numpy(images), torch.from_numpy(labels))


@dataclass(frozen=True, eq=False)
class DataSplits:
    """What :func:`nasforge.data.load_data` returns.

    ``split="search"``: ``train`` + ``val`` (held out of the training set), ``test`` is None.
    ``split="final"``: ``train`` = the whole training set, ``test`` = the test set, ``val`` None.
    ``mean``/``std`` are per-channel statistics of ``train`` in 0..1 units (population std),
    the values to hand to :class:`~nasforge.data.DeviceLoader`.
    """

    train: ImageData
    val: ImageData | None
    test: ImageData | None
    classes: tuple[str, ...]
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    format: str
    split: str = "search"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    def __repr__(self) -> str:
        parts = [f"train={len(self.train)}"]
        if self.val is not None:
            parts.append(f"val={len(self.val)}")
        if self.test is not None:
            parts.append(f"test={len(self.test)}")
        return (f"DataSplits({self.format} {self.source!r}, {', '.join(parts)}, "
                f"{self.num_classes} classes, {self.image_size[0]}x{self.image_size[1]})")
