"""The built-in offline data set: scikit-learn's bundled 8x8 handwritten digits."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from selfsup.data.arrays import ArrayDataset, channel_stats
from selfsup.errors import ConfigError, close_matches

DIGITS_SPLITS = ("train", "test", "all")
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[Tensor, Tensor]:
    """All 1,797 images as uint8 (N, 1, 8, 8) in 0..255, and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(bunch.target.astype(np.int64))


@lru_cache(maxsize=1)
def _digits_split_indices() -> dict[str, Tensor]:
    """Sorted item indices of each split: a fixed, seeded, stratified 75/25 split."""
    from sklearn.model_selection import train_test_split

    _, labels = _digits_arrays()
    all_idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        all_idx, stratify=labels.numpy(), random_state=DIGITS_SPLIT_SEED, test_size=DIGITS_TEST_FRACTION
    )
    return {
        "train": torch.from_numpy(np.sort(train_idx)),
        "test": torch.from_numpy(np.sort(test_idx)),
        "all": torch.from_numpy(all_idx),
    }


def digits(split: str = "train") -> ArrayDataset:
    """scikit-learn's 8x8 grayscale handwritten digits (10 classes), bundled, no download.

    The 16 grey levels (0..16) are scaled to uint8 by ``round(v * 255 / 16)``. Splits: ``"train"``
    (1,347 images) and ``"test"`` (450) from a fixed stratified split (scikit-learn's
    ``train_test_split(stratify=labels, random_state=0, test_size=0.25)``), or ``"all"`` (1,797).
    mean/std are those of the train split, whichever split is returned.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.

    Example:
        >>> ds = digits("test")
        >>> len(ds), ds[0][0].shape
        (450, torch.Size([1, 8, 8]))
    """
    if split not in DIGITS_SPLITS:
        raise ConfigError(
            f"Data set 'digits' has no split {split!r}.{close_matches(split, DIGITS_SPLITS)} "
            f"Its splits are: {', '.join(DIGITS_SPLITS)}."
        )
    images, labels = _digits_arrays()
    indices = _digits_split_indices()
    mean, std = channel_stats(images[indices["train"]])
    idx = indices[split]
    return ArrayDataset(
        images[idx], labels[idx], name="digits", classes=[str(d) for d in range(10)], mean=mean, std=std
    )
