"""Dense correspondences between two views: for every location of one, the most similar of the other."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.nn.precision import at_least_fp32

__all__ = ["match_locations"]


@torch.no_grad()
def match_locations(query_map: Tensor, key_map: Tensor) -> Tensor:
    """Index of the key location with the highest cosine similarity to each query location.

    DenseCL's correspondence rule (Wang, Zhang, Shen, Kong, Li, "Dense Contrastive Learning for
    Self-Supervised Visual Pre-Training", 2021, https://arxiv.org/abs/2011.09157, Sec. 3.3, Eq. 3;
    official code https://github.com/WXinlong/DenseCL): the positive key of query location ``i``
    is ``argmax_j cos(f_i, f'_j)``, where ``f`` and ``f'`` are the *backbone* feature maps of
    the two views (not the projected ones). Computed for the whole batch with one batched matrix
    product, without gradient.

    Args:
        query_map: ``(B, C, S)`` query-view features, ``S`` flattened locations.
        key_map: ``(B, C, S')`` key-view features.

    Returns:
        ``(B, S)`` long tensor of indices into the ``S'`` key locations.

    Raises:
        ValueError: the inputs are not 3-D with the same batch and channel sizes.

    Example:
        >>> idx = match_locations(torch.randn(2, 8, 16), torch.randn(2, 8, 16))
        >>> idx.shape
        torch.Size([2, 16])
    """
    if query_map.dim() != 3 or key_map.dim() != 3 or query_map.shape[:2] != key_map.shape[:2]:
        raise ValueError(
            "match_locations expects (B, C, S) and (B, C, S') feature maps with the same B and C, "
            f"got {tuple(query_map.shape)} and {tuple(key_map.shape)}"
        )
    with torch.autocast(query_map.device.type, enabled=False):
        q = F.normalize(at_least_fp32(query_map), dim=1)
        k = F.normalize(at_least_fp32(key_map), dim=1)
        similarity = torch.bmm(q.transpose(1, 2), k)  # (B, S, S')
    return similarity.argmax(dim=2)
