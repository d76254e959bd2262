"""I-JEPA's loss: squared error between predicted and target patch representations."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["JEPALoss"]


class JEPALoss(nn.Module):
    """Mean over target blocks, patches and channels of ``(prediction - target)^2``.

    Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
    Architecture", arXiv 2301.08243 (https://arxiv.org/abs/2301.08243), Eq. 1: the average over the
    M target blocks of the summed squared L2 distances over each block's patches; all blocks of a
    batch have the same size, so this mean differs from Eq. 1 only by the constant factor
    ``N_tgt * D``. ``kind="smooth_l1"`` is what the official code computes
    (https://github.com/facebookresearch/ijepa, ``src/train.py``: ``F.smooth_l1_loss``, beta 1).
    The target is detached. Computed in at least fp32.

    Example:
        >>> JEPALoss()(torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)).shape
        torch.Size([])
    """

    def __init__(self, kind: str = "mse") -> None:
        super().__init__()
        if kind not in ("mse", "smooth_l1"):
            raise ValueError(f"JEPALoss kind must be 'mse' or 'smooth_l1', got {kind!r}")
        self.kind = kind

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Predictions and targets of equal shape, e.g. ``(B, M, N_tgt, D)``."""
        if prediction.shape != target.shape:
            raise ValueError(f"JEPALoss shapes differ: {tuple(prediction.shape)} vs {tuple(target.shape)}")
        with torch.autocast(prediction.device.type, enabled=False):
            p, t = at_least_fp32(prediction), at_least_fp32(target.detach())
            return F.mse_loss(p, t) if self.kind == "mse" else F.smooth_l1_loss(p, t)
