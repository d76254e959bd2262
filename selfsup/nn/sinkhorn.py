"""Sinkhorn-Knopp equipartition of a batch over prototypes (SwAV's online code assignment)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from selfsup.nn.distributed import world_size
from selfsup.nn.precision import at_least_fp32

__all__ = ["sinkhorn"]


def _all_reduce_sum(x: torch.Tensor, distributed: bool) -> torch.Tensor:
    """``x`` summed over processes (in place) when ``distributed``, else unchanged."""
    if distributed:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, gather_distributed: bool = True
) -> torch.Tensor:
    """Soft codes ``(B, K)`` that split the (global) batch evenly over the ``K`` prototypes.

    Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
    Assignments", arXiv 2006.09882 (https://arxiv.org/abs/2006.09882), Sec. 3.1 and Alg. 1;
    official code https://github.com/facebookresearch/swav (``distributed_sinkhorn``). With
    ``Q = exp(scores / epsilon)^T`` of shape ``(K, B_total)`` scaled to sum to 1, each iteration
    divides every prototype row by its sum and by ``K`` (rows then sum to ``1 / K``), then every
    sample column by its sum and by ``B_total`` (columns then sum to ``1 / B_total``). The codes
    returned are ``B_total * Q^T``, so each sample's code sums to 1 and, as ``iterations`` grows,
    each prototype receives ``B_total / K`` of the batch. With several processes every sum over
    samples is all-reduced, so the result on each rank equals its rows of the single-process
    result on the concatenated batch. Computed in at least fp32, without gradient.

    Args:
        scores: ``(B, K)`` prototype scores of this process's samples (cosine similarities).
        epsilon: entropy regularisation (0.05 in the paper).
        iterations: number of row + column normalisations (3 in the paper).
        gather_distributed: all-reduce the sums over processes when distributed.

    Returns:
        ``(B, K)`` non-negative codes, rows summing to 1.

    Example:
        >>> codes = sinkhorn(torch.randn(8, 5))
        >>> codes.shape, torch.allclose(codes.sum(dim=1), torch.ones(8))  # rows sum to 1
        (torch.Size([8, 5]), True)
    """
    if scores.dim() != 2 or scores.shape[0] == 0:
        raise ValueError(f"sinkhorn expects a non-empty (B, K) score matrix, got {tuple(scores.shape)}")
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"sinkhorn needs epsilon > 0 and iterations >= 1, got {epsilon}, {iterations}")
    distributed = gather_distributed and world_size() > 1
    with torch.autocast(scores.device.type, enabled=False):
        scores = at_least_fp32(scores)
        # subtracting the global maximum leaves Q unchanged after the first normalisation
        top = _all_reduce_max(scores.max(), distributed)
        q = torch.exp((scores - top) / epsilon).T  # (K, B)
        num_prototypes = q.shape[0]
        batch = q.shape[1] * (world_size() if distributed else 1)
        q /= _all_reduce_sum(q.sum(), distributed)
        for _ in range(iterations):
            q /= _all_reduce_sum(q.sum(dim=1, keepdim=True), distributed)
            q /= num_prototypes
            q /= q.sum(dim=0, keepdim=True)
            q /= batch
        return (q * batch).T


def _all_reduce_max(x: torch.Tensor, distributed: bool) -> torch.Tensor:
    """The maximum of ``x`` over processes when ``distributed``."""
    x = x.clone()
    if distributed:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x
