"""Subsets that keep the data set attributes, and a seeded stratified train/validation split."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Subset

from selfsup.data.protocol import Sample
from selfsup.errors import ConfigError


class DataSubset(Subset[Sample]):
    """A subset of a selfsup data set that still exposes ``name``, ``labels``, ``classes`` etc.

    Item ``i`` is ``(image, label, i)``: the index is the position in the subset (so memory banks
    sized ``len(subset)`` work); ``indices[i]`` gives the position in the parent data set.

    Example:
        >>> from selfsup.data import get
        >>> sub = DataSubset(get("digits"), [5, 7]); sub[1][2], sub.num_classes
        (1, 10)
    """

    def __init__(self, dataset: Dataset[Sample], indices: Sequence[int]) -> None:
        super().__init__(dataset, list(map(int, indices)))
        for attr in ("name", "channels", "num_classes", "classes", "mean", "std", "image_size"):
            setattr(self, attr, getattr(dataset, attr))
        self.labels = dataset.labels[torch.as_tensor(self.indices, dtype=torch.long)]  # type: ignore[attr-defined]

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        n = len(self.indices)
        index = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= index < n:
            raise IndexError(f"index {index} is out of range for a subset of {n} items")
        image, label, _ = self.dataset[self.indices[index]]
        return image, label, index

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        """Samples for ``indices``, batched through the parent's ``__getitems__`` when it has one."""
        n = len(self.indices)
        local = [int(i) + n if int(i) < 0 else int(i) for i in indices]
        if callable(getattr(self.dataset, "__getitems__", None)):
            if any(not 0 <= i < n for i in local):
                raise IndexError(f"an index in {indices} is out of range for a subset of {n} items")
            parent = self.dataset.__getitems__([self.indices[i] for i in local])  # type: ignore[attr-defined]
            return [(image, label, i) for (image, label, _), i in zip(parent, local)]
        return [self[i] for i in local]


def split_train_val(dataset: Dataset[Sample], val_fraction: float, seed: int = 0) -> tuple[DataSubset, DataSubset]:
    """Split ``dataset`` into seeded train and validation subsets, stratified by label.

    Each label value (including -1, unknown) is split on its own, so class proportions are kept;
    the validation set holds exactly ``round(len(dataset) * val_fraction)`` items, shared among the
    labels by largest remainder. Indices in each subset are in ascending order. The same data set,
    fraction and seed always give the same split.

    Args:
        dataset: a selfsup data set (with a ``labels`` tensor).
        val_fraction: share of items for validation, in (0, 1).
        seed: seed of the random assignment.

    Returns:
        ``(train, val)`` :class:`DataSubset` objects.

    Example:
        >>> from selfsup.data import get
        >>> train, val = split_train_val(get("digits"), 0.2, seed=0); len(train), len(val)
        (1078, 269)
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}.")
    labels: torch.Tensor = dataset.labels  # type: ignore[attr-defined]
    n = len(labels)
    n_val = round(n * val_fraction)
    if n_val == 0 or n_val == n:
        raise ConfigError(
            f"val_fraction={val_fraction} of {n} items leaves an empty {'validation' if n_val == 0 else 'training'} "
            "set; choose a fraction that gives both sets at least one item."
        )
    values, counts = torch.unique(labels, return_counts=True)
    quotas = counts.double() * (n_val / n)
    take = quotas.floor().long()
    remainder = n_val - int(take.sum())
    if remainder:
        order = torch.argsort(quotas - take.double(), descending=True, stable=True)
        take[order[:remainder]] += 1
    generator = torch.Generator().manual_seed(int(seed))
    val_parts = []
    for value, k in zip(values.tolist(), take.tolist()):
        members = torch.nonzero(labels == value).flatten()
        val_parts.append(members[torch.randperm(len(members), generator=generator)[:k]])
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[torch.cat(val_parts)] = True
    train_idx = torch.nonzero(~is_val).flatten().tolist()
    val_idx = torch.nonzero(is_val).flatten().tolist()
    return DataSubset(dataset, train_idx), DataSubset(dataset, val_idx)
