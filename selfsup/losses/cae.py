"""CAE's loss: reconstruction of the masked patches plus alignment of their predicted latents."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["CAELoss", "normalized_patches"]


def normalized_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Each patch vector standardised by its own mean and (unbiased) variance: ``(x - mu) / sqrt(var + eps)``.

    MAE's ``norm_pix_loss`` target (He et al. 2021, "Masked Autoencoders Are Scalable Vision
    Learners", arXiv 2111.06377, https://arxiv.org/abs/2111.06377; official
    https://github.com/facebookresearch/mae).

    Example:
        >>> normalized_patches(torch.randn(2, 4, 48)).mean(-1).abs().max() < 1e-5
        tensor(True)
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


class CAELoss(nn.Module):
    """``L = MSE(decoded, normalised pixels of the masked patches) + lambda * MSE(z_pred, z_target)``.

    Chen et al. 2022, "Context Autoencoder for Self-Supervised Representation Learning", arXiv
    2202.03026 (https://arxiv.org/abs/2202.03026), Eq. 4; official code
    https://github.com/Atten4Vis/CAE (``furnace/engine_for_pretraining.py``: ``loss_main +
    align_loss_weight * mse_loss(latent_predict, latent_target.detach())``, weight 2). The paper's
    reconstruction term is a cross-entropy to DALL-E tokenizer ids; this implementation, as
    several reimplementations do, regresses instead the masked patches' pixels normalised per
    patch (:func:`normalized_patches`) with a mean squared error. Both terms are element-wise
    means over the masked patches only (their inputs hold nothing else). The latent target is
    detached. Computed in at least fp32.

    Args:
        align_weight: ``lambda`` (2).
        norm_pix: normalise each target patch (True) or regress raw pixels.

    Example:
        >>> loss_fn = CAELoss()
        >>> total, recon, align = loss_fn(torch.randn(2, 8, 48), torch.randn(2, 8, 48),
        ...                               torch.randn(2, 8, 32), torch.randn(2, 8, 32))
    """

    def __init__(self, align_weight: float = 2.0, norm_pix: bool = True) -> None:
        super().__init__()
        if align_weight < 0:
            raise ValueError(f"CAELoss needs align_weight >= 0, got {align_weight}")
        self.align_weight, self.norm_pix = align_weight, norm_pix

    def forward(
        self, pred_pixels: Tensor, target_pixels: Tensor, pred_latents: Tensor, target_latents: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(total, reconstruction, alignment)`` for masked-patch tensors ``(B, M, P)`` and ``(B, M, D)``."""
        if pred_pixels.shape != target_pixels.shape or pred_latents.shape != target_latents.shape:
            raise ValueError(
                "CAELoss expects matching shapes, got pixels "
                f"{tuple(pred_pixels.shape)} vs {tuple(target_pixels.shape)} and latents "
                f"{tuple(pred_latents.shape)} vs {tuple(target_latents.shape)}"
            )
        with torch.autocast(pred_pixels.device.type, enabled=False):
            target = at_least_fp32(target_pixels.detach())
            if self.norm_pix:
                target = normalized_patches(target)
            recon = F.mse_loss(at_least_fp32(pred_pixels), target)
            align = F.mse_loss(at_least_fp32(pred_latents), at_least_fp32(target_latents.detach()))
        return recon + self.align_weight * align, recon, align
