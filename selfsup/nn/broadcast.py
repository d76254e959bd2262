"""Make every process hold rank 0's copy of a tensor (cluster labels, centroids)."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from selfsup.nn.distributed import world_size

__all__ = ["broadcast_from_rank0"]


@torch.no_grad()
def broadcast_from_rank0(x: Tensor) -> Tensor:
    """Overwrite ``x`` in place with rank 0's values; identity outside distributed training.

    Offline clustering methods run k-means on every rank from the same features; as the
    DeepCluster hook of the ODC authors' code does (Zhan et al., "Online Deep Clustering for
    Unsupervised Representation Learning", 2020, https://arxiv.org/abs/2006.10645; code
    https://github.com/open-mmlab/mmselfsup), rank 0's result is broadcast so that floating-point
    differences can never give ranks different pseudo-labels. The gloo backend needs CPU tensors
    and NCCL CUDA ones; the tensor is moved as needed and copied back.

    Args:
        x: Tensor of the same shape and dtype on every rank.

    Returns:
        ``x`` itself, now holding rank 0's values.

    Example:
        >>> broadcast_from_rank0(torch.arange(3))
        tensor([0, 1, 2])
    """
    if world_size() == 1:
        return x
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    buf = x.detach().to(device).contiguous()
    dist.broadcast(buf, src=0)
    x.copy_(buf.to(x.device))
    return x
