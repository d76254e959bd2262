"""MaskFeat's loss: mean squared error between predicted and true features of the masked patches."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["MaskedFeatureLoss"]


class MaskedFeatureLoss(nn.Module):
    """``L = 1 / (|M| K) * sum_{i in M} ||pred_i - target_i||^2`` over the masked patches ``M``.

    Wei et al. 2021, "Masked Feature Prediction for Self-Supervised Visual Pre-Training", arXiv
    2112.09133 (https://arxiv.org/abs/2112.09133), Sec. 3: the loss is computed on masked patches
    only; official code https://github.com/facebookresearch/SlowFast (``slowfast/models/masked.py``
    selects the masked rows, then an element-wise mean of the squared error over them and the
    ``K`` feature entries). Positions that are not masked are never read. Computed in at least
    fp32; the target is detached.

    Example:
        >>> loss_fn = MaskedFeatureLoss()
        >>> loss_fn(torch.randn(2, 16, 108), torch.randn(2, 16, 108), torch.rand(2, 16) < 0.4).shape
        torch.Size([])
    """

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """The loss of predictions ``(B, N, K)`` against targets ``(B, N, K)`` where ``mask`` ``(B, N)`` is True."""
        if pred.shape != target.shape or pred.shape[:2] != mask.shape:
            raise ValueError(
                "MaskedFeatureLoss expects pred and target (B, N, K) and mask (B, N), got "
                f"{tuple(pred.shape)}, {tuple(target.shape)} and {tuple(mask.shape)}"
            )
        if not bool(mask.any()):
            raise ValueError("MaskedFeatureLoss needs at least one masked patch")
        with torch.autocast(pred.device.type, enabled=False):
            pred, target = at_least_fp32(pred[mask]), at_least_fp32(target.detach()[mask])
            return (pred - target).pow(2).mean()
