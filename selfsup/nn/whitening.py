"""Cholesky whitening of a batch of embeddings (W-MSE)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from selfsup.errors import SelfSupError

__all__ = ["Whitened", "WhiteningCollapseError", "cholesky_whiten", "cholesky_whiten_shrunk", "singular_to_precision"]

JITTER = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""Shrinkage tried, in order, when the covariance is singular (relative to its mean variance)."""


class WhiteningCollapseError(SelfSupError, RuntimeError):
    """The embeddings being whitened have collapsed (their covariance is singular).

    Raised by W-MSE when sub-batches singular to the whitening's precision persist
    (``method.collapse_window`` / ``method.collapse_share``), and by :func:`cholesky_whiten` for a
    finite batch whose covariance no shrinkage in :data:`JITTER` makes positive definite.
    """


class Whitened(NamedTuple):
    """What :func:`cholesky_whiten_shrunk` returns."""

    batch: torch.Tensor
    """The ``(n, d)`` whitened batch."""
    jitter: float
    """Shrinkage from :data:`JITTER` added to a covariance that was not positive definite (relative
    to its mean variance); 0.0 when none was needed."""
    condition: float
    """Condition number (largest / smallest eigenvalue, in float64) of the batch's own covariance
    ``S`` as the whitening computed it, before any shrinkage: how well the embeddings span their
    ``d`` dimensions. ``inf`` when ``S`` has no positive smallest eigenvalue; NaN for a non-finite
    batch (which is then not counted as singular: the NaN loss is the engine's to report)."""


def singular_to_precision(whitened: Whitened, dtype: torch.dtype) -> bool:
    """Whether the embeddings of a whitened batch are singular to the working precision ``dtype``.

    That is: their covariance was not positive definite (:attr:`Whitened.jitter` > 0), or its
    condition number exceeds ``1 / finfo(dtype).eps`` (8.4e6 in float32), beyond which its
    smallest eigenvalue is below the rounding error of its largest and the whitened batch's
    weakest directions are rounding noise scaled up to unit variance (the usual numerical-rank
    criterion, as in ``numpy.linalg.matrix_rank``, without its factor ``d``). The condition is the
    unshrunk covariance's, so shrinkage does not hide a collapse; with ``n <= d`` samples the
    covariance is always singular, so callers should not count then.

    Example:
        >>> x = torch.randn(128, 4) * torch.tensor([1.0, 1.0, 1.0, 1e-5])
        >>> singular_to_precision(cholesky_whiten_shrunk(x), torch.float32)
        True
    """
    return whitened.jitter > 0 or whitened.condition > 1.0 / torch.finfo(dtype).eps


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
    makes it positive definite; :func:`cholesky_whiten_shrunk` says when, and W-MSE counts such
    sub-batches and stops a run in which they persist. A non-singular batch is whitened exactly as
    above. A batch with non-finite values comes back as NaN (so the loss is NaN, which the engine's
    non-finite guard reports).

    Args:
        x: ``(n, d)`` batch; ``n > d`` unless ``eps > 0``, or the covariance is singular.
        eps: Shrinkage towards the identity (the official code's ``w_eps``, default 0).

    Returns:
        ``(n, d)`` whitened batch.

    Raises:
        WhiteningCollapseError: The batch is finite but no listed jitter makes its covariance
            positive definite.

    Example:
        >>> w = cholesky_whiten(torch.randn(64, 4, dtype=torch.float64))
        >>> torch.allclose(w.T @ w / 63, torch.eye(4, dtype=torch.float64))
        True
    """
    return cholesky_whiten_shrunk(x, eps).batch


def cholesky_whiten_shrunk(x: torch.Tensor, eps: float = 0.0) -> Whitened:
    """:func:`cholesky_whiten`, also returning the extra shrinkage a singular covariance needed
    and the condition number of the batch's covariance (see :func:`singular_to_precision`).

    Returns:
        :class:`Whitened`: the ``(n, d)`` whitened batch, the jitter from :data:`JITTER` that was
        added (relative to the mean variance; ``0.0`` when the covariance was positive definite as
        it was, or not finite: then the batch is all NaN) and the condition number.

    Example:
        >>> w, jitter, condition = cholesky_whiten_shrunk(torch.randn(64, 4, dtype=torch.float64))
        >>> jitter, condition < 10
        (0.0, True)
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"cholesky_whiten expects an (n, d) batch with n >= 2, got {tuple(x.shape)}")
    n, d = x.shape
    centred = x - x.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / (n - 1)
    if not bool(torch.isfinite(cov).all()):
        # NaN out (with a graph), so the loss is NaN and the engine's non-finite guard skips or stops
        return Whitened(centred * float("nan"), 0.0, float("nan"))
    eig = torch.linalg.eigvalsh(cov.detach().double())
    condition = float(eig[-1] / eig[0]) if float(eig[0]) > 0 else float("inf")
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
                break
        else:
            raise WhiteningCollapseError(
                f"cholesky_whiten: the covariance of the ({n}, {d}) batch is not positive definite even shrunk "
                f"by {JITTER[-1]} x its mean variance ({float(scale):.3g}): the embeddings have (almost) no "
                "variance, a complete collapse."
            )
    # rows W (x_i - m) = (L^{-1} centred^T)^T, by a triangular solve instead of an inverse
    return Whitened(torch.linalg.solve_triangular(lower, centred.T, upper=False).T, used, condition)
