"""Evaluation splits: a stratified validation hold-out, class-balanced label subsets, split hashes.

Hyper-parameters of every protocol are chosen on a validation part carved from the *training*
split with :func:`stratified_holdout`; the test split is only used once, at the end. Semi-supervised
protocols train on :func:`balanced_subset` of the labels. :func:`split_hash` fingerprints the exact
samples a result was computed on, so results can be compared only when they used the same data.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.errors import ConfigError

_HASH_CHUNK = 4096  # samples per chunk when hashing in-memory images
_FILE_BLOCK = 1 << 20


def _as_labels(labels: Tensor | Sequence[int], what: str) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ConfigError(f"{what} needs a 1-D tensor of integer labels, got dtype {labels.dtype}, shape "
                          f"{tuple(labels.shape)}.")
    return labels.long()


def _check_fraction(fraction: float, what: str) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{what} must lie strictly between 0 and 1, got {fraction!r}.")
    return fraction


def stratified_holdout(labels: Tensor | Sequence[int], fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Seeded, class-stratified split of positions ``0..n-1`` into ``(train_idx, val_idx)``.

    The validation part holds ``round(n * fraction)`` positions shared among the label values
    (-1 counts as one value) in proportion to their sizes, by largest remainder, except that a class
    never gives up its last sample: every class present keeps at least one training sample, so the
    validation part may be a little smaller than asked. Both index tensors are sorted; together they
    cover every position exactly once. The same labels, fraction and seed always give the same split.

    Raises:
        ConfigError: ``fraction`` outside (0, 1), or a validation part that would be empty.

    Example:
        >>> train_idx, val_idx = stratified_holdout(torch.tensor([0, 0, 1, 1, 1, 1, 0, 1, 0, 0]), 0.2, seed=0)
        >>> len(train_idx), len(val_idx)
        (8, 2)
    """
    labels = _as_labels(labels, "stratified_holdout")
    fraction = _check_fraction(fraction, "the validation fraction")
    n = len(labels)
    n_val = math.floor(n * fraction + 0.5)
    values, counts = torch.unique(labels, return_counts=True)
    quotas = counts.double() * (n_val / max(n, 1))
    take = quotas.floor().long()
    remainder = n_val - int(take.sum())
    if remainder > 0:
        order = torch.argsort(quotas - take.double(), descending=True, stable=True)
        take[order[:remainder]] += 1
    take = torch.minimum(take, counts - 1)
    if int(take.sum()) == 0:
        raise ConfigError(
            f"A validation fraction of {fraction} of {n} labelled samples ({len(values)} classes, smallest "
            f"{int(counts.min()) if n else 0}) leaves no validation sample (each class keeps one for training). "
            "Use more labelled data, a larger fraction, or fix the hyper-parameters so nothing has to be chosen."
        )
    generator = torch.Generator().manual_seed(int(seed))
    is_val = torch.zeros(n, dtype=torch.bool)
    for value, k in zip(values.tolist(), take.tolist()):
        members = torch.nonzero(labels == value).flatten()
        is_val[members[torch.randperm(len(members), generator=generator)[:k]]] = True
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def balanced_subset(labels: Tensor | Sequence[int], fraction: float, seed: int = 0) -> Tensor:
    """Sorted positions of a seeded, class-balanced ``fraction`` of the labelled samples.

    Each class ``c`` with ``n_c`` samples contributes ``max(1, floor(fraction * n_c + 0.5))`` of them
    (round half up), drawn uniformly at random with a generator seeded by ``seed``, so every class is
    represented in proportion to its size and the same labels, fraction and seed always give the same
    subset. Unlabelled samples (label -1) are never chosen. This is the 1% / 10% label regime of
    semi-supervised evaluation (SimCLR, Chen et al. 2020, arXiv 2002.05709, Sec. 6 / Appendix B.5,
    which samples class-balanced subsets of ImageNet's labels).

    Raises:
        ConfigError: ``fraction`` outside (0, 1), or no labelled sample.

    Example:
        >>> subset = balanced_subset(torch.arange(10).repeat(100), 0.1, seed=0)
        >>> len(subset)
        100
    """
    labels = _as_labels(labels, "balanced_subset")
    fraction = _check_fraction(fraction, "the label fraction")
    classes = torch.unique(labels[labels >= 0])
    if len(classes) == 0:
        raise ConfigError("balanced_subset needs labelled samples (labels >= 0); every label here is -1.")
    generator = torch.Generator().manual_seed(int(seed))
    chosen = []
    for value in classes.tolist():
        members = torch.nonzero(labels == value).flatten()
        k = max(1, math.floor(fraction * len(members) + 0.5))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.sort(torch.cat(chosen)).values


def split_hash(dataset: Dataset, indices: Tensor | Sequence[int] | None = None) -> str:
    """SHA-256 (hex) over the labels and the image content of ``dataset``'s samples at ``indices``.

    Two results share a hash only when they used the same samples, in the same order, with the same
    labels and the same pixels. What is hashed: the number of samples, the labels as int64, then
    per sample: for in-memory data sets (an ``images`` uint8 tensor, e.g. CIFAR, Fashion-MNIST,
    digits) the decoded pixels; for image folders (a ``samples`` list of ``(path, label)``) each
    file's name and raw bytes (cheaper than decoding, and just as sensitive to a changed image); for
    subsets the parent's samples; otherwise the pixels of each item as the data set returns it.

    Example:
        >>> from selfsup.data import get
        >>> test_set = get("digits", split="test")
        >>> digest = split_hash(test_set)
        >>> len(digest), digest == split_hash(test_set, range(len(test_set))), digest == split_hash(test_set, [0, 1])
        (64, True, False)
    """
    positions = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    digest = hashlib.sha256()
    parent, positions = _root_dataset(dataset, positions.flatten())
    labels = torch.as_tensor(parent.labels)[positions] if hasattr(parent, "labels") else None
    digest.update(f"n={len(positions)};".encode())
    if labels is not None:
        digest.update(labels.to(torch.int64).numpy().tobytes())
    images = getattr(parent, "images", None)
    samples = getattr(parent, "samples", None)
    if isinstance(images, Tensor):
        for start in range(0, len(positions), _HASH_CHUNK):
            digest.update(images[positions[start : start + _HASH_CHUNK]].contiguous().numpy().tobytes())
    elif isinstance(samples, list):
        for i in positions.tolist():
            path = Path(samples[i][0])
            digest.update(f"{len(path.name)}:{path.name};".encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(_FILE_BLOCK), b""):
                    digest.update(block)
    else:
        for i in positions.tolist():
            image, label, _ = parent[i]
            if labels is None:
                digest.update(int(label).to_bytes(8, "little", signed=True))
            digest.update(torch.as_tensor(image).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _root_dataset(dataset: Dataset, positions: Tensor) -> tuple[Dataset, Tensor]:
    """Follow ``Subset``-like wrappers (``dataset`` + ``indices``) down to the data set that holds the images."""
    while hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
        positions = torch.as_tensor(list(dataset.indices), dtype=torch.long)[positions]  # type: ignore[attr-defined]
        dataset = dataset.dataset  # type: ignore[attr-defined]
    return dataset, positions
