"""A first-in first-out queue of feature vectors: MoCo's dictionary of negative keys."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather_no_grad, is_distributed

__all__ = ["MemoryBank"]


class MemoryBank(nn.Module):
    """Fixed-size FIFO queue of ``dim``-dimensional feature vectors.

    The dictionary of MoCo (He et al., "Momentum Contrast for Unsupervised Visual Representation
    Learning", 2019, https://arxiv.org/abs/1911.05722, Sec. 3.2 and Alg. 1; official code
    https://github.com/facebookresearch/moco): each step the newest keys replace the oldest
    entries. As in the official code the queue starts as L2-normalised Gaussian rows. The queue
    and its write pointer are buffers, so they move with ``.to()`` and are saved in
    ``state_dict``. Enqueuing ``b`` rows is equivalent to enqueuing them one at a time: row ``i``
    lands at ``(ptr + i) % size`` (the newest win when ``b > size``) and ``ptr`` becomes
    ``(ptr + b) % size``. Rows are stored as given (not normalised).

    Args:
        size: Number of entries (MoCo's ``K``, e.g. 65536).
        dim: Feature width.
        gather_distributed: When ``torch.distributed`` is initialised, all-gather the keys of
            every rank before enqueuing, so that all ranks hold the same queue (as MoCo does).
            Every rank must then enqueue the same number of rows.

    Attributes:
        bank: ``(size, dim)`` float buffer holding the entries.
        ptr: 0-dim long buffer, the index the next row is written to.

    Raises:
        ValueError: ``size`` or ``dim`` is not positive.

    Example:
        >>> bank = MemoryBank(size=8, dim=4)
        >>> bank.enqueue(torch.randn(3, 4)); int(bank.ptr)
        3
    """

    bank: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int, *, gather_distributed: bool = False) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"MemoryBank size must be positive, got {size}")
        if dim <= 0:
            raise ValueError(f"MemoryBank dim must be positive, got {dim}")
        self.size = int(size)
        self.dim = int(dim)
        self.gather_distributed = gather_distributed
        self.register_buffer("bank", F.normalize(torch.randn(self.size, self.dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def features(self) -> torch.Tensor:
        """Return a detached copy of the ``(size, dim)`` queue.

        A copy (as MoCo's ``queue.clone().detach()``), so that a later in-place
        :meth:`enqueue` cannot change values an autograd graph still needs.

        Example:
            >>> MemoryBank(size=8, dim=4).features().shape
            torch.Size([8, 4])
        """
        return self.bank.detach().clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (detached) at the pointer, wrapping around, and advance the pointer.

        Args:
            keys: ``(b, dim)`` tensor; any ``b >= 0``. When ``b > size`` only the newest ``size``
                rows are kept.

        Raises:
            ValueError: ``keys`` is not a ``(b, dim)`` tensor.

        Example:
            >>> bank = MemoryBank(size=4, dim=2)
            >>> bank.enqueue(torch.ones(6, 2)); int(bank.ptr)
            2
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(
                f"MemoryBank.enqueue expects keys of shape (batch, {self.dim}), "
                f"got {tuple(keys.shape)}"
            )
        keys = keys.detach()
        if self.gather_distributed and is_distributed():
            keys = gather_no_grad(keys)
        b = keys.shape[0]
        if b == 0:
            return
        n = min(b, self.size)
        # Positions of the newest n rows; computed on device from ptr, so no host sync.
        offsets = torch.arange(b - n, b, device=self.bank.device)
        idx = (self.ptr + offsets) % self.size
        self.bank.index_copy_(0, idx, keys[b - n :].to(self.bank))
        self.ptr.add_(b).remainder_(self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, gather_distributed={self.gather_distributed}"
