"""Streaming ImageFolder data for large images (ImageNet): decoded per epoch by DataLoader workers.

The in-memory path (``load_data`` + :class:`~nasforge.data.DeviceLoader`) holds a whole uint8
set on the device and suits CIFAR-sized images; ImageNet does not fit, so this module reads an
ImageFolder tree (``ROOT/train/<class>/<image>``, ``ROOT/val/<class>/<image>``) with
torchvision's ``ImageFolder``, decodes and augments in ``DataLoader`` worker processes and
hands uint8 batches to the training device, where they are normalised:

- training: ``RandomResizedCrop(image_size, scale=(min_crop_scale, 1))`` + horizontal flip;
- evaluation: ``Resize(round(image_size / eval_crop_ratio))`` (short side) +
  ``CenterCrop(image_size)`` (0.875 = the usual 256 -> 224);
- normalisation with the ImageNet mean/std on the device (``(x / 255 - mean) / std``).

Data parallelism: the training set is sharded with ``DistributedSampler`` (one permutation per
epoch from ``seed``; rank ``r`` of ``w`` takes positions ``r, r + w, ...``), each rank loads
``global batch / w`` images per step, so every step's global batch is one contiguous slice of
the epoch's permutation. Evaluation shards without padding (rank ``r`` takes images
``r, r + w, ...``) and the trainer all-reduces the sums, so every image counts once.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from nasforge.data.imagefolder import IMG_EXTENSIONS, class_folders
from nasforge.data.types import DataError, fixed_subset_indices

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _has_image(folder: Path) -> bool:
    for path in folder.rglob("*"):
        if path.suffix.lower() in IMG_EXTENSIONS and not path.name.startswith("."):
            return True
    return False


def check_imagefolder(root, val_split: str = "val") -> tuple[str, ...]:
    """The class names of an ImageFolder tree with ``train/`` and ``<val_split>/``; raises
    :class:`DataError` (one line) for a missing folder or split, class folders that differ
    between the splits, or a class folder without images."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder (expected an ImageFolder tree: "
                        f"{root}/train/<class>/<image> and {root}/{val_split}/<class>/<image>)")
    train_dir, val_dir = root / "train", root / val_split
    if not train_dir.is_dir():
        raise DataError(f"data folder {root} has no train/ folder (expected "
                        f"{root}/train/<class>/<image> and {root}/{val_split}/<class>/<image>)")
    if not val_dir.is_dir():
        hint = "".join(f"; it has {alt}/: use val_split {alt!r}" for alt in ("val", "test")
                       if alt != val_split and (root / alt).is_dir())
        raise DataError(f"data folder {root} has no {val_split}/ folder (expected "
                        f"{root}/{val_split}/<class>/<image>){hint}",
                        options=("val_split",) if hint else ())
    classes = class_folders(train_dir)
    if not classes:
        raise DataError(f"{train_dir} has no class folders (expected {train_dir}/<class>/<image>)")
    val_classes = class_folders(val_dir)
    if classes != val_classes:
        only_train = sorted(set(classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(classes))
        parts = []
        if only_train:
            parts.append(f"only in train/: {', '.join(only_train[:5])}"
                         + (f" (+{len(only_train) - 5} more)" if len(only_train) > 5 else ""))
        if only_val:
            parts.append(f"only in {val_split}/: {', '.join(only_val[:5])}"
                         + (f" (+{len(only_val) - 5} more)" if len(only_val) > 5 else ""))
        raise DataError(f"class folders differ between {train_dir} and {val_dir}: "
                        f"{'; '.join(parts)}")
    for split_dir in (train_dir, val_dir):
        for c in classes:
            if not _has_image(split_dir / c):
                raise DataError(f"class folder {split_dir / c} has no images "
                                f"({', '.join(IMG_EXTENSIONS)})")
    return tuple(classes)


class StreamLoader:
    """Batches of a torch ``DataLoader`` of uint8 images, moved to ``device`` and normalised
    there. ``state_dict()`` is the epoch counter: the sampler's permutation of an epoch depends
    only on ``(seed, epoch)``, so a run resumed after epoch ``k`` sees the same order."""

    def __init__(self, loader, device, *, sampler=None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32):
        self.loader, self.sampler = loader, sampler
        self.device = torch.device(device)
        self.epoch = 0
        self.dtype = dtype
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        std_t = torch.tensor(std, dtype=torch.float64)
        self._scale = (1.0 / (255.0 * std_t)).to(self.device, dtype).view(1, -1, 1, 1)
        self._bias = (-torch.tensor(mean, dtype=torch.float64) / std_t).to(
            self.device, dtype).view(1, -1, 1, 1)
        self.batch_size = loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        non_blocking = self.device.type == "cuda"
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=non_blocking)
            x = x.to(self.dtype, memory_format=self.fmt).mul_(self._scale).add_(self._bias)
            yield x, y.to(self.device, non_blocking=non_blocking)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])


class ImageFolderStream:
    """An ImageFolder tree (``train/`` + ``val_split``) served by DataLoader workers; pass it
    to :func:`nasforge.train.train` in place of a ``DataSplits``.

    ``workers``: DataLoader worker processes per training process (default: the recipe's
    ``data_workers``; 0 decodes in the training process). ``image_size`` overrides the
    recipe's. The evaluation split is reported as ``val``.
    """

    def __init__(self, root, *, val_split: str = "val", image_size: int | None = None,
                 workers: int | None = None, check: bool = True):
        self.root = Path(root).expanduser().resolve()
        self.val_split = val_split
        self.classes = check_imagefolder(self.root, val_split) if check else \
            tuple(class_folders(self.root / "train"))
        self.image_size = image_size
        self.workers = workers
        self.source, self.format, self.split = str(self.root), "imagefolder-stream", "final"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"ImageFolderStream({str(self.root)!r}, train + {self.val_split}, "
                f"{self.num_classes} classes)")

    def transforms(self, recipe):
        from torchvision import transforms as T

        size = int(self.image_size or recipe.augmentation.image_size)
        resize = int(math.floor(size / recipe.augmentation.eval_crop_ratio + 0.5))
        train_tf = [T.RandomResizedCrop(size, scale=(recipe.augmentation.min_crop_scale, 1.0),
                                        antialias=True)]
        if recipe.augmentation.flip:
            train_tf.append(T.RandomHorizontalFlip())
        train_tf.append(T.PILToTensor())
        eval_tf = T.Compose([T.Resize(resize, antialias=True), T.CenterCrop(size),
                             T.PILToTensor()])
        return T.Compose(train_tf), eval_tf

    def datasets(self, recipe):
        from torchvision.datasets import ImageFolder

        train_tf, eval_tf = self.transforms(recipe)
        train = ImageFolder(str(self.root / "train"), transform=train_tf,
                            loader=_rgb_loader)
        val = ImageFolder(str(self.root / self.val_split), transform=eval_tf,
                          loader=_rgb_loader)
        if train.classes != list(self.classes) or val.class_to_idx != train.class_to_idx:
            raise DataError(f"class folders of {self.root} changed while loading")
        return train, val

    def make_loaders(self, recipe, *, device, seed: int, rank: int = 0, world: int = 1,
                     channels_last: bool = False):
        """``(train_loader, {"val": loader})`` for this rank (the trainer's protocol)."""
        from torch.utils.data import DataLoader, DistributedSampler, Subset

        device = torch.device(device)
        train, val = self.datasets(recipe)
        train = _fixed_subset(train, recipe.inputs.train_subset)
        val = _fixed_subset(val, recipe.inputs.eval_subset)
        global_batch = min(recipe.schedule.batch_size, len(train))
        global_batch -= global_batch % world
        if global_batch < world:
            raise DataError(f"{len(train)} training images cannot be shared by {world} "
                            f"workers")
        workers = recipe.speed.data_workers if self.workers is None else self.workers
        common = dict(num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)
        if workers > 0:
            common["prefetch_factor"] = 4
        sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True,
                                     seed=seed, drop_last=False)
        train_loader = DataLoader(train, batch_size=global_batch // world, sampler=sampler,
                                  drop_last=True, **common)
        val_part = Subset(val, range(rank, len(val), world))
        val_loader = DataLoader(val_part, batch_size=max(1, recipe.speed.eval_batch_size // world),
                                shuffle=False, drop_last=False, **common)
        return (StreamLoader(train_loader, device, sampler=sampler, channels_last=channels_last),
                {"val": StreamLoader(val_loader, device, channels_last=channels_last)})


def _fixed_subset(dataset, n: int | None):
    """``n`` items drawn without replacement by a fixed seed (source order kept), the same
    on every rank; the whole set when ``n`` is None or not smaller."""
    from torch.utils.data import Subset

    pick = fixed_subset_indices(len(dataset), n)
    return dataset if pick is None else Subset(dataset, pick.tolist())


def _rgb_loader(path: str):
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise DataError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from None
