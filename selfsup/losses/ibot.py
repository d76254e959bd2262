"""iBOT's masked-patch self-distillation loss, and a Sinkhorn-Knopp-centred class-token loss (DINOv2)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import world_size
from selfsup.nn.precision import at_least_fp32
from selfsup.nn.sinkhorn import sinkhorn

__all__ = ["SinkhornDistillationLoss", "iBOTPatchLoss", "masked_patch_cross_entropy"]

CENTERINGS = ("center", "sinkhorn_knopp")


def masked_patch_cross_entropy(
    student: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """Mean over views and images of the average over masked patches of ``-sum_k t log softmax(s / tau_s)``.

    iBOT's ``L_MIM`` (Zhou et al. 2021, arXiv 2111.07832, https://arxiv.org/abs/2111.07832, Eq. 2;
    official ``iBOTLoss`` of https://github.com/bytedance/ibot): per image the cross-entropy is
    averaged over its masked patches (an image without masked patches contributes 0) and the result
    averaged over all images of all views.

    Args:
        student: ``(G, B, N, K)`` student logits.
        targets: ``(G, B, N, K)`` teacher probabilities.
        masks: ``(G, B, N)`` bool, True where the student's patch was masked.
        student_temp: ``tau_s``.

    Example:
        >>> masked_patch_cross_entropy(torch.randn(2, 3, 4, 5), torch.full((2, 3, 4, 5), 0.2),
        ...                            torch.ones(2, 3, 4, dtype=torch.bool), 0.1).shape
        torch.Size([])
    """
    ce = -(targets * F.log_softmax(student / student_temp, dim=-1)).sum(dim=-1)  # (G, B, N)
    m = masks.to(ce.dtype)
    return ((ce * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)).mean()


class iBOTPatchLoss(nn.Module):  # noqa: N801 - the paper's spelling
    """Masked patch tokens of the student predict the teacher's patch distributions (iBOT's MIM).

    Zhou et al. 2021, "iBOT: Image BERT Pre-Training with Online Tokenizer", arXiv 2111.07832
    (https://arxiv.org/abs/2111.07832), Sec. 3.3; official code https://github.com/bytedance/ibot
    (``main_ibot.py`` ``iBOTLoss``). The teacher's patch outputs of the same (unmasked) view are
    centred with their own centre and sharpened, ``softmax((t - c) / tau_t)``, or, with
    ``centering="sinkhorn_knopp"`` (DINOv2, Oquab et al. 2023, arXiv 2304.07193,
    https://github.com/facebookresearch/dinov2), turned into Sinkhorn-Knopp codes (epsilon
    ``tau_t``, 3 iterations) over the masked patches; the loss is
    :func:`masked_patch_cross_entropy`. In training mode with centring the centre follows
    ``c <- m c + (1 - m) mean(t)`` over all teacher patches (iBOT) or over the masked ones only
    (``center_masked_only=True``, DINOv2).

    Args:
        out_dim: patch outputs ``K``.
        student_temp: ``tau_s`` (0.1).
        center_momentum: ``m`` (0.9).
        centering: ``"center"`` or ``"sinkhorn_knopp"``.
        center_masked_only: update the centre from masked patches only.

    Example:
        >>> loss_fn = iBOTPatchLoss(out_dim=16)
        >>> s, t = torch.randn(2, 4, 9, 16), torch.randn(2, 4, 9, 16)
        >>> loss_fn(s, t, torch.rand(2, 4, 9) < 0.3, teacher_temp=0.07).shape
        torch.Size([])
    """

    center: torch.Tensor

    def __init__(
        self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9, centering: str = "center",
        center_masked_only: bool = False,
    ) -> None:
        super().__init__()
        if centering not in CENTERINGS or student_temp <= 0 or not 0 <= center_momentum <= 1:
            raise ValueError(
                f"iBOTPatchLoss needs centering in {CENTERINGS}, student_temp > 0 and center_momentum in [0, 1]; "
                f"got {centering!r}, {student_temp}, {center_momentum}"
            )
        self.student_temp, self.center_momentum, self.centering = student_temp, center_momentum, centering
        self.center_masked_only = center_masked_only
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student: torch.Tensor, teacher: torch.Tensor, masks: torch.Tensor, teacher_temp: float
    ) -> torch.Tensor:
        """The loss of student patch logits ``(G, B, N, K)`` given the teacher's ``(G, B, N, K)`` and
        the student's masks ``(G, B, N)``; ``teacher`` is detached."""
        if student.dim() != 4 or student.shape != teacher.shape or masks.shape != student.shape[:3]:
            raise ValueError(
                "iBOTPatchLoss expects student and teacher (G, B, N, K) and masks (G, B, N), got "
                f"{tuple(student.shape)}, {tuple(teacher.shape)}, {tuple(masks.shape)}"
            )
        teacher = teacher.detach()
        with torch.autocast(student.device.type, enabled=False):
            student, teacher = at_least_fp32(student), at_least_fp32(teacher)
            if self.centering == "center":
                targets = F.softmax((teacher - self.center) / teacher_temp, dim=-1)
            else:
                targets = torch.zeros_like(teacher)
                if masks.any():
                    targets[masks] = sinkhorn(teacher[masks], epsilon=teacher_temp, iterations=3)
            loss = masked_patch_cross_entropy(student, targets, masks, self.student_temp)
        if self.training and self.centering == "center":
            self.update_center(teacher[masks] if self.center_masked_only else teacher)
        return loss

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """``c <- m c + (1 - m) * mean of the given teacher patch outputs (all processes)``."""
        rows = teacher.reshape(-1, teacher.shape[-1]).to(self.center.dtype)
        total = rows.sum(dim=0, keepdim=True)
        count = torch.tensor(float(rows.shape[0]), device=total.device)
        if world_size() > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            dist.all_reduce(count, op=dist.ReduceOp.SUM)
        if count > 0:
            self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)


class SinkhornDistillationLoss(nn.Module):
    """DINO's class-token loss with Sinkhorn-Knopp teacher codes instead of centring (DINOv2).

    Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision", arXiv
    2304.07193 (https://arxiv.org/abs/2304.07193), Sec. 4; official code
    https://github.com/facebookresearch/dinov2 (``SinkhornKnoppTeacher``): the teacher's outputs of
    all global views together become codes ``sinkhorn(t, epsilon=tau_t, 3 iterations)``
    (:func:`selfsup.nn.sinkhorn.sinkhorn`, SwAV's algorithm); the loss is the mean over pairs of a
    teacher global view ``g`` and a different student view ``v`` of the batch mean of
    ``-sum_k q_g log softmax(s_v / tau_s)``, as :class:`selfsup.losses.dino.DINOLoss`.

    Example:
        >>> SinkhornDistillationLoss()(torch.randn(4, 8, 16), torch.randn(2, 8, 16), teacher_temp=0.07).shape
        torch.Size([])
    """

    def __init__(self, student_temp: float = 0.1) -> None:
        super().__init__()
        self.student_temp = student_temp

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Student ``(V, B, K)`` and teacher ``(G, B, K)`` outputs, global views first."""
        g, b, k = teacher.shape
        if student.dim() != 3 or student.shape[1:] != teacher.shape[1:] or student.shape[0] < max(2, g):
            raise ValueError(f"expected student (V, B, K), teacher (G, B, K), V >= max(2, G); got "
                             f"{tuple(student.shape)}, {tuple(teacher.shape)}")
        with torch.autocast(student.device.type, enabled=False):
            student = at_least_fp32(student)
            codes = sinkhorn(at_least_fp32(teacher.detach()).reshape(g * b, k), epsilon=teacher_temp,
                             iterations=3).reshape(g, b, k)
            cross = -torch.einsum("gbk,vbk->gv", codes, F.log_softmax(student / self.student_temp, dim=-1)) / b
            keep = ~torch.eye(g, student.shape[0], dtype=torch.bool, device=cross.device)
            return cross[keep].mean()
