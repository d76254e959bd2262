"""NNCLR's support set: a FIFO queue of embeddings queried for each sample's nearest neighbour."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.memory_bank import MemoryBank

__all__ = ["NearestNeighbourSupportSet"]


class NearestNeighbourSupportSet(nn.Module):
    """A queue of L2-normalised embeddings and a cosine nearest-neighbour lookup into it.

    The support set ``Q`` of NNCLR (Dwibedi, Aytar, Tompson, Sermanet, Zisserman, "With a Little
    Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual Representations", 2021,
    https://arxiv.org/abs/2104.14548, Sec. 3.2 and Eq. 2; no official code was released, solo-learn
    https://github.com/vturrisi/solo-learn and lightly https://github.com/lightly-ai/lightly hold
    public re-implementations). ``NN(z, Q) = argmax_{q in Q} cos(z, q)``: :meth:`nearest` returns,
    for every row of ``z``, the stored row with the largest cosine similarity (ties go to the
    lowest index), detached; :meth:`update` L2-normalises the rows and enqueues them first in,
    first out. The queue is a :class:`MemoryBank` (so it starts as random unit rows, as in
    solo-learn, and is saved in ``state_dict``); with ``gather_distributed`` the rows of all
    ranks are enqueued so that every rank holds the same support set.

    Args:
        size: Number of stored embeddings (98,304 in the paper).
        dim: Embedding width.
        gather_distributed: Enqueue the rows of all ranks (see above).

    Example:
        >>> support = NearestNeighbourSupportSet(size=1024, dim=256)
        >>> support.nearest(torch.randn(8, 256)).shape
        torch.Size([8, 256])
    """

    def __init__(self, size: int, dim: int, *, gather_distributed: bool = True) -> None:
        super().__init__()
        self.queue = MemoryBank(size, dim, gather_distributed=gather_distributed)

    @torch.no_grad()
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Return the ``(n, dim)`` stored embeddings nearest (cosine) to the rows of ``z``.

        Example:
            >>> NearestNeighbourSupportSet(16, 4).nearest(torch.randn(3, 4)).shape
            torch.Size([3, 4])
        """
        if z.dim() != 2 or z.shape[1] != self.queue.dim:
            raise ValueError(
                f"NearestNeighbourSupportSet expects (n, {self.queue.dim}) embeddings, "
                f"got {tuple(z.shape)}"
            )
        support = self.queue.features()  # stored rows are unit vectors: dot product = cosine
        index = (F.normalize(z.detach().to(support), dim=1) @ support.T).argmax(dim=1)
        return support[index]

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> None:
        """Enqueue the L2-normalised rows of ``z`` (detached), replacing the oldest entries.

        Example:
            >>> support = NearestNeighbourSupportSet(16, 4)
            >>> support.update(torch.randn(3, 4)); int(support.queue.ptr)
            3
        """
        self.queue.enqueue(F.normalize(z.detach(), dim=1))
