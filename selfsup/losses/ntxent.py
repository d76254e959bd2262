"""SimCLR's normalised temperature-scaled cross-entropy (NT-Xent), with an optional MoCo queue."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.precision import at_least_fp32

from selfsup.nn.distributed import gather, rank, world_size
from selfsup.nn.memory_bank import MemoryBank

__all__ = ["NTXentLoss"]


class NTXentLoss(nn.Module):
    """NT-Xent contrastive loss over two batches of paired embeddings.

    **In-batch negatives** (default; SimCLR, Chen et al., "A Simple Framework for Contrastive
    Learning of Visual Representations", 2020, https://arxiv.org/abs/2002.05709, Alg. 1 and Eq. 1;
    official code https://github.com/google-research/simclr). The ``2N`` rows of
    ``cat(z0, z1)`` are L2-normalised; row ``i``'s positive is its pair (``i +- N``) and its
    negatives are the other ``2N - 2`` rows (itself excluded). The loss is the mean over the
    ``2N`` rows of ``-log(exp(s_ip / T) / sum_{j != i} exp(s_ij / T))`` with ``s`` the cosine
    similarity, computed as a cross-entropy over one ``2N x 2N`` similarity matrix whose diagonal
    is masked to ``-inf``.

    With ``gather_distributed=True`` (and ``torch.distributed`` initialised) this rank's ``2N``
    rows are the queries and the embeddings of all ranks are the keys, so each rank computes its
    rows' loss against the global batch (SimCLR's "global" negatives). The mean over ranks of the
    per-rank losses then equals the single-process loss on the concatenated batch, and DDP's
    gradient averaging yields that loss's gradient (see :func:`selfsup.nn.gather`).

    **Memory bank** (``memory_bank_size > 0``; MoCo's InfoNCE, He et al., "Momentum Contrast for
    Unsupervised Visual Representation Learning", 2019, https://arxiv.org/abs/1911.05722, Eq. 1
    and Alg. 1; official code https://github.com/facebookresearch/moco). ``z0`` are the queries
    and ``z1`` their positive keys; the negatives are only the ``memory_bank_size`` queued keys
    (no in-batch negatives): logits ``[q . k+, q . bank^T] / T`` with label 0, mean cross-entropy
    over the batch. After the loss is computed, and only in training mode (``self.training``, so
    validation batches do not enter the queue), the normalised keys ``z1`` are enqueued,
    detached. The queue is a :class:`~selfsup.nn.MemoryBank` submodule created in ``__init__``,
    so its contents and pointer are part of ``state_dict`` from the start; that is why its width
    ``memory_bank_dim`` must be given up front. With ``gather_distributed=True`` the keys of all
    ranks are enqueued (every rank holds the same queue); the loss itself stays per rank.
    Gradients flow into both ``z0`` and ``z1``; MoCo passes keys computed without gradient.

    Args:
        temperature: ``T > 0``. SimCLR uses 0.1-0.5, MoCo 0.07 (v1) / 0.2 (v2).
        memory_bank_size: Number of queued negatives; 0 (default) for in-batch negatives.
        memory_bank_dim: Embedding width of the queue; required when ``memory_bank_size > 0``.
        gather_distributed: Use the embeddings of all ranks (see above).

    Raises:
        ValueError: ``temperature <= 0``, ``memory_bank_size < 0``, or ``memory_bank_dim`` is
            missing / not positive with a bank, or given without one.

    Example:
        >>> loss_fn = NTXentLoss(temperature=0.5)
        >>> loss = loss_fn(torch.randn(8, 128), torch.randn(8, 128))
    """

    def __init__(
        self,
        temperature: float = 0.5,
        memory_bank_size: int = 0,
        memory_bank_dim: int | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"NTXentLoss temperature must be finite and > 0, got {temperature}")
        if memory_bank_size < 0:
            raise ValueError(f"NTXentLoss memory_bank_size must be >= 0, got {memory_bank_size}")
        self.memory_bank: MemoryBank | None = None
        if memory_bank_size > 0:
            if memory_bank_dim is None or memory_bank_dim <= 0:
                raise ValueError(
                    "NTXentLoss memory_bank_dim (the embedding width) must be a positive int when "
                    f"memory_bank_size > 0, got {memory_bank_dim}"
                )
            self.memory_bank = MemoryBank(
                memory_bank_size, memory_bank_dim, gather_distributed=gather_distributed
            )
        elif memory_bank_dim is not None:
            raise ValueError(
                f"NTXentLoss got memory_bank_dim={memory_bank_dim} but memory_bank_size=0; "
                "set memory_bank_size to use a memory bank"
            )
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for paired embeddings ``z0[i] <-> z1[i]``.

        Args:
            z0: ``(N, D)`` embeddings of the first views (the queries with a memory bank).
            z1: ``(N, D)`` embeddings of the second views (the positive keys with a memory bank).

        Raises:
            ValueError: The inputs are not two non-empty ``(N, D)`` tensors of the same shape, or
                ``D`` differs from ``memory_bank_dim``.

        Example:
            >>> z = torch.randn(4, 16)
            >>> NTXentLoss(0.1)(z, z + 0.01 * torch.randn(4, 16)).shape
            torch.Size([])
        """
        if z0.dim() != 2 or z0.shape != z1.shape or z0.shape[0] == 0:
            raise ValueError(
                "NTXentLoss expects two non-empty (N, D) tensors of the same shape, got "
                f"{tuple(z0.shape)} and {tuple(z1.shape)}"
            )
        with torch.autocast(z0.device.type, enabled=False):  # similarities in fp32 under mixed precision
            z0 = F.normalize(at_least_fp32(z0), dim=1)
            z1 = F.normalize(at_least_fp32(z1), dim=1)
            if self.memory_bank is not None:
                return self._queue_loss(z0, z1, self.memory_bank)
            return self._in_batch_loss(z0, z1)

    def _in_batch_loss(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        n = z0.shape[0]
        keys = torch.cat([z0, z1], dim=0)  # (2n, d)
        r, w = 0, 1
        if self.gather_distributed and world_size() > 1:
            r, w = rank(), world_size()
            # Global key order is [z0 of ranks 0..w-1, z1 of ranks 0..w-1], the same order as the
            # single-process batch cat(cat(z0_all), cat(z1_all)).
            keys_all = torch.cat([gather(z0), gather(z1)], dim=0)  # (2wn, d)
        else:
            keys_all = keys
        # One similarity product; 1 / T scales the (2n, d) queries rather than the (2n, 2wn) logits.
        logits = (keys / self.temperature) @ keys_all.T  # (2n, 2wn)
        local = torch.arange(n, device=z0.device)
        rows = torch.arange(2 * n, device=z0.device)
        self_idx = torch.cat([r * n + local, (w + r) * n + local])
        pos_idx = torch.cat([(w + r) * n + local, r * n + local])
        logits.index_put_((rows, self_idx), logits.new_full((), float("-inf")))  # no self-pairs
        return F.cross_entropy(logits, pos_idx)

    def _queue_loss(self, q: torch.Tensor, k: torch.Tensor, bank: MemoryBank) -> torch.Tensor:
        if q.shape[1] != bank.dim:
            raise ValueError(
                f"NTXentLoss embeddings have width {q.shape[1]} but memory_bank_dim={bank.dim}"
            )
        negatives = bank.features().to(q.dtype)  # (K, d), a copy: enqueue below is in place
        pos = (q * k).sum(dim=1, keepdim=True)  # (n, 1)
        neg = q @ negatives.T  # (n, K)
        logits = torch.cat([pos, neg], dim=1) / self.temperature
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, labels)
        if self.training:
            bank.enqueue(k)
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"
