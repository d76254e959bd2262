"""Dense feature distillation: regress a frozen teacher's feature map."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.precision import at_least_fp32

__all__ = ["FeatureMapMSELoss"]


class FeatureMapMSELoss(nn.Module):
    """Mean squared error between a student's feature map, resized to the teacher's grid, and the teacher's.

    The objective of LightlyTrain's distillation (v2, github.com/lightly-ai/lightly-train,
    ``distillationv2.py`` and ``distillationv2_loss.py``): the student's map ``(B, D, h_s, w_s)``
    (already projected to the teacher's width ``D``) is resized bilinearly to the teacher's grid
    ``(h_t, w_t)`` and compared with the teacher's map position by position, without normalising
    either; the mean runs over batch, positions and channels. The teacher map is not differentiated.

    Example:
        >>> loss_fn = FeatureMapMSELoss()
        >>> loss = loss_fn(torch.randn(2, 8, 4, 4), torch.randn(2, 8, 7, 7))
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``mean((resize(student) - teacher)^2)`` for maps of shape ``(B, D, h, w)``."""
        if student.dim() != 4 or teacher.dim() != 4 or student.shape[:2] != teacher.shape[:2]:
            raise ValueError(f"FeatureMapMSELoss needs (B, D, h, w) maps with the same B and D, got student "
                             f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")
        with torch.autocast(student.device.type, enabled=False):
            student = at_least_fp32(student)
            if student.shape[-2:] != teacher.shape[-2:]:
                student = F.interpolate(student, size=teacher.shape[-2:], mode="bilinear", align_corners=False)
            return F.mse_loss(student, at_least_fp32(teacher.detach()))
