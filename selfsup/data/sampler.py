"""A shuffling sampler whose order depends only on (seed, epoch), and that can resume mid-epoch."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Random order of ``range(size)`` drawn from ``seed`` and the epoch set by :meth:`set_epoch`.

    PyTorch's ``RandomSampler`` continues one generator across epochs, so after a resume the
    order of epoch ``e`` differs from the uninterrupted run's; here it is a pure function of the
    seed and ``e`` (Lightning calls ``set_epoch`` before each epoch, as for ``DistributedSampler``).
    :meth:`resume_at` makes the next pass start part-way through its epoch, for a run resumed from
    a checkpoint written in the middle of an epoch.

    Example:
        >>> sampler = EpochShuffleSampler(10, seed=0); sampler.set_epoch(3)
        >>> sorted(sampler) == list(range(10))
        True
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, position: int) -> None:
        """Skip the first ``position`` indices of the next pass (once)."""
        self._start = position

    def order(self, epoch: int) -> torch.Tensor:
        """The full order of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        return iter(self.order(self.epoch)[start:].tolist())

    def __len__(self) -> int:
        return self.size
