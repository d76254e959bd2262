"""A2MIM's loss: L1 on masked pixels plus a focal frequency loss on the Fourier spectrum."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["A2MIMLoss", "focal_frequency_loss"]


def focal_frequency_loss(prediction: Tensor, target: Tensor, alpha: float = 1.0) -> Tensor:
    """Focal frequency loss on batch-averaged spectra, as A2MIM configures it.

    Jiang et al. 2021, "Focal Frequency Loss for Image Reconstruction and Synthesis",
    arXiv 2012.12821 (official code github.com/EndlessSora/focal-frequency-loss), with A2MIM's
    settings (Li et al. 2022, arXiv 2205.13943, Sec. 4.2; github.com/Westlake-AI/openmixup:
    ``alpha=1, ave_spectrum=True, log_matrix=True, batch_matrix=True``): ``F = DFT2(x)``
    (orthonormal) of each channel, averaged over the batch; ``d(u, v) = |F_pred - F_true|``;
    weights ``w = log(1 + d^alpha) / max log(1 + d^alpha)`` (no gradient); loss
    ``mean_{c, u, v} w * d^2``.

    Example:
        >>> focal_frequency_loss(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)).shape
        torch.Size([])
    """
    pred_f = torch.fft.fft2(prediction, norm="ortho").mean(dim=0)
    true_f = torch.fft.fft2(target, norm="ortho").mean(dim=0)
    squared = (pred_f - true_f).abs().pow(2)
    with torch.no_grad():
        weight = torch.log1p(squared.sqrt().pow(alpha))
        weight = torch.nan_to_num(weight / weight.max(), nan=0.0).clamp(0.0, 1.0)
    return (weight * squared).mean()


class A2MIMLoss(nn.Module):
    """Spatial L1 on masked pixels plus ``fft_weight`` times a focal frequency loss.

    Li et al. 2022, "Architecture-Agnostic Masked Image Modeling -- From ViT back to CNN",
    arXiv 2205.13943, Sec. 4.2 (official code github.com/Westlake-AI/openmixup, ``A2MIMHead`` with
    the ViT settings): ``L_spa = sum(|y - x| * M) / (sum M * C)`` (the mean absolute error over
    masked pixels and channels); for the frequency term the unmasked pixels of the prediction are
    replaced by ``0.5 * sg(y) + 0.5 * x`` (``fft_unmask_replace='mixed'``, ``fft_unmask_weight=0``),
    so gradients only reach masked pixels, and ``L = L_spa + fft_weight * FFL(y_mix, x)`` with
    ``fft_weight = 0.1`` for ViTs.

    Example:
        >>> images, reconstruction = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
        >>> mask = torch.zeros(2, 1, 8, 8); mask[..., :4, :] = 1  # top half masked
        >>> A2MIMLoss()(reconstruction, images, mask).shape
        torch.Size([])
    """

    def __init__(self, fft_weight: float = 0.1, fft_alpha: float = 1.0) -> None:
        super().__init__()
        self.fft_weight, self.fft_alpha = fft_weight, fft_alpha

    def spatial(self, prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Mean absolute error over masked pixels and channels."""
        channels = prediction.shape[1]
        return ((prediction - target).abs() * mask).sum() / (mask.sum() * channels).clamp_min(1.0)

    def forward(self, prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Args: ``prediction`` and ``target`` ``(B, C, H, W)``; ``mask`` ``(B, 1, H, W)``, 1 = masked."""
        with torch.autocast(prediction.device.type, enabled=False):
            prediction, target = at_least_fp32(prediction), at_least_fp32(target)
            mask = mask.to(prediction.dtype)
            loss = self.spatial(prediction, target, mask)
            if self.fft_weight > 0:
                mixed = prediction * mask + (0.5 * prediction.detach() + 0.5 * target) * (1.0 - mask)
                loss = loss + self.fft_weight * focal_frequency_loss(mixed, target, self.fft_alpha)
            return loss
