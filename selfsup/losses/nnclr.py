"""NNCLR's contrastive loss: nearest neighbours from the support set as positives."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather, rank
from selfsup.nn.precision import at_least_fp32

__all__ = ["NNCLRLoss"]


class NNCLRLoss(nn.Module):
    """``-log(exp(NN_i . p_i / tau) / sum_k exp(NN_i . p_k / tau))``, mean over ``i``.

    Dwibedi, Aytar, Tompson, Sermanet, Zisserman, "With a Little Help from My Friends:
    Nearest-Neighbor Contrastive Learning of Visual Representations", 2021,
    https://arxiv.org/abs/2104.14548, Eq. 2 (and Sec. 3.3 for the predictor); no official code,
    public re-implementation in solo-learn (https://github.com/vturrisi/solo-learn). ``NN_i`` is
    the support-set nearest neighbour of sample ``i``'s projection in one view and ``p_k`` the
    prediction of sample ``k`` in the other view; both are L2-normalised, and the sum over ``k``
    runs over the global batch (predictions of all processes gathered with
    :func:`selfsup.nn.gather`; sample ``i`` of rank ``r`` has label ``r * n + i``). NNCLR
    averages this loss over the two view orders. The neighbours carry no gradient (they come from
    the queue); the gradient flows through the predictions.

    Args:
        temperature: ``tau > 0``; 0.1 in the paper.
        gather_distributed: Use the predictions of all processes as negatives.

    Raises:
        ValueError: ``temperature`` is not finite and positive.

    Example:
        >>> loss_fn = NNCLRLoss(temperature=0.1)
        >>> loss = loss_fn(torch.randn(8, 256), torch.randn(8, 256))
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = True) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"NNCLRLoss temperature must be finite and > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    def forward(self, neighbours: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss of ``neighbours`` (n, d) against ``predictions`` (n, d).

        Raises:
            ValueError: The inputs are not two non-empty ``(n, d)`` tensors of the same shape.

        Example:
            >>> NNCLRLoss()(torch.randn(4, 16), torch.randn(4, 16)).shape
            torch.Size([])
        """
        if neighbours.dim() != 2 or neighbours.shape != predictions.shape or len(neighbours) == 0:
            raise ValueError(
                "NNCLRLoss expects two non-empty (n, d) tensors of the same shape, got "
                f"{tuple(neighbours.shape)} and {tuple(predictions.shape)}"
            )
        with torch.autocast(neighbours.device.type, enabled=False):
            dtype = torch.promote_types(at_least_fp32(neighbours).dtype, predictions.dtype)
            anchors = F.normalize(neighbours.to(dtype), dim=1)
            candidates = F.normalize(predictions.to(dtype), dim=1)
            offset = 0
            if self.gather_distributed:
                candidates, offset = gather(candidates), rank() * anchors.shape[0]
            logits = anchors @ candidates.T / self.temperature
            labels = torch.arange(anchors.shape[0], device=anchors.device) + offset
            return F.cross_entropy(logits, labels)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"
