"""AIM's loss: squared error to per-patch normalised pixels of the next patch, non-prefix only."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["AIMLoss"]


class AIMLoss(nn.Module):
    """Normalised-pixel regression of AIM, averaged over the patches outside the prefix.

    El-Nouby et al. 2024, "Scalable Pre-training of Large Autoregressive Image Models",
    arXiv 2401.08541, Sec. 3, Eq. 2 (official code github.com/apple/ml-aim):
    ``L = 1 / |T| sum_{k in T} ||x_hat_k - x_k||^2`` over the target patches ``T`` (those after
    the prefix), each target patch normalised by its own mean and standard deviation (MAE's
    ``norm_pix_loss``, ``eps = 1e-6``). The squared error is averaged over the pixels of a patch
    (a constant factor ``1 / (p * p * C)`` on Eq. 2), which gives the per-pixel scale of the
    losses the paper reports.

    Example:
        >>> prediction, target = torch.randn(2, 16, 48), torch.randn(2, 16, 48)  # (B, N, P)
        >>> loss_mask = torch.arange(16).expand(2, 16) >= 4  # the loss skips a prefix of 4 patches
        >>> AIMLoss()(prediction, target, loss_mask).shape
        torch.Size([])
    """

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_pix, self.eps = norm_pix, eps

    def forward(self, prediction: Tensor, target: Tensor, loss_mask: Tensor) -> Tensor:
        """Mean over ``loss_mask`` of the per-patch mean squared error.

        Args:
            prediction: ``(B, N, P)`` predicted pixels of each patch.
            target: ``(B, N, P)`` true pixels (normalised here per patch when ``norm_pix``).
            loss_mask: ``(B, N)`` bool, True for the patches the loss reads (non-prefix).
        """
        with torch.autocast(prediction.device.type, enabled=False):
            prediction, target = at_least_fp32(prediction), at_least_fp32(target)
            if self.norm_pix:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + self.eps).sqrt()
            per_patch = (prediction - target).pow(2).mean(dim=-1)
            weights = loss_mask.to(per_patch.dtype)
            return (per_patch * weights).sum() / weights.sum().clamp_min(1.0)
