"""TiCo's transformation-invariance + covariance-contrast loss with a running covariance."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather
from selfsup.nn.precision import at_least_fp32

__all__ = ["TiCoLoss"]


class TiCoLoss(nn.Module):
    """TiCo: ``-mean_i <z_i, z'_i> + rho * mean_i z_i^T C z_i`` with a running covariance ``C``.

    Zhu, Moraes, Karakulak, Sobol, Canziani, LeCun, "TiCo: Transformation Invariance and
    Covariance Contrast for Self-Supervised Visual Representation Learning", 2022,
    https://arxiv.org/abs/2206.10698, Eq. 6-7 and Alg. 1 (no official code is published; the
    paper's pseudo-code is followed, cf. the re-implementation
    https://github.com/sayannag/TiCo-pytorch). Rows of ``z0, z1`` are L2-normalised; ``z0`` (the
    online branch) feeds the covariance and both terms, ``z1`` (in :class:`~selfsup.methods.TiCo`
    the momentum encoder's output) only the invariance term. Each step
    ``C_t = beta * C_{t-1} + (1 - beta) * B_t`` with ``B_t = z0^T z0 / N`` and the loss uses
    ``C_t``. ``C`` starts at zero and is a buffer (saved in checkpoints); it is updated only in
    training mode, after the loss is computed, with the detached ``C_t``. Defaults
    ``beta = 0.9``, ``rho = 20`` are those an earlier lightly ``TiCoLoss`` cited from the paper
    (lightly 1.6 and sayannag's code give ``rho = 8`` as the paper's value).

    Gradient through the current batch: ``C_{t-1}`` is a constant, but ``B_t`` is not detached,
    so ``d/dz_i`` of the contrast term is ``(2 rho / N) (C_t + (1 - beta) B_t) z_i``. This is the
    paper's Alg. 1: its pseudo-code computes ``B`` and ``C`` from ``z_1`` without a stop-gradient,
    back-propagates the loss, and only then keeps ``C_prev = C.detach()`` for the next step (a
    detach that would be needless if ``B`` carried no gradient); the loss of Eq. 6-7 is likewise a
    function of the current batch through ``C_t``, which is what makes it, at ``beta = 0``,
    ``rho * ||z0^T z0 / N||_F^2`` (the paper's link to Barlow Twins). sayannag's re-implementation
    does the same. lightly detaches ``B`` since its PR #1484 (2024, citing the paper's figure,
    not the algorithm), which keeps only ``(2 rho / N) C_t z_i``: the current batch's share of
    the contrast gradient is halved.

    With ``gather_distributed=True`` the embeddings of all processes are gathered (with gradient):
    every rank uses the global batch for both terms, keeps the same ``C`` and computes the same
    loss, and DDP's averaging yields its gradient.

    Args:
        dim: Embedding width (the size of ``C``).
        beta: Momentum of the running covariance.
        rho: Weight of the covariance-contrast term.
        gather_distributed: Use the global batch across processes.

    Attributes:
        covariance: ``(dim, dim)`` buffer, the running ``C``.

    Example:
        >>> loss_fn = TiCoLoss(dim=32)
        >>> loss = loss_fn(torch.randn(16, 32), torch.randn(16, 32))
    """

    covariance: torch.Tensor

    def __init__(
        self, dim: int, beta: float = 0.9, rho: float = 20.0, gather_distributed: bool = True
    ) -> None:
        super().__init__()
        if dim < 1 or not 0.0 <= beta < 1.0 or rho < 0:
            raise ValueError(
                f"TiCoLoss needs dim >= 1, 0 <= beta < 1 and rho >= 0, got dim={dim}, beta={beta}, rho={rho}"
            )
        self.beta, self.rho = float(beta), float(rho)
        self.gather_distributed = gather_distributed
        self.register_buffer("covariance", torch.zeros(dim, dim))

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for paired embeddings ``(N, dim)``; updates ``C`` in training mode.

        Raises:
            ValueError: The inputs are not two ``(N, dim)`` tensors of the same shape.

        Example:
            >>> TiCoLoss(dim=8)(torch.randn(4, 8), torch.randn(4, 8)).shape
            torch.Size([])
        """
        dim = self.covariance.shape[0]
        if z0.dim() != 2 or z0.shape != z1.shape or z0.shape[0] == 0 or z0.shape[1] != dim:
            raise ValueError(
                f"TiCoLoss expects two (N, {dim}) tensors of the same shape, got "
                f"{tuple(z0.shape)} and {tuple(z1.shape)}"
            )
        with torch.autocast(z0.device.type, enabled=False):  # the loss in fp32 under autocast
            z0 = F.normalize(at_least_fp32(z0), dim=1)
            z1 = F.normalize(at_least_fp32(z1), dim=1)
            if self.gather_distributed:
                z0, z1 = gather(z0), gather(z1)
            batch_cov = z0.T @ z0 / z0.shape[0]
            cov = self.beta * self.covariance.to(z0.dtype) + (1 - self.beta) * batch_cov
            invariance = -(z0 * z1).sum(dim=1).mean()
            contrast = ((z0 @ cov) * z0).sum(dim=1).mean()
            if self.training:
                with torch.no_grad():
                    self.covariance.copy_(cov.detach())
            return invariance + self.rho * contrast

    def extra_repr(self) -> str:
        return f"dim={self.covariance.shape[0]}, beta={self.beta}, rho={self.rho}"
