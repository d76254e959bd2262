"""Cholesky whitening of a batch of embeddings (W-MSE)."""
from __future__ import annotations

import torch

__all__ = ["cholesky_whiten"]


def cholesky_whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Whiten a batch with the inverse Cholesky factor of its covariance.

    The whitening transform of W-MSE (Ermolov, Siarohin, Sangineto, Sebe, "Whitening for
    Self-Supervised Representation Learning", 2021, https://arxiv.org/abs/2007.06346, Sec. 3.1,
    Eq. 4-5; official code https://github.com/htdt/self-supervised, ``Whitening2d``): with the
    batch mean ``m`` and the unbiased covariance ``S = (x - m)^T (x - m) / (n - 1)``, shrunk to
    ``(1 - eps) S + eps I`` as in the official code, and its Cholesky factor ``S = L L^T``, each
    row becomes ``W (x_i - m)`` with ``W = L^{-1}``. The whitened batch has zero mean and (for
    ``eps = 0``) identity covariance. Gradients flow through ``m``, ``S`` and ``L``, as in the
    paper (the whitening matrix is not detached).

    Args:
        x: ``(n, d)`` batch; ``n > d`` unless ``eps > 0``, or the covariance is singular.
        eps: Shrinkage towards the identity (the official code's ``w_eps``, default 0).

    Returns:
        ``(n, d)`` whitened batch.

    Example:
        >>> w = cholesky_whiten(torch.randn(64, 4, dtype=torch.float64))
        >>> torch.allclose(w.T @ w / 63, torch.eye(4, dtype=torch.float64))
        True
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"cholesky_whiten expects an (n, d) batch with n >= 2, got {tuple(x.shape)}")
    n, d = x.shape
    centred = x - x.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / (n - 1)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    lower = torch.linalg.cholesky((1 - eps) * cov + eps * eye)
    # rows W (x_i - m) = (L^{-1} centred^T)^T, by a triangular solve instead of an inverse
    return torch.linalg.solve_triangular(lower, centred.T, upper=False).T
