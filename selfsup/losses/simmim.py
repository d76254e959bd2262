"""SimMIM's loss: L1 distance of the reconstructed pixels, over the masked pixels only."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["SimMIMLoss"]


class SimMIMLoss(nn.Module):
    """Mean absolute error over the masked pixels and the channels.

    Xie et al. 2021, "SimMIM: A Simple Framework for Masked Image Modeling", arXiv 2111.09886
    (https://arxiv.org/abs/2111.09886), Eq. 1 and Sec. 3.4; official code
    https://github.com/microsoft/SimMIM (``models/simmim.py``): with ``M`` the ``(B, H, W)``
    pixel mask (1 = masked) the loss is ``sum_{b,c,h,w} M_bhw |x_bchw - y_bchw| / (sum M + eps) /
    C``, ``eps = 1e-5`` as in the official code. The targets are the (normalised) input pixels.
    Computed in at least fp32.

    Args:
        eps: added to the number of masked pixels.

    Example:
        >>> loss_fn = SimMIMLoss()
        >>> loss_fn(torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8) < 0.6).shape
        torch.Size([])
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, reconstruction: Tensor, images: Tensor, mask: Tensor) -> Tensor:
        """Loss of ``reconstruction`` ``(B, C, H, W)`` of ``images`` ``(B, C, H, W)`` given the pixel
        ``mask`` ``(B, H, W)`` (True / 1 = masked)."""
        if reconstruction.shape != images.shape or reconstruction.dim() != 4 or mask.shape != (
            images.shape[0], *images.shape[2:]
        ):
            raise ValueError(
                "SimMIMLoss expects reconstruction and images (B, C, H, W) and mask (B, H, W), got "
                f"{tuple(reconstruction.shape)}, {tuple(images.shape)} and {tuple(mask.shape)}"
            )
        with torch.autocast(reconstruction.device.type, enabled=False):
            reconstruction, images = at_least_fp32(reconstruction), at_least_fp32(images.detach())
            weights = mask.to(reconstruction.dtype).unsqueeze(1)
            total = ((reconstruction - images).abs() * weights).sum()
            return total / (weights.sum() + self.eps) / images.shape[1]

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
