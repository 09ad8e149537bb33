"""A run's data loaders: device-resident loaders of small-image splits (or a streaming
source's own), the recipe's training subset, and each rank's share in data-parallel runs."""
from __future__ import annotations

import torch

from nasforge.data import DeviceLoader, ImageData
from nasforge.data.types import fixed_subset_indices
from nasforge.train.placement import Placement
from nasforge.train.recipes import Recipe


def local_batch(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's contiguous share of a global batch (rank ``r`` of ``w``: rows
    ``r * b .. (r + 1) * b``, ``b = len(x) / w``): the data-parallel rule of ``train``."""
    local = len(x) // world
    return x[rank * local:(rank + 1) * local]


def image_subset(data: ImageData, n: int | None) -> ImageData:
    """``n`` images of ``data`` (``fixed_subset_indices``; all of them when ``n`` is None)."""
    pick = fixed_subset_indices(len(data), n)
    return data if pick is None else ImageData(data.images[pick], data.labels[pick])


class GlobalBatchShard:
    """Data parallelism over a :class:`DeviceLoader`: every rank draws the same global batches
    (same generator seed) and trains on its contiguous slice ``rank * b .. (rank + 1) * b`` of
    each, ``b = global batch / world``; the union over ranks of a step is the global batch."""

    def __init__(self, loader, rank: int, world: int):
        self.loader, self.rank, self.world = loader, rank, world
        if loader.batch_size % world:
            raise ValueError(f"global batch {loader.batch_size} is not divisible by "
                             f"{world} data-parallel workers")
        self.local = loader.batch_size // world

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield local_batch(x, self.rank, self.world), local_batch(y, self.rank, self.world)

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


class EvalShard:
    """Evaluation batches ``rank, rank + world, ...`` of a loader (sums are all-reduced)."""

    def __init__(self, loader, rank: int, world: int):
        self.loader, self.rank, self.world = loader, rank, world

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i % self.world == self.rank:
                yield batch


def make_loaders(data, recipe: Recipe, place: Placement, seed: int):
    """``(train_loader, {"val": loader, "test": loader})`` of this rank: a streaming source
    makes its own; small-image splits get device-resident loaders (the test split only when
    ``data.split == "final"``)."""
    if hasattr(data, "make_loaders"):  # a streaming source (large images, worker processes)
        return data.make_loaders(recipe, device=place.device, seed=seed, rank=place.rank,
                                 world=place.world, channels_last=place.channels_last)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    train_data = image_subset(data.train, recipe.inputs.train_subset)
    batch = min(recipe.schedule.batch_size, len(train_data))
    batch -= batch % place.world
    if batch < 1:
        raise ValueError(f"{len(train_data)} training images cannot be shared by "
                         f"{place.world} workers")
    common = dict(device=place.device, mean=data.mean, std=data.std,
                  channels_last=place.channels_last)
    aug = recipe.augmentation
    train_loader = DeviceLoader(train_data, batch, train=True,
                                crop_padding=aug.crop_padding, pad_mode=aug.pad_mode,
                                flip=aug.flip, flip_mode=aug.flip_mode,
                                cutout=aug.cutout, generator=gen, **common)
    eval_batch = recipe.speed.eval_batch_size
    eval_sets = {}
    if data.val is not None:
        eval_sets["val"] = DeviceLoader(data.val, eval_batch, train=False, **common)
    if data.test is not None and data.split == "final":
        eval_sets["test"] = DeviceLoader(data.test, eval_batch, train=False, **common)
    if place.world > 1:
        train_loader = GlobalBatchShard(train_loader, place.rank, place.world)
        eval_sets = {k: EvalShard(v, place.rank, place.world) for k, v in eval_sets.items()}
    return train_loader, eval_sets
