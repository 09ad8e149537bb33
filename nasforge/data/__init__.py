"""Data for child-model training: readers, splits and the device-resident loader.

``load_data(source, split=...)`` reads CIFAR-10 (python folder, ``.tar.gz`` or a checksummed
download into the cache), ImageFolder trees of small images (decoded once, cached as uint8) and
a synthetic set, and returns :class:`DataSplits`; :class:`DeviceLoader` serves augmented,
normalised batches from a copy of the uint8 set on the training device.
"""
from nasforge.data.load import default_cache_dir, load_data, make_splits
from nasforge.data.loader import DeviceLoader
from nasforge.data.types import DataError, DataSplits, ImageData

__all__ = ["load_data", "DataError", "DeviceLoader", "ImageData", "DataSplits",
           "default_cache_dir", "make_splits"]
