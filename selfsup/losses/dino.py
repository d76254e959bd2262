"""DINO's loss: cross-entropy from centred, sharpened teacher outputs to student outputs."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import world_size
from selfsup.nn.precision import at_least_fp32

__all__ = ["DINOLoss"]


class DINOLoss(nn.Module):
    """Cross-entropy ``H(P_t(x_g), P_s(x_v))`` over every teacher global view ``g`` and student
    view ``v != g``, with the teacher's outputs centred and sharpened.

    Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", arXiv
    2104.14294 (https://arxiv.org/abs/2104.14294), Eq. 3-4 and Alg. 1; official code
    https://github.com/facebookresearch/dino (``main_dino.py``, ``DINOLoss``):
    ``P_t = softmax((t - c) / tau_t)``, ``P_s = softmax(s / tau_s)``; the loss is the mean over the
    ``n_g (n_v - 1)`` pairs of the batch mean of ``-sum_k P_t log P_s``. In training mode, after
    the loss, the centre follows ``c <- m c + (1 - m) mean(t)`` where the mean runs over the
    teacher outputs of the whole global batch (an all-reduce across processes). Computed in at
    least fp32.

    Args:
        out_dim: number of outputs ``K`` (the centre's width).
        student_temp: ``tau_s`` (0.1).
        center_momentum: ``m`` (0.9).
        gather_distributed: average the centre over all processes.

    Attributes:
        center: ``(1, K)`` buffer, zeros at the start.

    Example:
        >>> loss_fn = DINOLoss(out_dim=16)
        >>> loss_fn(torch.randn(4, 8, 16), torch.randn(2, 8, 16), teacher_temp=0.04).shape
        torch.Size([])
    """

    center: torch.Tensor

    def __init__(
        self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if student_temp <= 0 or not 0 <= center_momentum <= 1:
            raise ValueError(
                f"DINOLoss needs student_temp > 0 and center_momentum in [0, 1], got {student_temp}, "
                f"{center_momentum}"
            )
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.gather_distributed = gather_distributed
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """The loss of student outputs ``(V, B, K)`` given teacher outputs ``(G, B, K)``.

        Teacher view ``g`` and student view ``g`` are the same crop (global views come first),
        so those pairs are skipped. ``teacher`` is detached.
        """
        if student.dim() != 3 or teacher.dim() != 3 or student.shape[1:] != teacher.shape[1:]:
            raise ValueError(
                "DINOLoss expects student (V, B, K) and teacher (G, B, K) outputs, got "
                f"{tuple(student.shape)} and {tuple(teacher.shape)}"
            )
        num_global, num_views = teacher.shape[0], student.shape[0]
        if num_views < 2 or num_global > num_views:
            raise ValueError(
                f"DINOLoss needs at least 2 student views and G <= V, got V={num_views}, G={num_global}"
            )
        teacher = teacher.detach()
        with torch.autocast(student.device.type, enabled=False):
            student, teacher = at_least_fp32(student), at_least_fp32(teacher)
            targets = F.softmax((teacher - self.center) / teacher_temp, dim=-1)  # (G, B, K)
            log_probs = F.log_softmax(student / self.student_temp, dim=-1)  # (V, B, K)
            # cross[g, v] = batch mean of -sum_k targets[g] * log_probs[v]
            cross = -torch.einsum("gbk,vbk->gv", targets, log_probs) / student.shape[1]
            keep = ~torch.eye(num_global, num_views, dtype=torch.bool, device=cross.device)
            loss = cross[keep].mean()
        if self.training:
            self.update_center(teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """``c <- m c + (1 - m) * mean of the teacher outputs over the global batch``."""
        rows = teacher.reshape(-1, teacher.shape[-1]).to(self.center.dtype)
        total = rows.sum(dim=0, keepdim=True)
        count = rows.shape[0]
        if self.gather_distributed and world_size() > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            count *= world_size()
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)

    def extra_repr(self) -> str:
        return f"student_temp={self.student_temp}, center_momentum={self.center_momentum}"
