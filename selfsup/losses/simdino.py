"""SimDINO's loss: cosine agreement with the teacher plus a coding-rate expansion term."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather
from selfsup.nn.precision import at_least_fp32

__all__ = ["SimDINOLoss", "coding_rate"]


def coding_rate(w: torch.Tensor, eps: float) -> torch.Tensor:
    """``1/2 logdet(I + p / (m eps) W^T W)`` of ``m`` samples ``W`` of width ``p`` (the rate distortion
    of Ma et al. 2007 and MCR^2, Yu et al. 2020), by the Cholesky factor's log-diagonal.

    Example:
        >>> float(coding_rate(torch.zeros(8, 4), 0.5))
        0.0
    """
    m, p = w.shape
    gram = torch.eye(p, dtype=w.dtype, device=w.device) + (p / (m * eps)) * (w.T @ w)
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        raise FloatingPointError("coding_rate: I + c W^T W is not positive definite (non-finite features?)")
    return factor.diagonal().log().sum()


class SimDINOLoss(nn.Module):
    """``-coeff * compression - expansion`` for student views ``(S, B, p)`` and teacher views ``(T, B, p)``.

    Wu, Zhang, Buchanan, Ma, et al. 2025, "Simplifying DINO via Coding Rate Regularization",
    https://arxiv.org/abs/2502.10385, Eq. 8; official code https://github.com/RobinWu218/SimDINO
    (``simdino/main_dino.py``, ``MCRLoss``). Compression: the mean cosine similarity between the
    teacher's view ``i`` and the student's view ``v`` of the same image, over all pairs with
    ``v != i``. Expansion: for each global view ``i``, the coding rate (:func:`coding_rate`, ``eps``)
    of the average of the student's and the teacher's features of that view (the official
    ``expa_type=1``), averaged over the global views and scaled by ``gamma = (p + m) / (p m)`` for a
    batch of ``m`` images. No centring, no sharpening, no prototypes. With
    ``gather_distributed=True`` the expansion uses the global batch (all processes' features,
    gathered with gradient), which is the official ``reduce_cov=1``.

    Args:
        eps: the coding rate's precision (official 0.5).
        coeff: weight of the compression term (official 1).
        gather_distributed: the expansion term over the global batch.

    Example:
        >>> loss, compression, expansion = SimDINOLoss()(torch.randn(4, 8, 16), torch.randn(2, 8, 16))
    """

    def __init__(self, eps: float = 0.5, coeff: float = 1.0, gather_distributed: bool = True) -> None:
        super().__init__()
        if not eps > 0 or coeff < 0:
            raise ValueError(f"SimDINOLoss needs eps > 0 and coeff >= 0, got eps={eps}, coeff={coeff}")
        self.eps, self.coeff, self.gather_distributed = float(eps), float(coeff), gather_distributed

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, compression, expansion)``; the teacher's features are not differentiated."""
        if student.dim() != 3 or teacher.dim() != 3 or student.shape[1:] != teacher.shape[1:] or \
                teacher.shape[0] > student.shape[0]:
            raise ValueError(f"SimDINOLoss needs student (S, B, p) and teacher (T <= S, B, p) features, got "
                             f"{tuple(student.shape)} and {tuple(teacher.shape)}")
        with torch.autocast(student.device.type, enabled=False):
            s, t = at_least_fp32(student), at_least_fp32(teacher.detach())
            num_t, num_s = t.shape[0], s.shape[0]
            cos = F.cosine_similarity(t.unsqueeze(1), s.unsqueeze(0), dim=-1).mean(dim=-1)  # (T, S)
            off_diagonal = ~torch.eye(num_t, num_s, dtype=torch.bool, device=cos.device)
            compression = cos[off_diagonal].sum() / (num_t * num_s - min(num_t, num_s))
            rates = []
            for i in range(num_t):
                w = (s[i] + t[i]) / 2
                if self.gather_distributed:
                    w = gather(w)
                m, p = w.shape
                rates.append(coding_rate(w, self.eps) * (p + m) / (p * m))
            expansion = torch.stack(rates).mean()
            return -self.coeff * compression - expansion, compression.detach(), expansion.detach()

    def extra_repr(self) -> str:
        return f"eps={self.eps}, coeff={self.coeff}"
