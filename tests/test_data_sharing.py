"""A search's data reaches its Ray workers zero-copy: ImageData pickles its images as
out-of-band buffers (pickle protocol 5, what Ray's object store maps into every worker of a
node), and unpickling views those buffers instead of copying them."""
import pickle

import numpy as np
import torch

from nasforge.data.load import make_splits
from nasforge.data.types import ImageData


def _data():
    g = torch.Generator().manual_seed(0)
    return ImageData(torch.randint(0, 256, (20, 3, 8, 8), generator=g, dtype=torch.uint8),
                     torch.arange(20) % 10)


def test_images_travel_out_of_band_and_come_back_as_views():
    data = _data()
    buffers = []
    payload = pickle.dumps(data, protocol=5, buffer_callback=buffers.append)
    assert len(payload) < data.images.numel()  # the pixels are not in the pickle stream
    raw = [b.raw() for b in buffers]
    assert sum(r.nbytes for r in raw) >= data.images.numel()
    back = pickle.loads(payload, buffers=raw)
    assert torch.equal(back.images, data.images) and torch.equal(back.labels, data.labels)
    pixels = next(r for r in raw if r.nbytes == data.images.numel())
    assert np.shares_memory(back.images.numpy(), np.frombuffer(pixels, np.uint8))


def test_read_only_buffers_are_accepted_and_the_splits_round_trip():
    # Ray hands workers read-only buffers; a whole DataSplits must come back equal
    x = np.random.default_rng(0).integers(0, 256, (40, 3, 8, 8), dtype=np.uint8)
    y = np.arange(40) % 4
    splits = make_splits((x, y), None, tuple("abcd"), split="search", val_size=8)
    buffers = []
    payload = pickle.dumps(splits, protocol=5, buffer_callback=buffers.append)
    read_only = [memoryview(b.raw()).toreadonly() for b in buffers]
    back = pickle.loads(payload, buffers=read_only)
    assert torch.equal(back.train.images, splits.train.images)
    assert torch.equal(back.val.labels, splits.val.labels)
    assert back.mean == splits.mean and back.classes == splits.classes
