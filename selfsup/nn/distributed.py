"""Small helpers around ``torch.distributed`` that degrade to no-ops in a single process.

Contrastive losses such as SimCLR's NT-Xent (Chen et al., "A Simple Framework for Contrastive
Learning of Visual Representations", 2020, https://arxiv.org/abs/2002.05709) use the embeddings of
every device as negatives; :func:`gather` concatenates them across ranks while keeping the gradient
path back to each rank's own rows.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["gather", "gather_no_grad", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """Return True when ``torch.distributed`` is available and a default process group exists.

    Example:
        >>> is_distributed()
        False
    """
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Return the number of processes in the default group, or 1 outside distributed training.

    Example:
        >>> world_size()
        1
    """
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Return this process's rank in the default group, or 0 outside distributed training.

    Example:
        >>> rank()
        0
    """
    return dist.get_rank() if is_distributed() else 0


def _all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """All-gather equally shaped tensors from every rank and concatenate them along dim 0."""
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the gradient of its own rows.

    Every rank computes its own loss from the gathered tensor, so the gradient of rank ``r``'s rows
    is the sum over ranks of the gradients each rank's loss sends to those rows: backward
    all-reduces (sums) the incoming gradient and keeps this rank's slice. This is the rule of
    ``torch.distributed.nn.functional.all_gather`` (deprecated in recent torch releases),
    written here so that it works with every backend and torch version without a warning.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rows = x.shape[0]
        ctx.rank = dist.get_rank()
        return _all_gather_cat(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, letting gradients flow back to every rank.

    Used for the global-batch negatives of SimCLR (Chen et al., 2020, arXiv 2002.05709,
    https://arxiv.org/abs/2002.05709, Sec. 2.2 "Training with large batch size"; official code
    https://github.com/google-research/simclr). Every rank must pass a tensor of the same shape.
    The gradient reaching rank ``r``'s input is the sum, over all ranks, of the gradients that
    their losses send to rank ``r``'s rows; with DDP's gradient averaging this yields the
    gradient of the mean of the per-rank losses. Outside distributed training (or with one
    process) ``x`` is returned unchanged.

    Args:
        x: Tensor of shape ``(n, ...)``, the same shape on every rank.

    Returns:
        Tensor of shape ``(world_size * n, ...)``; rank ``r``'s rows are ``[r * n, (r + 1) * n)``.

    Example:
        >>> gather(torch.ones(2, 3)).shape  # single process: identity
        torch.Size([2, 3])
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 without autograd (e.g. keys for a queue).

    Used to fill MoCo's queue with the keys of every GPU (He et al., "Momentum Contrast for
    Unsupervised Visual Representation Learning", 2019, https://arxiv.org/abs/1911.05722; official
    code https://github.com/facebookresearch/moco). Every rank must pass a tensor of the same
    shape; the result is detached. Identity (detached) outside distributed training.

    Args:
        x: Tensor of shape ``(n, ...)``, the same shape on every rank.

    Returns:
        Detached tensor of shape ``(world_size * n, ...)`` ordered by rank.

    Example:
        >>> gather_no_grad(torch.ones(2, 3, requires_grad=True)).requires_grad
        False
    """
    if world_size() == 1:
        return x.detach()
    return _all_gather_cat(x.detach())
