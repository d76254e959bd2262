"""MAE's loss: mean squared error of (normalised) patch pixels, over the masked patches only."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["MAELoss"]


class MAELoss(nn.Module):
    """Per-patch MSE averaged over masked patches.

    He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", arXiv 2111.06377
    (https://arxiv.org/abs/2111.06377), Sec. 3 "Reconstruction target"; official code
    https://github.com/facebookresearch/mae (``models_mae.py``, ``forward_loss``). With
    ``norm_pix_loss`` each target patch ``t`` (its ``p * p * C`` values) becomes ``(t - mean(t)) /
    sqrt(var(t) + eps)`` (unbiased variance, ``eps = 1e-6``, as the official code). The loss is
    ``sum_i m_i * mean_j (pred_ij - t_ij)^2 / sum_i m_i`` over all patches ``i`` of the batch, with
    ``m_i = 1`` for masked patches. Computed in at least fp32.

    Args:
        norm_pix_loss: normalise each target patch (the paper's default for its best results).
        eps: added to the variance.

    Example:
        >>> loss_fn = MAELoss()
        >>> loss_fn(torch.randn(2, 16, 48), torch.randn(2, 16, 48), torch.rand(2, 16) < 0.75).shape
        torch.Size([])
    """

    def __init__(self, norm_pix_loss: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_pix_loss, self.eps = norm_pix_loss, eps

    def target(self, patches: Tensor) -> Tensor:
        """The regression target of pixel patches ``(B, N, P)``."""
        if not self.norm_pix_loss:
            return patches
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        return (patches - mean) / (var + self.eps).sqrt()

    def forward(self, prediction: Tensor, patches: Tensor, mask: Tensor) -> Tensor:
        """Loss of ``prediction`` ``(B, N, P)`` for pixel patches ``(B, N, P)`` (from
        :func:`selfsup.nn.patches.patchify`) and ``mask`` ``(B, N)`` (True / 1 = masked)."""
        if prediction.shape != patches.shape or mask.shape != prediction.shape[:2]:
            raise ValueError(
                f"MAELoss expects prediction and patches (B, N, P) and mask (B, N), got {tuple(prediction.shape)}, "
                f"{tuple(patches.shape)} and {tuple(mask.shape)}"
            )
        with torch.autocast(prediction.device.type, enabled=False):
            prediction, patches = at_least_fp32(prediction), at_least_fp32(patches.detach())
            weights = mask.to(prediction.dtype)
            per_patch = (prediction - self.target(patches)).pow(2).mean(dim=-1)
            return (per_patch * weights).sum() / weights.sum()

    def extra_repr(self) -> str:
        return f"norm_pix_loss={self.norm_pix_loss}, eps={self.eps}"
