"""Histograms of Oriented Gradients computed on the device for a whole batch (MaskFeat's target)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HOG"]


class HOG(nn.Module):
    """Per-channel HOG: Sobel gradients, orientation histograms per cell, L2 normalisation.

    The target of MaskFeat (Wei et al. 2021, "Masked Feature Prediction for Self-Supervised
    Visual Pre-Training", arXiv 2112.09133, https://arxiv.org/abs/2112.09133, Sec. 3-4; official
    code https://github.com/facebookresearch/SlowFast, ``slowfast/models/operators.py``
    ``HOGLayerC``, used by ``masked.py`` with 9 bins and 8x8 cells), after Dalal & Triggs 2005.
    For every channel separately (MaskFeat keeps the three RGB channels): the image is padded by
    reflection, ``g_x`` and ``g_y`` are the 3x3 Sobel filters (cross-correlation with
    ``[[1, 0, -1], [2, 0, -2], [1, 0, -1]]`` and its transpose), each pixel votes its magnitude
    ``sqrt(g_x^2 + g_y^2)`` into the unsigned-orientation bin ``floor(atan2(g_x, g_y) / pi *
    nbins) mod nbins`` (20 degree bins over 180 degrees for 9 bins), votes are summed over
    ``cell_size x cell_size`` cells, and each histogram is L2-normalised: per cell and channel
    (``normalize="cell"``, what the official code does), or over the whole vector of a patch
    (``normalize="patch"``, all cells and channels of the patch together), or not at all
    (``"none"``). The official code's optional Gaussian spatial weighting is off in MaskFeat's
    image model and not implemented. Computed in at least fp32, without gradient.

    Args:
        nbins: orientation bins (9).
        cell_size: pixels per cell side (8 on 224 px ImageNet images with 16 px patches; scale
            it with the patch size on small images, e.g. 2 for 4 px patches).
        normalize: ``"cell"``, ``"patch"`` or ``"none"``.

    Example:
        >>> hog = HOG(nbins=9, cell_size=2)
        >>> hog.patch_features(torch.rand(2, 3, 16, 16), patch_size=4).shape  # 3 x 9 x 2 x 2
        torch.Size([2, 16, 108])
    """

    kernel: Tensor

    def __init__(self, nbins: int = 9, cell_size: int = 8, normalize: str = "cell") -> None:
        super().__init__()
        if nbins < 1 or cell_size < 1 or normalize not in ("cell", "patch", "none"):
            raise ValueError(
                f"HOG needs nbins >= 1, cell_size >= 1 and normalize in ('cell', 'patch', 'none'); got "
                f"nbins={nbins}, cell_size={cell_size}, normalize={normalize!r}"
            )
        self.nbins, self.cell_size, self.normalize = nbins, cell_size, normalize
        sobel_x = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
        self.register_buffer("kernel", torch.stack([sobel_x, sobel_x.T]).unsqueeze(1), persistent=False)

    def feature_dim(self, channels: int, patch_size: int) -> int:
        """Length of one patch's feature: ``channels * nbins * (patch_size / cell_size)^2``."""
        return channels * self.nbins * (patch_size // self.cell_size) ** 2

    @torch.no_grad()
    def cell_histograms(self, images: Tensor, normalize_cells: bool | None = None) -> Tensor:
        """Histograms ``(B, C, nbins, H / cell, W / cell)``, L2-normalised per cell unless told not to."""
        b, c, h, w = images.shape
        s = self.cell_size
        if h % s or w % s:
            raise ValueError(f"HOG: image size {h}x{w} is not a multiple of the cell size {s}")
        with torch.autocast(images.device.type, enabled=False):
            x = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
            x = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="reflect")
            grads = F.conv2d(x, self.kernel.to(x))  # (B*C, 2, H, W)
            gx, gy = grads[:, 0], grads[:, 1]
            magnitude = torch.sqrt(gx * gx + gy * gy)
            bins = torch.floor(torch.atan2(gx, gy) / math.pi * self.nbins).long() % self.nbins
            votes = F.one_hot(bins, self.nbins).to(x.dtype) * magnitude.unsqueeze(-1)  # (B*C, H, W, nbins)
            hist = votes.reshape(b, c, h // s, s, w // s, s, self.nbins).sum(dim=(3, 5))
            hist = hist.permute(0, 1, 4, 2, 3)  # (B, C, nbins, H/s, W/s)
            if normalize_cells if normalize_cells is not None else self.normalize == "cell":
                hist = F.normalize(hist, p=2, dim=2)
        return hist

    @torch.no_grad()
    def patch_features(self, images: Tensor, patch_size: int) -> Tensor:
        """``(B, N, C * nbins * (p / cell)^2)``: the histograms of each patch, patches in raster order.

        Within a patch the layout is (channel, bin, cell row, cell column), as the official code's.
        """
        if patch_size % self.cell_size:
            raise ValueError(f"HOG: patch size {patch_size} is not a multiple of the cell size {self.cell_size}")
        hist = self.cell_histograms(images, normalize_cells=self.normalize == "cell")
        b, c, k, gh, gw = hist.shape
        u = patch_size // self.cell_size
        x = hist.reshape(b, c * k, gh // u, u, gw // u, u).permute(0, 2, 4, 1, 3, 5)
        x = x.reshape(b, (gh // u) * (gw // u), c * k * u * u)
        if self.normalize == "patch":
            x = F.normalize(x, p=2, dim=-1)
        return x
