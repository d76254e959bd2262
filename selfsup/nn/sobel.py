"""DeepCluster's fixed Sobel input layer: grayscale, then horizontal and vertical gradients."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


__all__ = ["Sobel"]


class Sobel(nn.Module):
    """Map ``(B, C, H, W)`` images to ``(B, 2, H, W)`` Sobel gradients of their grayscale.

    DeepCluster (Caron et al., "Deep Clustering for Unsupervised Learning of Visual Features",
    2018, https://arxiv.org/abs/1807.05520, Sec. 4 "Implementation details"; official code
    https://github.com/facebookresearch/deepcluster) feeds the network a fixed linear
    transformation of the image: the mean of the channels, then the two 3x3 Sobel filters
    (zero padding 1), to remove colour as a shortcut for clustering. No trainable parameters.

    Example:
        >>> Sobel()(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 2, 16, 16])
    """

    kernel: Tensor

    def __init__(self) -> None:
        super().__init__()
        gx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("kernel", torch.stack([gx, gx.T]).unsqueeze(1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """Sobel gradients ``(B, 2, H, W)`` of the channel mean of ``images``."""
        gray = images.mean(1, keepdim=True)
        return F.conv2d(gray, self.kernel.to(gray), padding=1)

