"""Cholesky whitening of a batch of embeddings (W-MSE)."""
from __future__ import annotations

import logging

import torch

__all__ = ["cholesky_whiten", "cholesky_whiten_shrunk"]

log = logging.getLogger(__name__)

JITTER = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""Shrinkage tried, in order, when the covariance is singular (relative to its mean variance)."""
_warned: list[bool] = []  # the singular-covariance warning is logged once per process


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

    A singular covariance (a sub-batch whose embeddings span fewer than ``d`` dimensions, which
    happens when a projector collapses part of its output, and which stops the official code with a
    Cholesky error) is shrunk further, by the first of :data:`JITTER` times its mean variance that
    makes it positive definite, with a warning; a non-singular batch is whitened exactly as above.

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
    return cholesky_whiten_shrunk(x, eps)[0]


def cholesky_whiten_shrunk(x: torch.Tensor, eps: float = 0.0) -> tuple[torch.Tensor, float]:
    """:func:`cholesky_whiten`, also returning the extra shrinkage a singular covariance needed.

    Returns:
        The ``(n, d)`` whitened batch and the jitter from :data:`JITTER` that was added (relative
        to the mean variance), ``0.0`` when the covariance was positive definite as it was.

    Example:
        >>> w, jitter = cholesky_whiten_shrunk(torch.randn(64, 4, dtype=torch.float64))
        >>> jitter
        0.0
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"cholesky_whiten expects an (n, d) batch with n >= 2, got {tuple(x.shape)}")
    n, d = x.shape
    centred = x - x.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / (n - 1)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    shrunk = (1 - eps) * cov + eps * eye
    lower, info = torch.linalg.cholesky_ex(shrunk)
    used = 0.0
    if info.item() != 0:
        scale = cov.diagonal().mean().clamp_min(torch.finfo(cov.dtype).tiny)
        for jitter in JITTER:
            lower, info = torch.linalg.cholesky_ex(shrunk + (jitter * scale) * eye)
            if info.item() == 0:
                used = jitter
                if not _warned:
                    log.warning("cholesky_whiten: singular %dx%d covariance of %d samples; shrunk by %g x its mean "
                                "variance (raise the method's w_eps or w_size to avoid this; later occurrences "
                                "are not logged)", d, d, n, jitter)
                    _warned.append(True)
                break
        else:
            raise ValueError(f"cholesky_whiten: the covariance of the ({n}, {d}) batch is not positive definite "
                             f"even shrunk by {JITTER[-1]} x its mean variance; are the embeddings finite?")
    # rows W (x_i - m) = (L^{-1} centred^T)^T, by a triangular solve instead of an inverse
    return torch.linalg.solve_triangular(lower, centred.T, upper=False).T, used
