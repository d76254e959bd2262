"""In-memory data sets: a uint8 image tensor plus a label tensor."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.data.protocol import Sample
from selfsup.errors import DataError

_STATS_CHUNK_VALUES = 1 << 22  # values summed per chunk when computing mean/std


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, for values scaled to [0, 1].

    Sums run in exact int64 arithmetic over chunks of images, so memory stays small and the result
    does not depend on the chunking. A channel with zero spread gets std 1.0 (so normalising by it
    never divides by zero).

    Args:
        images: uint8 tensor (N, C, H, W) with N >= 1.

    Returns:
        ``(mean, std)``, each a tuple of C floats.

    Example:
        >>> channel_stats(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8))
        ((1.0,), (1.0,))
    """
    n, c = images.shape[:2]
    per_image = max(1, images[0].numel())
    chunk = max(1, _STATS_CHUNK_VALUES // per_image)
    total = torch.zeros(c, dtype=torch.int64)
    total_sq = torch.zeros(c, dtype=torch.int64)
    for start in range(0, n, chunk):
        x = images[start : start + chunk].to(torch.int64)
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = [t / count / 255.0 for t in total.tolist()]
    var = [max(0.0, s / count / 255.0**2 - m * m) for s, m in zip(total_sq.tolist(), mean)]
    std = [math.sqrt(v) if v > 1e-12 else 1.0 for v in var]
    return tuple(mean), tuple(std)


class ArrayDataset(Dataset[Sample]):
    """Images and labels held in memory as tensors.

    Item ``i`` is ``(images[i], int(labels[i]), i)``. Labels are -1 for unlabelled images; with an
    empty ``classes`` list every label must be -1 and ``num_classes`` is 0.

    Args:
        images: uint8 tensor (N, C, H, W), C = 1 or 3, N >= 1.
        labels: integer tensor (N,) (or a sequence of ints) with values in [-1, len(classes)).
        name: short name of the data set, e.g. ``"cifar10"``.
        classes: class names; label ``k`` means ``classes[k]``.
        mean: per-channel mean for values in [0, 1]; computed from ``images`` when None.
        std: per-channel standard deviation; computed from ``images`` when None.

    Example:
        >>> ds = ArrayDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4), name="z", classes=["a"])
        >>> ds[1][0].shape, ds[1][1], ds[1][2]
        (torch.Size([1, 8, 8]), 0, 1)
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | Sequence[int],
        *,
        name: str,
        classes: Sequence[str],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        _check_images(images, name)
        labels = _check_labels(labels, len(images), len(classes), name)
        self.name = name
        self.images = images if images.is_contiguous() else images.contiguous()
        self.labels = labels
        self.classes = [str(c) for c in classes]
        self.num_classes = len(self.classes)
        self.channels = int(images.shape[1])
        self.image_size: tuple[int, int] | None = (int(images.shape[2]), int(images.shape[3]))
        if mean is None or std is None:
            computed_mean, computed_std = channel_stats(images)
            mean = computed_mean if mean is None else mean
            std = computed_std if std is None else std
        self.mean = _check_stat(mean, self.channels, "mean", name)
        self.std = _check_stat(std, self.channels, "std", name)
        self._label_list: list[int] = labels.tolist()

    def __len__(self) -> int:
        return len(self._label_list)

    def __getitem__(self, index: int) -> Sample:
        index = _normalise_index(int(index), len(self))
        return self.images[index].clone(), self._label_list[index], index

    def __getitems__(self, indices: Sequence[int]) -> list[Sample]:
        """All samples for ``indices`` with one indexing op (used by torch's DataLoader)."""
        n = len(self)
        idx = [_normalise_index(int(i), n) for i in indices]
        batch = self.images[torch.as_tensor(idx, dtype=torch.long)]
        return [(img, self._label_list[i], i) for img, i in zip(batch.unbind(0), idx)]

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"ArrayDataset(name={self.name!r}, size={len(self)}, image=({c}, {h}, {w}), "
            f"num_classes={self.num_classes})"
        )


def _normalise_index(index: int, n: int) -> int:
    if index < 0:
        index += n
    if not 0 <= index < n:
        raise IndexError(f"index {index} is out of range for a data set of {n} items")
    return index


def _check_images(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor):
        raise DataError(f"Data set {name!r}: images must be a torch.Tensor, got {type(images).__name__}.")
    if images.dtype != torch.uint8:
        raise DataError(
            f"Data set {name!r}: images must be a uint8 tensor (values 0..255), got dtype {images.dtype}. "
            "Convert with (x * 255).round().clamp(0, 255).to(torch.uint8) if they are floats in [0, 1]."
        )
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(
            f"Data set {name!r}: images must have shape (N, C, H, W) with C = 1 or 3, "
            f"got shape {tuple(images.shape)}."
        )
    if images.shape[0] == 0:
        raise DataError(f"Data set {name!r} has no images.")


def _check_labels(labels: Tensor | Sequence[int], n: int, num_classes: int, name: str) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point:
        if not torch.equal(labels, labels.round()):
            raise DataError(f"Data set {name!r}: labels must be integers, got non-integer values.")
    elif labels.dtype == torch.bool or labels.is_complex():
        raise DataError(f"Data set {name!r}: labels must be integers, got dtype {labels.dtype}.")
    labels = labels.to(torch.long)
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(
            f"Data set {name!r}: labels must have shape ({n},) to match the images, got {tuple(labels.shape)}."
        )
    if n and (int(labels.min()) < -1 or int(labels.max()) >= num_classes):
        raise DataError(
            f"Data set {name!r}: labels must lie in [-1, {num_classes - 1}] for {num_classes} classes "
            f"(-1 = unknown), got values from {int(labels.min())} to {int(labels.max())}."
        )
    return labels.contiguous()


def _check_stat(values: Sequence[float], channels: int, what: str, name: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if len(out) != channels:
        raise DataError(f"Data set {name!r}: {what} needs {channels} values (one per channel), got {len(out)}.")
    if what == "std" and any(v <= 0 for v in out):
        raise DataError(f"Data set {name!r}: std values must be > 0, got {out}.")
    return out
