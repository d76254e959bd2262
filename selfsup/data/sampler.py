"""A shuffling sampler whose order depends only on (seed, epoch), so a resumed run sees the same order."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Random order of ``range(size)`` drawn from ``seed`` and the epoch set by :meth:`set_epoch`.

    PyTorch's ``RandomSampler`` continues one generator across epochs, so after a resume the
    order of epoch ``e`` differs from the uninterrupted run's; here it is a pure function of the
    seed and ``e`` (Lightning calls ``set_epoch`` before each epoch, as for ``DistributedSampler``).

    Example:
        >>> sampler = EpochShuffleSampler(10, seed=0); sampler.set_epoch(3)
        >>> sorted(sampler) == list(range(10))
        True
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size
