"""W-MSE: the MSE between normalised, whitened embeddings of positive pairs."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather, world_size
from selfsup.nn.precision import at_least_fp32
from selfsup.nn.whitening import cholesky_whiten_shrunk, singular_to_precision

__all__ = ["WMSELoss"]


class WMSELoss(nn.Module):
    """Whiten sub-batches of each view, then pull the L2-normalised positives together.

    Ermolov, Siarohin, Sangineto, Sebe, "Whitening for Self-Supervised Representation Learning",
    2021, https://arxiv.org/abs/2007.06346, Sec. 3 and Alg. 1; official code
    https://github.com/htdt/self-supervised (``methods/w_mse.py``). For ``k`` views of ``N``
    images, ``w_iter`` times: draw a random permutation of the ``N`` images and cut it into
    sub-batches of ``w_size``; whiten each view's embeddings of each sub-batch separately
    (:func:`selfsup.nn.whitening.cholesky_whiten`); then for every pair of views ``(a, b)`` add
    ``mean_i ||u_a,i - u_b,i||^2 = 2 - 2 mean_i cos(w_a,i, w_b,i)`` with ``u`` the L2-normalised
    whitened rows. The loss is the sum divided by ``w_iter`` times the number of pairs
    ``k (k - 1) / 2``. Defaults are the official code's: ``w_size = 128``, ``w_iter = 1``,
    ``eps = 0``. After each call, :attr:`shrunk_fraction` holds the share of the whitened
    sub-batches whose own covariance (before the ``eps`` shrinkage) was singular to the whitening's
    precision (not positive definite, so shrunk further, or with a condition number above
    ``1 / eps`` of its dtype; see :func:`selfsup.nn.whitening.singular_to_precision`; never counted
    when ``w_size`` does not exceed the embedding width): a sign of dimensional collapse of the
    embeddings, where the official code's Cholesky fails or returns noise. :attr:`shrunk_count` /
    :attr:`whitening_count` hold the numbers behind it and :attr:`max_condition` the largest
    condition number met; the W-MSE method logs them and stops a run in which such sub-batches
    persist.

    With ``gather_distributed=True`` the embeddings of all processes are gathered (with gradient)
    and rank 0's permutation is broadcast, so every rank whitens the global batch exactly as one
    process would and computes the same loss; DDP's averaging then yields its gradient.

    Args:
        w_size: Sub-batch size of the whitening; the (global) batch must be a multiple of it and
            it should exceed the embedding width (or use ``eps > 0``).
        w_iter: Number of random sub-batch partitions averaged per step.
        eps: Shrinkage of the covariance towards the identity before the Cholesky factorisation.
        gather_distributed: Whiten the global batch across processes.

    Example:
        >>> loss_fn = WMSELoss(w_size=32)
        >>> loss = loss_fn([torch.randn(64, 8), torch.randn(64, 8)])
    """

    def __init__(
        self, w_size: int = 128, w_iter: int = 1, eps: float = 0.0, gather_distributed: bool = True
    ) -> None:
        super().__init__()
        if w_size < 2 or w_iter < 1 or not 0.0 <= eps < 1.0:
            raise ValueError(
                f"WMSELoss needs w_size >= 2, w_iter >= 1 and 0 <= eps < 1, got w_size={w_size}, "
                f"w_iter={w_iter}, eps={eps}"
            )
        self.w_size, self.w_iter, self.eps = int(w_size), int(w_iter), float(eps)
        self.gather_distributed = gather_distributed
        self.shrunk_fraction = 0.0
        self.shrunk_count = self.whitening_count = 0
        self.max_condition = 1.0

    def permutation(self, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """A random permutation of ``range(n)``, the same on every rank (rank 0's).

        Example:
            >>> sorted(WMSELoss().permutation(4, torch.device("cpu"), None).tolist())
            [0, 1, 2, 3]
        """
        perm = torch.randperm(n, generator=generator).to(device)
        if self.gather_distributed and world_size() > 1:
            dist.broadcast(perm, src=0)
        return perm

    def forward(
        self, embeddings: Sequence[torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Return the scalar loss for ``k >= 2`` views' embeddings, each ``(N, D)``, row-aligned.

        Args:
            embeddings: One ``(N, D)`` tensor per view; row ``i`` of each is the same image.
            generator: Optional CPU generator for the sub-batch permutations.

        Raises:
            ValueError: Fewer than two views, mismatched shapes, or a (global) batch that is not a
                positive multiple of ``w_size``.
            WhiteningCollapseError: A finite sub-batch whose covariance no shrinkage in
                :data:`selfsup.nn.whitening.JITTER` makes positive definite.

        Example:
            >>> WMSELoss(w_size=16)([torch.randn(16, 4), torch.randn(16, 4)]).shape
            torch.Size([])
        """
        if len(embeddings) < 2 or any(e.dim() != 2 or e.shape != embeddings[0].shape for e in embeddings):
            raise ValueError(
                "WMSELoss expects at least two (N, D) tensors of the same shape, got "
                f"{[tuple(e.shape) for e in embeddings]}"
            )
        device = embeddings[0].device
        with torch.autocast(device.type, enabled=False):  # the whitening in fp32 under autocast
            views = [at_least_fp32(e) for e in embeddings]
            if self.gather_distributed:
                views = [gather(v) for v in views]
            n = views[0].shape[0]
            if n % self.w_size != 0:
                raise ValueError(
                    f"WMSELoss: the batch of {n} samples (all processes together) is not a "
                    f"multiple of w_size={self.w_size}; change the batch size or method.w_size"
                )
            total = views[0].new_zeros(())
            pairs = shrunk = whitenings = 0
            conditions = []
            for _ in range(self.w_iter):
                chunks = self.permutation(n, device, generator).split(self.w_size)
                # every view is whitened per sub-batch; all views share the row order, so pairs stay aligned
                whitened = []
                for v in views:
                    parts = [cholesky_whiten_shrunk(v[idx], self.eps) for idx in chunks]
                    whitened.append(torch.cat([part.batch for part in parts]))
                    if self.w_size > v.shape[1]:  # fewer samples than dimensions: always singular
                        shrunk += sum(singular_to_precision(part, v.dtype) for part in parts)
                    whitenings += len(parts)
                    conditions += [part.condition for part in parts]
                for a in range(len(whitened)):
                    for b in range(a + 1, len(whitened)):
                        cos = (F.normalize(whitened[a], dim=1) * F.normalize(whitened[b], dim=1)).sum(dim=1)
                        total = total + (2 - 2 * cos.mean())
                        pairs += 1
            self.shrunk_fraction = shrunk / whitenings
            self.shrunk_count, self.whitening_count = shrunk, whitenings
            self.max_condition = max((c for c in conditions if not math.isnan(c)), default=math.nan)
            return total / pairs

    def extra_repr(self) -> str:
        return f"w_size={self.w_size}, w_iter={self.w_iter}, eps={self.eps}"
