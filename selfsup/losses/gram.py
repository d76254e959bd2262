"""DINOv3's Gram anchoring: keep the patch-to-patch similarities of an earlier teacher."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["GramAnchoringLoss"]


class GramAnchoringLoss(nn.Module):
    """Mean squared difference between the student's and the Gram teacher's patch Gram matrices.

    Simeoni et al. 2025, "DINOv3", https://arxiv.org/abs/2508.10104, Sec. 4.2 (Eq. 3); official code
    https://github.com/facebookresearch/dinov3 (``dinov3/loss/gram_loss.py``). For each image the
    ``(N, D)`` patch features of student and teacher are L2-normalised and their ``(N, N)`` cosine
    similarity matrices ``X X^T`` compared: ``mean((X_s X_s^T - X_g X_g^T)^2)`` over images and
    matrix entries. ``remove_negative`` sets negative similarities of both matrices to zero first (the
    official class's default; its Gram-anchoring config of the 7B model turns it off, as here).
    Only the patch features' similarity structure is anchored, not the features themselves, so the
    student's global objectives stay free.

    Example:
        >>> loss_fn = GramAnchoringLoss()
        >>> loss = loss_fn(torch.randn(2, 16, 8), torch.randn(2, 16, 8))
    """

    def __init__(self, remove_negative: bool = False) -> None:
        super().__init__()
        self.remove_negative = remove_negative

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The loss for patch features ``(B, N, D)`` of the same images; the teacher is not differentiated."""
        if student.dim() != 3 or student.shape[:2] != teacher.shape[:2]:
            raise ValueError(f"GramAnchoringLoss needs (B, N, D) patch features with the same B and N, got "
                             f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)}")
        with torch.autocast(student.device.type, enabled=False):
            s = F.normalize(at_least_fp32(student), dim=-1)
            t = F.normalize(at_least_fp32(teacher.detach()), dim=-1)
            student_gram, teacher_gram = s @ s.transpose(1, 2), t @ t.transpose(1, 2)
            if self.remove_negative:
                student_gram, teacher_gram = student_gram.clamp_min(0), teacher_gram.clamp_min(0)
            return F.mse_loss(student_gram, teacher_gram)

    def extra_repr(self) -> str:
        return f"remove_negative={self.remove_negative}"
