"""SwAV's swapped prediction loss: predict one view's codes from the other views' scores."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["SwAVLoss"]


class SwAVLoss(nn.Module):
    """Cross-entropy between the codes of each assignment view and every other view's softmax.

    Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
    Assignments", arXiv 2006.09882 (https://arxiv.org/abs/2006.09882), Eq. 2-3 and Alg. 1;
    official code https://github.com/facebookresearch/swav (``main_swav.py``): with codes ``q_a``
    of assignment view ``a`` (the global crops, from Sinkhorn-Knopp) and prototype scores ``s_v``
    of view ``v``, the loss is the mean over ``a`` of
    ``1 / (V - 1) sum_{v != a} mean_b [-sum_k q_a log softmax(s_v / tau)]``. Computed in at least
    fp32; the codes carry no gradient.

    Args:
        temperature: ``tau`` (0.1).

    Example:
        >>> scores, codes = torch.randn(4, 8, 10), torch.softmax(torch.randn(2, 8, 10), -1)
        >>> SwAVLoss(0.1)(scores, codes).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"SwAVLoss temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, scores: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Loss from scores ``(V, B, K)`` of all views and codes ``(A, B, K)`` of views ``0..A-1``."""
        if scores.dim() != 3 or codes.dim() != 3 or scores.shape[1:] != codes.shape[1:]:
            raise ValueError(
                f"SwAVLoss expects scores (V, B, K) and codes (A, B, K), got {tuple(scores.shape)} "
                f"and {tuple(codes.shape)}"
            )
        num_assign, num_views = codes.shape[0], scores.shape[0]
        if num_views < 2 or num_assign > num_views:
            raise ValueError(f"SwAVLoss needs V >= 2 views and A <= V, got V={num_views}, A={num_assign}")
        with torch.autocast(scores.device.type, enabled=False):
            log_probs = F.log_softmax(at_least_fp32(scores) / self.temperature, dim=-1)
            codes = at_least_fp32(codes.detach())
            cross = -torch.einsum("abk,vbk->av", codes, log_probs) / scores.shape[1]
            keep = ~torch.eye(num_assign, num_views, dtype=torch.bool, device=cross.device)
            # every assignment view has V - 1 partners, so the plain mean equals the paper's average
            return cross[keep].mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
