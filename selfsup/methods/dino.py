"""DINO: "Emerging Properties in Self-Supervised Vision Transformers".

Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, 2021. https://arxiv.org/abs/2104.14294
Official code: https://github.com/facebookresearch/dino
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.dino import DINOLoss
from selfsup.methods.base import Method, StepOutput, TrainingProgress, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MomentumTeacher
from selfsup.nn.dino_head import DINOHead
from selfsup.nn.multicrop import forward_by_resolution
from selfsup.nn.schedules import warmup_temperature


@METHODS.register("dino")
class DINO(Method):
    """A student (backbone + DINO head) matches a momentum teacher's centred, sharpened outputs.

    The teacher sees the ``num_global_views`` global crops (the first views), the student every
    view; the loss is :class:`~selfsup.losses.dino.DINOLoss` over all pairs of a teacher global
    view and a different student view. Defaults are the paper's (Sec. 3 and Appendix): head
    2048-2048-256 with 65,536 weight-normalised outputs, student temperature 0.1, teacher
    temperature warmed up linearly from 0.04 to 0.07 over the first 30 epochs (per epoch, as the
    official ``np.linspace`` schedule), centre momentum 0.9, teacher momentum 0.996 -> 1 along a
    cosine, last layer frozen during the first epoch. The official ``main_dino.py`` defaults to
    ``teacher_temp=0.04`` without warm-up. Weight-decay scheduling and gradient clipping of the
    ViT recipe are not part of the method.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = DINO(backbone, out_dim=32, hidden_dim=16, bottleneck_dim=8)
        >>> views = [torch.randn(8, 3, 16, 16)] * 2 + [torch.randn(8, 3, 8, 8)] * 2  # 2 global (16 px), 2 local views (8 px)
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.logs
        (torch.Size([]), {'teacher_temp': 0.04})
    """

    card = MethodCard(
        label="DINO", year=2021, authors="Caron et al.",
        title="Emerging Properties in Self-Supervised Vision Transformers", paper="https://arxiv.org/abs/2104.14294",
        code="https://github.com/facebookresearch/dino", family="distillation", views="dino", backbones=ANY_BACKBONE,
        summary="multi-crop self-distillation to an EMA teacher, centred and sharpened",
        small=dict(out_dim=32, hidden_dim=16, bottleneck_dim=8), small_views=dict(local_size=8, num_local=2),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        use_bn_in_head: bool = False,
        norm_last_layer: bool = True,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        center_momentum: float = 0.9,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        freeze_last_layer_epochs: int = 1,
        num_global_views: int = 2,
    ) -> None:
        super().__init__(backbone)
        if num_global_views < 1 or warmup_teacher_temp_epochs < 0 or freeze_last_layer_epochs < 0:
            raise ValueError("DINO needs num_global_views >= 1 and non-negative epoch counts")
        self.head = DINOHead(
            self.feature_dim, out_dim, hidden_dim, bottleneck_dim, use_bn=use_bn_in_head,
            norm_last_layer=norm_last_layer,
        )
        self.teacher = MomentumTeacher({"backbone": self.backbone, "head": self.head},
                                       base_momentum=base_momentum, final_momentum=final_momentum, owner="DINO")
        self.criterion = DINOLoss(out_dim, student_temp, center_momentum)
        self.teacher_temp, self.warmup_teacher_temp = teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.num_global_views = num_global_views

    def teacher_temperature(self, epoch: int) -> float:
        """The teacher temperature of ``epoch``: ``linspace(warmup_teacher_temp, teacher_temp, W)[epoch]``
        while ``epoch < W = warmup_teacher_temp_epochs``, then ``teacher_temp``
        (:func:`~selfsup.nn.schedules.warmup_temperature`)."""
        return warmup_temperature(epoch, self.warmup_teacher_temp, self.teacher_temp, self.warmup_teacher_temp_epochs)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        views, g = batch.views, self.num_global_views
        if len(views) < max(2, g):
            raise ValueError(f"DINO needs at least {max(2, g)} views (global first), got {len(views)}")
        n = len(views[0])
        features = forward_by_resolution(self.backbone, views)
        student = self.head(features).reshape(len(views), n, -1)
        teacher = self.teacher(torch.cat(views[:g])).reshape(g, n, -1)
        temperature = self.teacher_temperature(self.progress.epoch)
        loss = self.criterion(student, teacher, teacher_temp=temperature)
        return StepOutput(loss=loss, features=features[:n], logs={"teacher_temp": temperature})

    def on_after_backward(self, progress: TrainingProgress) -> None:
        """Drop the last layer's gradients during the first ``freeze_last_layer_epochs`` epochs."""
        if progress.epoch < self.freeze_last_layer_epochs:
            for p in self.head.last_layer.parameters():
                p.grad = None
