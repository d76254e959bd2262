"""DenseCL's dense InfoNCE: matched locations as positives, a queue of pooled dense keys as negatives."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.memory_bank import MemoryBank
from selfsup.nn.precision import at_least_fp32

__all__ = ["DenseContrastiveLoss"]


class DenseContrastiveLoss(nn.Module):
    """InfoNCE over every location of a dense projection, with its own queue of negatives.

    The dense loss of DenseCL (Wang, Zhang, Shen, Kong, Li, "Dense Contrastive Learning for
    Self-Supervised Visual Pre-Training", 2021, https://arxiv.org/abs/2011.09157, Sec. 3.2, Eq. 2;
    official code https://github.com/WXinlong/DenseCL). Each of the ``B * S`` query vectors
    ``r_s`` has one positive key ``t_s+`` (the key location matched to it, see
    :func:`selfsup.nn.dense_match.match_locations`) and the ``K`` queued keys as negatives:
    ``-log(exp(r_s . t_s+ / T) / (exp(r_s . t_s+ / T) + sum_k exp(r_s . t_k / T)))``, all
    vectors L2-normalised, averaged over all query locations of the batch. As in the official
    code the negatives are not dense keys but the key view's dense projections average-pooled
    over the locations (one per image); after the loss, in training mode only, these pooled keys
    are normalised and enqueued (first in, first out). Computed in float32 or wider.

    Args:
        temperature: ``T > 0`` (DenseCL: 0.2).
        queue_size: Number of queued negatives ``K`` (DenseCL: 65,536).
        dim: Width of the dense projections (DenseCL: 128).
        gather_distributed: Enqueue the pooled keys of all processes (every rank holds the same
            queue, as MoCo and DenseCL do). The loss itself only involves this rank's samples.

    Raises:
        ValueError: ``temperature`` is not finite and positive.

    Example:
        >>> loss_fn = DenseContrastiveLoss(temperature=0.2, queue_size=4096, dim=128)
        >>> loss = loss_fn(torch.randn(8, 128, 49), torch.randn(8, 128, 49), torch.randn(8, 128))
    """

    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = 65536,
        dim: int = 128,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(
                f"DenseContrastiveLoss temperature must be finite and > 0, got {temperature}"
            )
        self.temperature = float(temperature)
        self.queue = MemoryBank(queue_size, dim, gather_distributed=gather_distributed)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, pooled_keys: torch.Tensor
    ) -> torch.Tensor:
        """Return the mean dense InfoNCE loss and enqueue ``pooled_keys`` (training mode).

        Args:
            queries: ``(B, D, S)`` dense query projections (with gradient).
            keys: ``(B, D, S)`` positive keys, ``keys[b, :, s]`` matched to ``queries[b, :, s]``.
            pooled_keys: ``(B, D)`` key-view projections averaged over the locations.

        Raises:
            ValueError: the shapes disagree or ``D`` differs from the queue width.

        Example:
            >>> loss_fn = DenseContrastiveLoss(queue_size=16, dim=4)
            >>> loss_fn(torch.randn(2, 4, 9), torch.randn(2, 4, 9), torch.randn(2, 4)).shape
            torch.Size([])
        """
        if queries.dim() != 3 or queries.shape != keys.shape:
            raise ValueError(
                "DenseContrastiveLoss expects queries and keys of the same (B, D, S) shape, got "
                f"{tuple(queries.shape)} and {tuple(keys.shape)}"
            )
        if pooled_keys.shape != queries.shape[:2] or queries.shape[1] != self.queue.dim:
            raise ValueError(
                f"DenseContrastiveLoss expects pooled_keys (B, D) = {tuple(queries.shape[:2])} with "
                f"D = queue width {self.queue.dim}, got {tuple(pooled_keys.shape)}"
            )
        with torch.autocast(queries.device.type, enabled=False):
            dim = queries.shape[1]
            q = F.normalize(at_least_fp32(queries), dim=1).transpose(1, 2).reshape(-1, dim)
            k = F.normalize(at_least_fp32(keys), dim=1).transpose(1, 2).reshape(-1, dim)
            negatives = self.queue.features().to(q.dtype)  # a copy: the enqueue below is in place
            positive = (q * k).sum(dim=1, keepdim=True)  # (B S, 1)
            logits = torch.cat([positive, q @ negatives.T], dim=1) / self.temperature
            labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
            loss = F.cross_entropy(logits, labels)
            if self.training:
                self.queue.enqueue(F.normalize(at_least_fp32(pooled_keys.detach()), dim=1))
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
