"""PCA whitening of a feature matrix, DeepCluster's preprocessing before k-means."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pca_whiten"]


@torch.no_grad()
def pca_whiten(x: Tensor, dim: int = 256, eps: float = 1e-5, normalize: bool = True) -> Tensor:
    """Project ``x`` on its top ``dim`` principal axes, whiten, and L2-normalise the rows.

    DeepCluster's ``preprocess_features`` (Caron et al., "Deep Clustering for Unsupervised
    Learning of Visual Features", 2018, https://arxiv.org/abs/1807.05520, Sec. 3.3 / Sec. 4;
    official code https://github.com/facebookresearch/deepcluster, faiss ``PCAMatrix`` with
    ``eigen_power=-0.5`` to 256 dims, then row L2 normalisation): centre the features, rotate
    onto the eigenvectors of their covariance with the largest eigenvalues ``lambda``, divide each
    coordinate by ``sqrt(lambda + eps)``. The eigendecomposition runs in float64.

    Args:
        x: ``(n, D)`` features.
        dim: Output width; clipped to ``min(dim, D, n)``.
        eps: Added to the eigenvalues before the square root.
        normalize: L2-normalise the whitened rows.

    Returns:
        ``(n, min(dim, D, n))`` float32 tensor on ``x``'s device.

    Example:
        >>> pca_whiten(torch.randn(100, 32), dim=8).shape
        torch.Size([100, 8])
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"pca_whiten expects (n >= 2, D) features, got shape {tuple(x.shape)}")
    dim = min(int(dim), x.shape[1], x.shape[0])
    xd = x.double()
    centred = xd - xd.mean(0, keepdim=True)
    cov = centred.T @ centred / (x.shape[0] - 1)
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    top = torch.flip(torch.arange(x.shape[1], device=x.device), [0])[:dim]
    out = centred @ eigvecs[:, top] / torch.sqrt(eigvals[top].clamp(min=0) + eps)
    out = out.float()
    return F.normalize(out, dim=1) if normalize else out
