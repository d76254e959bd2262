"""Run a network over multi-crop views, one call per crop resolution."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["forward_by_resolution"]


def forward_by_resolution(module: nn.Module, views: Sequence[torch.Tensor]) -> torch.Tensor:
    """``module`` applied to consecutive views of equal size in one call each, outputs concatenated.

    As the multi-crop wrapper of SwAV (Caron et al. 2020, "Unsupervised Learning of Visual
    Features by Contrasting Cluster Assignments", arXiv 2006.09882,
    https://arxiv.org/abs/2006.09882; official code https://github.com/facebookresearch/swav) and
    DINO (arXiv 2104.14294, https://github.com/facebookresearch/dino ``MultiCropWrapper``): the
    global crops go through the network together, then the local crops, so BatchNorm sees each
    resolution as one batch. The output keeps view order: rows ``[i B, (i + 1) B)`` belong to
    ``views[i]``.

    Example:
        >>> backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x32, x16 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)
        >>> forward_by_resolution(backbone, [x32, x32, x16, x16]).shape  # two calls: 32 px, then 16 px
        torch.Size([8, 4])
    """
    if not views:
        raise ValueError("forward_by_resolution needs at least one view")
    outputs, start = [], 0
    for end in range(1, len(views) + 1):
        if end == len(views) or views[end].shape[-2:] != views[start].shape[-2:]:
            outputs.append(module(torch.cat(list(views[start:end]))))
            start = end
    return torch.cat(outputs)
