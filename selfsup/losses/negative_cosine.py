"""SimSiam's negative cosine similarity."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["NegativeCosineSimilarity"]


class NegativeCosineSimilarity(nn.Module):
    """Negative mean cosine similarity, ``-mean_i cos(x0_i, x1_i)``.

    The ``D(p, z)`` of SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning",
    2021, https://arxiv.org/abs/2011.10566, Eq. 1 and Alg. 1; official code
    https://github.com/facebookresearch/simsiam), also used by BYOL up to an affine change.
    This module does **not** stop gradients: SimSiam's ``D(p, stopgrad(z))`` is the caller's job,
    e.g. ``loss_fn(p1, z2.detach())``.

    Args:
        dim: Dimension along which the cosine is taken.
        eps: Lower bound on the norms, as in ``torch.nn.functional.cosine_similarity``.

    Example:
        >>> loss_fn = NegativeCosineSimilarity()
        >>> loss = loss_fn(torch.randn(8, 64), torch.randn(8, 64).detach())
    """

    def __init__(self, dim: int = 1, eps: float = 1e-8) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Return ``-mean(cos(x0, x1))`` over all positions other than ``dim`` (a scalar).

        Example:
            >>> x = torch.randn(4, 8)
            >>> round(float(NegativeCosineSimilarity()(x, x)), 4)
            -1.0
        """
        with torch.autocast(x0.device.type, enabled=False):  # the loss in fp32 under mixed precision
            return -F.cosine_similarity(at_least_fp32(x0), at_least_fp32(x1), dim=self.dim, eps=self.eps).mean()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"
