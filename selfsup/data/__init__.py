"""Sources of uint8 images and labels.

Every data set yields ``(image, label, index)`` items (image: uint8 tensor (C, H, W); label: int,
-1 when unknown; index: the item's position) and exposes ``name``, ``channels``, ``num_classes``,
``classes``, ``mean``, ``std``, ``image_size`` and ``labels``. Workers only decode; augmentation
happens later, batched on the device.

Example:
    >>> from selfsup.data import get
    >>> image, label, index = get("digits")[0]
"""
from selfsup.data.arrays import ArrayDataset
from selfsup.data.cache import CachedFolder, cache_folder
from selfsup.data.folder import ImageFolder
from selfsup.data.protocol import ImageDataset, Sample
from selfsup.data.registry import DATASETS, describe, get, names
from selfsup.data.sampler import EpochShuffleSampler
from selfsup.data.shards import ShardStream, read_shards, shards_hold_files, write_shards
from selfsup.data.splits import DataSubset, split_train_val
from selfsup.data.whole_images import WholeImageView

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "CachedFolder",
    "DataSubset",
    "EpochShuffleSampler",
    "ImageDataset",
    "ImageFolder",
    "Sample",
    "ShardStream",
    "WholeImageView",
    "cache_folder",
    "describe",
    "get",
    "names",
    "read_shards",
    "shards_hold_files",
    "split_train_val",
    "write_shards",
]
