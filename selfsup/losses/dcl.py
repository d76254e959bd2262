"""Decoupled contrastive loss (DCL) and its von Mises-Fisher weighted variant (DCLW)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.nn.distributed import gather, gather_no_grad, rank, world_size
from selfsup.nn.precision import at_least_fp32

__all__ = ["DCLLoss", "DCLWLoss", "VonMisesFisherWeight"]

WeightFn = Callable[[Tensor, Tensor], Tensor]


class VonMisesFisherWeight(nn.Module):
    """DCLW's weight of the positive term, ``w_i = 2 - exp(s_i / sigma) / E_j[exp(s_j / sigma)]``.

    Yeh et al., "Decoupled Contrastive Learning", 2021, https://arxiv.org/abs/2110.06848, Sec. 3
    (DCLW); reference implementation https://github.com/raminnakhli/Decoupled-Contrastive-Learning.
    ``s_i = <z_i^(1), z_i^(2)>`` is the cosine similarity of sample ``i``'s two views and the
    expectation runs over the (global) batch, so ``w_i = 2 - N softmax(s / sigma)_i``: pairs that
    are already close get less than the average weight 1, hard pairs more. The weight is a
    constant for the optimiser (computed without gradient). With ``gather_distributed`` the
    expectation uses the pairs of every process.

    Args:
        sigma: Concentration ``sigma > 0`` (0.5 in the paper).
        gather_distributed: Average over the pairs of all processes.

    Example:
        >>> z0, z1 = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
        >>> round(float(VonMisesFisherWeight(sigma=0.5)(z0, z1).mean()), 4)  # weights average to one
        1.0
    """

    def __init__(self, sigma: float = 0.5, gather_distributed: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"VonMisesFisherWeight sigma must be finite and > 0, got {sigma}")
        self.sigma = float(sigma)
        self.gather_distributed = gather_distributed

    @torch.no_grad()
    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Return the ``(N,)`` weights of the pairs ``z0[i] <-> z1[i]`` (L2-normalised rows).

        Example:
            >>> z = F.normalize(torch.randn(3, 4), dim=1)
            >>> VonMisesFisherWeight(0.5)(z, z).round(decimals=4)  # identical pairs: equal weights
            tensor([1., 1., 1.])
        """
        sim = (z0 * z1).sum(dim=1) / self.sigma
        n = sim.shape[0]
        if self.gather_distributed and world_size() > 1:
            all_sim = gather_no_grad(sim)
            start = rank() * n
        else:
            all_sim, start = sim, 0
        total = all_sim.shape[0]
        return 2.0 - total * torch.softmax(all_sim, dim=0)[start : start + n]

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class DCLLoss(nn.Module):
    """Decoupled contrastive loss: InfoNCE without the positive pair in the denominator.

    Yeh et al., "Decoupled Contrastive Learning", 2021, https://arxiv.org/abs/2110.06848, Eq. 6;
    reference implementation https://github.com/raminnakhli/Decoupled-Contrastive-Learning. For
    the ``2N`` anchors ``z_i^(k)`` (rows L2-normalised, ``k`` in {1, 2})::

        L_i^(k) = -w_i <z_i^(1), z_i^(2)> / T + log sum_{l in {1,2}, j != i} exp(<z_i^(k), z_j^(l)> / T)

    i.e. the negatives are the ``2N - 2`` views of the other samples and neither the anchor nor its
    positive appears in the log-sum-exp. ``w_i = 1`` for DCL; DCLW passes
    :class:`VonMisesFisherWeight`. The loss is the mean over the ``2N`` anchors (the paper writes
    the sum; the mean keeps learning rates comparable with NT-Xent).

    With ``gather_distributed=True`` (and ``torch.distributed`` initialised) the negatives are the
    views of the global batch (:func:`selfsup.nn.gather`, with gradient) while each rank keeps its
    own anchors; the mean of the per-rank losses is the one-process loss on the concatenated batch
    and DDP's gradient averaging gives its gradient.

    Args:
        temperature: ``T > 0``; 0.1 by default (the reference implementation's default).
        weight_fn: ``(z0, z1) -> (N,)`` weights of the positive term (normalised inputs), or None.
        gather_distributed: Use the views of every process as negatives.

    Raises:
        ValueError: Bad temperature; inputs not two ``(N, D)`` tensors of one shape; a global
            batch of fewer than two samples (no negatives).

    Example:
        >>> loss_fn = DCLLoss(temperature=0.1)
        >>> loss = loss_fn(torch.randn(8, 128), torch.randn(8, 128))
    """

    def __init__(
        self, temperature: float = 0.1, weight_fn: WeightFn | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"DCLLoss temperature must be finite and > 0, got {temperature}")
        self.temperature = float(temperature)
        self.weight_fn = weight_fn
        self.gather_distributed = gather_distributed

    def forward(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Return the scalar loss for paired embeddings ``z0[i] <-> z1[i]`` of shape ``(N, D)``.

        Example:
            >>> z = torch.randn(4, 16)
            >>> DCLLoss(0.1)(z, z + 0.01 * torch.randn(4, 16)).shape
            torch.Size([])
        """
        if z0.dim() != 2 or z0.shape != z1.shape or z0.shape[0] == 0:
            raise ValueError(
                "DCLLoss expects two non-empty (N, D) tensors of the same shape, got "
                f"{tuple(z0.shape)} and {tuple(z1.shape)}"
            )
        distributed = self.gather_distributed and world_size() > 1
        if z0.shape[0] * (world_size() if distributed else 1) < 2:
            raise ValueError("DCLLoss needs a (global) batch of at least 2 samples to have negatives")
        with torch.autocast(z0.device.type, enabled=False):
            z0 = F.normalize(at_least_fp32(z0), dim=1)
            z1 = F.normalize(at_least_fp32(z1), dim=1)
            all0, all1 = (gather(z0), gather(z1)) if distributed else (z0, z1)
            offset = rank() * z0.shape[0] if distributed else 0
            loss0 = self._one_way(z0, z1, all0, all1, offset)
            loss1 = self._one_way(z1, z0, all1, all0, offset)
            return (loss0 + loss1) / 2

    def _one_way(self, a: Tensor, b: Tensor, all_a: Tensor, all_b: Tensor, offset: int) -> Tensor:
        """Mean loss of anchors ``a`` (positives ``b``) against the keys ``[all_a, all_b]``.

        ``offset`` is the position of this rank's rows in the gathered keys (Eq. 6, one view).
        """
        n, total = a.shape[0], all_a.shape[0]
        positive = (a * b).sum(dim=1) / self.temperature
        if self.weight_fn is not None:
            positive = positive * self.weight_fn(a, b)
        logits = torch.cat([a @ all_a.T, a @ all_b.T], dim=1) / self.temperature  # (n, 2 * total)
        rows = torch.arange(n, device=a.device)
        excluded = torch.zeros_like(logits, dtype=torch.bool)
        excluded[rows, offset + rows] = True  # the anchor itself
        excluded[rows, total + offset + rows] = True  # its positive
        negative = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
        return (negative - positive).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"


class DCLWLoss(DCLLoss):
    """DCL with the positive term weighted by :class:`VonMisesFisherWeight` (DCLW).

    Yeh et al., "Decoupled Contrastive Learning", 2021, https://arxiv.org/abs/2110.06848, Sec. 3;
    reference implementation https://github.com/raminnakhli/Decoupled-Contrastive-Learning.

    Args:
        temperature: ``T > 0`` (0.1).
        sigma: The weight's concentration (0.5, the paper's).
        gather_distributed: Global negatives and a global-batch expectation in the weight.

    Example:
        >>> loss_fn = DCLWLoss(temperature=0.1, sigma=0.5)
        >>> loss = loss_fn(torch.randn(8, 128), torch.randn(8, 128))
    """

    def __init__(
        self, temperature: float = 0.1, sigma: float = 0.5, gather_distributed: bool = False
    ) -> None:
        super().__init__(
            temperature=temperature,
            weight_fn=VonMisesFisherWeight(sigma, gather_distributed=gather_distributed),
            gather_distributed=gather_distributed,
        )
