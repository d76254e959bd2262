"""Context Encoders' reconstruction loss: a weighted L2 over the predicted centre region."""
from __future__ import annotations

import torch
from torch import nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["InpaintingLoss", "centre_weights", "hidden_pixels_loss", "weighted_squared_error"]


def centre_weights(side: int, overlap: int, overlap_weight: float) -> torch.Tensor:
    """``(side, side)`` weights: ``overlap_weight`` on a border ``overlap`` pixels wide, 1 inside.

    Example:
        >>> centre_weights(4, 1, 10.0)[:, 0].tolist()
        [10.0, 10.0, 10.0, 10.0]
    """
    if side < 1 or not 0 <= 2 * overlap < side + 1 or overlap_weight <= 0:
        raise ValueError(f"centre_weights needs side >= 1, 0 <= 2 * overlap <= side and overlap_weight > 0, "
                         f"got side={side}, overlap={overlap}, overlap_weight={overlap_weight}")
    weights = torch.full((side, side), float(overlap_weight))
    weights[overlap:side - overlap, overlap:side - overlap] = 1.0
    return weights


class InpaintingLoss(nn.Module):
    """The weighted mean squared error of a predicted centre region.

    Pathak, Krahenbuhl, Donahue, Darrell, Efros, "Context Encoders: Feature Learning by Inpainting",
    CVPR 2016, https://arxiv.org/abs/1604.07379, Sec. 3.2 and the official code
    (https://github.com/pathak22/context-encoder, ``train.lua``: ``overlapPred = 4`` of a 64-pixel
    centre, ``overlapL2Weight = 10``): the network predicts the whole centre, whose outer
    ``overlap`` pixels stay visible in its input, and their squared errors weigh ``overlap_weight``
    times the hidden interior's. Here the loss is the weighted mean
    ``sum(W (p - t)^2) / (B C sum(W))``. The paper's adversarial term (weight 0.001) is not
    implemented: this is its reconstruction-only variant.

    Example:
        >>> loss = InpaintingLoss(overlap=1)(torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8))
    """

    def __init__(self, overlap: int = 4, overlap_weight: float = 10.0) -> None:
        super().__init__()
        self.overlap, self.overlap_weight = int(overlap), float(overlap_weight)
        self._weights: dict[tuple[int, torch.device], torch.Tensor] = {}  # built once per side and device

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss for ``(B, C, S, S)`` predictions and targets of the centre region."""
        if prediction.shape != target.shape or prediction.dim() != 4 or prediction.shape[-1] != prediction.shape[-2]:
            raise ValueError(f"InpaintingLoss needs square (B, C, S, S) predictions and targets of one shape, got "
                             f"{tuple(prediction.shape)} and {tuple(target.shape)}")
        key = (prediction.shape[-1], prediction.device)
        if key not in self._weights:
            self._weights[key] = centre_weights(key[0], self.overlap, self.overlap_weight).to(key[1])
        return weighted_squared_error(prediction, target, self._weights[key])

    def extra_repr(self) -> str:
        return f"overlap={self.overlap}, overlap_weight={self.overlap_weight}"


def hidden_pixels_loss(prediction: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """The mean squared error over the hidden pixels only, the paper's Eq. 1
    ``|| M * (x - F((1 - M) * x)) ||^2`` normalised by the number of hidden values.

    Pathak et al. 2016, https://arxiv.org/abs/1604.07379, Sec. 3.2; used with its random-region masks
    (:func:`~selfsup.nn.region_mask.random_region_mask`). ``prediction`` and ``target`` are
    ``(B, C, H, W)``; ``hidden`` is ``(B, 1, H, W)`` and True where the input was hidden.

    Example:
        >>> hidden = torch.zeros(1, 1, 2, 2, dtype=torch.bool); hidden[..., 0, 0] = True
        >>> float(hidden_pixels_loss(torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), hidden))
        1.0
    """
    if prediction.shape != target.shape or prediction.dim() != 4 or hidden.shape != (
            prediction.shape[0], 1, *prediction.shape[2:]):
        raise ValueError(f"hidden_pixels_loss needs (B, C, H, W) predictions and targets of one shape and a "
                         f"(B, 1, H, W) mask, got {tuple(prediction.shape)}, {tuple(target.shape)} and "
                         f"{tuple(hidden.shape)}")
    return weighted_squared_error(prediction, target, hidden)


def weighted_squared_error(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(W (p - t)^2) / sum(W)`` over every value of ``(B, C, H, W)`` predictions, in at least
    float32 and outside autocast, the target detached; ``weights`` broadcast over the batch and
    channels (``(H, W)`` or ``(B, 1, H, W)``). All-zero weights give 0.

    Example:
        >>> float(weighted_squared_error(torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2), torch.eye(2)))
        1.0
    """
    with torch.autocast(prediction.device.type, enabled=False):
        error = (at_least_fp32(prediction) - at_least_fp32(target.detach())).square()
        weights = weights.to(error.dtype).expand_as(error)
        return (error * weights).sum() / weights.sum().clamp_min(torch.finfo(error.dtype).tiny)
