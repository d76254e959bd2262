"""The KoLeo regulariser: spread features out by pushing each away from its nearest neighbour."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["KoLeoLoss"]


class KoLeoLoss(nn.Module):
    """``-1/n sum_i log(min_{j != i} ||x_i - x_j|| + eps)`` over L2-normalised rows ``x``.

    The Kozachenko-Leonenko differential-entropy estimator as a regulariser, Sablayrolles et al.
    2019, "Spreading vectors for similarity search", arXiv 1806.03198
    (https://arxiv.org/abs/1806.03198), used on the class tokens by DINOv2 (Oquab et al. 2023,
    "DINOv2: Learning Robust Visual Features without Supervision", arXiv 2304.07193,
    https://arxiv.org/abs/2304.07193, Sec. 4; official code
    https://github.com/facebookresearch/dinov2 ``loss/koleo_loss.py``, weight 0.1 per global
    view). The nearest neighbour is found without gradient (largest cosine); the distance to it
    carries the gradient. Computed within the local batch, in at least fp32.

    Args:
        eps: added to the distance inside the log (1e-8).

    Example:
        >>> KoLeoLoss()(torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The loss of a batch ``(B, D)``, ``B >= 2``."""
        if features.dim() != 2 or features.shape[0] < 2:
            raise ValueError(f"KoLeoLoss expects (B, D) features with B >= 2, got {tuple(features.shape)}")
        with torch.autocast(features.device.type, enabled=False):
            x = F.normalize(at_least_fp32(features), dim=-1, eps=self.eps)
            with torch.no_grad():
                similarity = x @ x.T
                similarity.fill_diagonal_(-2.0)
                nearest = similarity.argmax(dim=1)
            distances = (x - x[nearest]).norm(dim=-1)
            return -torch.log(distances + self.eps).mean()
