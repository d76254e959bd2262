"""ReSSL's relational loss: match the student's similarity distribution over a queue to the teacher's."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["ReSSLLoss"]


class ReSSLLoss(nn.Module):
    """Cross-entropy between the teacher's and the student's relation to a set of anchors.

    Zheng et al. 2021, "ReSSL: Relational Self-Supervised Learning with Weak Augmentation", arXiv
    2107.09282 (https://arxiv.org/abs/2107.09282), Eq. 3-5; official code
    https://github.com/KyleZheng1997/ReSSL (``ressl.py``): with L2-normalised student embeddings
    ``z`` (strong view), teacher embeddings ``t`` (weak view) and queued teacher embeddings
    ``a_j``, ``p_j = softmax_j(z . a_j / tau_s)``, ``q_j = softmax_j(t . a_j / tau_t)`` and the loss
    is the batch mean of ``-sum_j q_j log p_j``; the teacher side carries no gradient. The queue
    is used as stored (the official code keeps it normalised). Computed in at least fp32.

    Args:
        student_temp: ``tau_s`` (0.1).
        teacher_temp: ``tau_t`` (0.04), sharper than the student's.

    Example:
        >>> loss_fn = ReSSLLoss()
        >>> loss_fn(torch.randn(4, 8), torch.randn(4, 8), torch.randn(32, 8)).shape
        torch.Size([])
    """

    def __init__(self, student_temp: float = 0.1, teacher_temp: float = 0.04) -> None:
        super().__init__()
        if not (student_temp > 0 and teacher_temp > 0):
            raise ValueError(f"ReSSLLoss temperatures must be > 0, got {student_temp}, {teacher_temp}")
        self.student_temp, self.teacher_temp = student_temp, teacher_temp

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Loss of student ``(B, D)`` and teacher ``(B, D)`` embeddings against anchors ``(N, D)``."""
        if student.dim() != 2 or student.shape != teacher.shape or anchors.shape[-1] != student.shape[1]:
            raise ValueError(
                f"ReSSLLoss expects student and teacher (B, D) and anchors (N, D), got "
                f"{tuple(student.shape)}, {tuple(teacher.shape)}, {tuple(anchors.shape)}"
            )
        with torch.autocast(student.device.type, enabled=False):
            z = F.normalize(at_least_fp32(student), dim=1)
            t = F.normalize(at_least_fp32(teacher.detach()), dim=1)
            anchors = at_least_fp32(anchors.detach()).to(z.dtype)
            log_p = F.log_softmax(z @ anchors.T / self.student_temp, dim=1)
            q = F.softmax(t @ anchors.T / self.teacher_temp, dim=1)
            return -(q * log_p).sum(dim=1).mean()

    def extra_repr(self) -> str:
        return f"student_temp={self.student_temp}, teacher_temp={self.teacher_temp}"
