"""VICReg's variance-invariance-covariance regularisation loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.losses.barlow_twins import off_diagonal
from selfsup.nn.distributed import gather
from selfsup.nn.precision import at_least_fp32

__all__ = ["VICRegLoss"]


class VICRegLoss(nn.Module):
    """VICReg's loss: invariance (MSE) + variance (hinge on the std) + covariance (decorrelation).

    Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", 2021, https://arxiv.org/abs/2105.04906, Eq. 1-6 and Alg. 1;
    official code https://github.com/facebookresearch/vicreg. For embeddings ``z0, z1`` of shape
    ``(N, d)``:

    * invariance ``s = mean((z0 - z1)^2)`` over all ``N * d`` entries;
    * variance ``v(z) = mean_j relu(gamma - sqrt(Var(z_j) + eps))`` with the unbiased variance of
      column ``j``, averaged over the two views;
    * covariance ``c(z) = sum_{i != j} Cov(z)_ij^2 / d`` with ``Cov(z) = (z - mean)^T (z - mean)
      / (N - 1)``, summed over the two views;

    and the loss is ``sim_weight * s + var_weight * (v(z0) + v(z1)) / 2 + cov_weight * (c(z0) +
    c(z1))``. Defaults are the paper's: 25, 25, 1, ``gamma = 1``, ``eps = 1e-4``.

    With ``gather_distributed=True`` the variance and covariance terms use the embeddings of all
    processes (gathered with gradient) while the invariance term uses this process's batch, as in
    the official code. The mean over ranks of the per-rank losses then equals the loss on the
    concatenated batch, and DDP's gradient averaging gives its gradient.

    Args:
        sim_weight: Weight of the invariance term (``lambda``).
        var_weight: Weight of the variance term (``mu``).
        cov_weight: Weight of the covariance term (``nu``).
        gamma: Target standard deviation.
        eps: Added to the variance before the square root.
        gather_distributed: Variance and covariance over the global batch.

    Example:
        >>> loss_fn = VICRegLoss()
        >>> loss = loss_fn(torch.randn(16, 32), torch.randn(16, 32))
    """

    def __init__(
        self,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if min(sim_weight, var_weight, cov_weight) < 0 or eps < 0:
            raise ValueError(
                "VICRegLoss weights and eps must be >= 0, got "
                f"sim_weight={sim_weight}, var_weight={var_weight}, cov_weight={cov_weight}, eps={eps}"
            )
        self.sim_weight, self.var_weight, self.cov_weight = sim_weight, var_weight, cov_weight
        self.gamma, self.eps = gamma, eps
        self.gather_distributed = gather_distributed

    def variance(self, z: torch.Tensor) -> torch.Tensor:
        """Hinge on the per-dimension standard deviation, ``mean_j relu(gamma - std_j)`` (Eq. 1).

        Example:
            >>> round(float(VICRegLoss().variance(torch.zeros(4, 3))), 4)  # std 0.01 everywhere
            0.99
        """
        std = torch.sqrt(z.var(dim=0) + self.eps)
        return F.relu(self.gamma - std).mean()

    @staticmethod
    def covariance(z: torch.Tensor) -> torch.Tensor:
        """Sum of squared off-diagonal covariances divided by the width ``d`` (Eq. 3-4).

        Example:
            >>> float(VICRegLoss.covariance(torch.randn(16, 1)))  # one dimension: no off-diagonal
            0.0
        """
        n, d = z.shape
        z = z - z.mean(dim=0)
        cov = z.T @ z / (n - 1)
        return off_diagonal(cov).pow(2).sum() / d

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for paired embeddings ``z0[i] <-> z1[i]``, each ``(N, D)``.

        Raises:
            ValueError: The inputs are not two ``(N, D)`` tensors of the same shape with ``N >= 2``.

        Example:
            >>> VICRegLoss()(torch.randn(4, 8), torch.randn(4, 8)).shape
            torch.Size([])
        """
        if z0.dim() != 2 or z0.shape != z1.shape or z0.shape[0] < 2:
            raise ValueError(
                "VICRegLoss expects two (N, D) tensors of the same shape with N >= 2, got "
                f"{tuple(z0.shape)} and {tuple(z1.shape)}"
            )
        with torch.autocast(z0.device.type, enabled=False):  # the loss in fp32 under autocast
            z0, z1 = at_least_fp32(z0), at_least_fp32(z1)
            invariance = F.mse_loss(z0, z1)
            if self.gather_distributed:
                z0, z1 = gather(z0), gather(z1)
            variance = (self.variance(z0) + self.variance(z1)) / 2
            covariance = self.covariance(z0) + self.covariance(z1)
            return (
                self.sim_weight * invariance
                + self.var_weight * variance
                + self.cov_weight * covariance
            )

    def extra_repr(self) -> str:
        return (
            f"sim_weight={self.sim_weight}, var_weight={self.var_weight}, "
            f"cov_weight={self.cov_weight}, gamma={self.gamma}, eps={self.eps}"
        )
