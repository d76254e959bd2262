"""Barlow Twins' redundancy-reduction loss on the cross-correlation matrix of two views."""
from __future__ import annotations

import torch
from torch import nn

from selfsup.nn.distributed import gather
from selfsup.nn.precision import at_least_fp32

__all__ = ["BarlowTwinsLoss", "batch_standardize", "off_diagonal"]


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix as a flat vector.

    Used by Barlow Twins (Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", 2021, https://arxiv.org/abs/2103.03230; official code
    https://github.com/facebookresearch/barlowtwins) and VICReg (Bardes et al., 2021,
    https://arxiv.org/abs/2105.04906).

    Args:
        matrix: ``(d, d)`` tensor.

    Returns:
        ``(d * d - d,)`` tensor of the entries ``matrix[i, j]`` with ``i != j``.

    Example:
        >>> off_diagonal(torch.arange(4.0).view(2, 2))
        tensor([1., 2.])
    """
    d = matrix.shape[0]
    if matrix.dim() != 2 or matrix.shape[1] != d:
        raise ValueError(f"off_diagonal expects a square matrix, got shape {tuple(matrix.shape)}")
    mask = ~torch.eye(d, dtype=torch.bool, device=matrix.device)
    return matrix[mask]


def batch_standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Standardise each column over the batch: ``(z - mean) / sqrt(biased var + eps)``.

    This is ``BatchNorm1d(d, affine=False)`` in training mode, the normalisation Barlow Twins
    applies to the embeddings before the cross-correlation (Zbontar et al. 2021,
    https://arxiv.org/abs/2103.03230, Alg. 1; official code
    https://github.com/facebookresearch/barlowtwins, ``self.bn``).

    Args:
        z: ``(n, d)`` embeddings, ``n >= 2``.
        eps: Added to the variance, as in ``BatchNorm1d``.

    Example:
        >>> batch_standardize(torch.randn(8, 4)).mean(0).abs().max() < 1e-5
        tensor(True)
    """
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins' loss: drive the cross-correlation matrix of two views to the identity.

    Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", 2021, https://arxiv.org/abs/2103.03230, Eq. 1-2; official code
    https://github.com/facebookresearch/barlowtwins. With ``z0, z1`` standardised column-wise over
    the batch of ``N`` samples, ``C = z0^T z1 / N`` and the loss is
    ``scale_loss * (sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2)``.
    ``lambd = 0.0051`` is the official code's default; the current official code does not scale
    the loss (``scale_loss = 1``; an early version used 0.024, solo-learn's CIFAR recipe 0.1).

    With ``gather_distributed=True`` the embeddings of all processes are gathered (with gradient),
    so the standardisation and ``C`` use the global batch, as the official code does with
    SyncBatchNorm and an all-reduce of ``C``. Every rank then computes the same (global) loss; the
    gradient that :func:`selfsup.nn.gather` hands each rank is ``world_size`` times its share,
    which DDP's averaging turns back into the gradient of the global loss.

    Args:
        lambd: Weight of the off-diagonal (redundancy-reduction) term.
        scale_loss: Factor on the whole loss.
        eps: Variance epsilon of the standardisation (``BatchNorm1d``'s 1e-5).
        gather_distributed: Use the global batch across processes.

    Example:
        >>> loss_fn = BarlowTwinsLoss(lambd=0.0051)
        >>> loss = loss_fn(torch.randn(16, 32), torch.randn(16, 32))
    """

    def __init__(
        self,
        lambd: float = 0.0051,
        scale_loss: float = 1.0,
        eps: float = 1e-5,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if lambd < 0 or scale_loss <= 0 or eps < 0:
            raise ValueError(
                "BarlowTwinsLoss needs lambd >= 0, scale_loss > 0 and eps >= 0, got "
                f"lambd={lambd}, scale_loss={scale_loss}, eps={eps}"
            )
        self.lambd, self.scale_loss, self.eps = float(lambd), float(scale_loss), float(eps)
        self.gather_distributed = gather_distributed

    def cross_correlation(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """The ``(d, d)`` matrix ``C`` of the paper's Eq. 2 over the (global) batch.

        Example:
            >>> BarlowTwinsLoss().cross_correlation(torch.randn(8, 4), torch.randn(8, 4)).shape
            torch.Size([4, 4])
        """
        if self.gather_distributed:
            z0, z1 = gather(z0), gather(z1)
        n = z0.shape[0]
        return batch_standardize(z0, self.eps).T @ batch_standardize(z1, self.eps) / n

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for paired embeddings ``z0[i] <-> z1[i]``, each ``(N, D)``.

        Raises:
            ValueError: The inputs are not two ``(N, D)`` tensors of the same shape with ``N >= 2``.

        Example:
            >>> BarlowTwinsLoss()(torch.randn(4, 8), torch.randn(4, 8)).shape
            torch.Size([])
        """
        if z0.dim() != 2 or z0.shape != z1.shape or z0.shape[0] < 2:
            raise ValueError(
                "BarlowTwinsLoss expects two (N, D) tensors of the same shape with N >= 2, got "
                f"{tuple(z0.shape)} and {tuple(z1.shape)}"
            )
        with torch.autocast(z0.device.type, enabled=False):  # the loss in fp32 under autocast
            c = self.cross_correlation(at_least_fp32(z0), at_least_fp32(z1))
            on_diag = (torch.diagonal(c) - 1).pow(2).sum()
            off_diag = off_diagonal(c).pow(2).sum()
            return self.scale_loss * (on_diag + self.lambd * off_diag)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}, scale_loss={self.scale_loss}, eps={self.eps}"
