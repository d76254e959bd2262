"""ReSSL: "ReSSL: Relational Self-Supervised Learning with Weak Augmentation".

Zheng, You, Wang, Qian, Zhang, Wang, Xu, 2021. https://arxiv.org/abs/2107.09282
Official code: https://github.com/KyleZheng1997/ReSSL
"""
from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.losses.ressl import ReSSLLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP, MemoryBank, MomentumTeacher, cosine_momentum


@METHODS.register("ressl", "ReSSL (2021): strong-view student matches a weak-view EMA teacher's queue relations")
class ReSSL(Method):
    """A student on a strongly augmented view learns the teacher's similarity distribution over a
    queue of past teacher embeddings, the teacher seeing a weakly augmented view.

    View 0 is the strong view (student), view 1 the weak one (teacher), as in the ``ressl``
    recipe. The loss is :class:`~selfsup.losses.ressl.ReSSLLoss`; afterwards the teacher
    embeddings of every process enter the FIFO queue. The teacher (backbone + projector) is an
    exponential moving average of the student, updated after every optimizer step. Defaults are
    the official ImageNet ones: projector Linear(4096)-ReLU-Linear(512) without BatchNorm, queue
    of 131,072, student temperature 0.1, teacher temperature 0.04, constant momentum 0.999 (set
    ``final_momentum`` above ``base_momentum`` for a cosine schedule, as solo-learn's CIFAR recipe
    0.99 -> 1). The official code's shuffled BatchNorm is not implemented.

    Example:
        >>> method = ReSSL(selfsup.backbones.get("resnet18", cifar_stem=True), queue_size=4096)
        >>> out = method.training_step(ViewBatch(views=[strong, weak], labels=y, indices=i))
    """

    default_views = "ressl"

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 512,
        queue_size: int = 131072,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
        base_momentum: float = 0.999,
        final_momentum: float = 0.999,
    ) -> None:
        super().__init__(backbone)
        if not 0.0 <= base_momentum <= final_momentum <= 1.0:
            raise ValueError(
                "ReSSL needs 0 <= base_momentum <= final_momentum <= 1, got "
                f"base_momentum={base_momentum}, final_momentum={final_momentum}"
            )
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim], batch_norm=False)
        self.teacher = MomentumTeacher({"backbone": self.backbone, "projector": self.projector})
        self.queue = MemoryBank(queue_size, proj_output_dim, gather_distributed=True)
        self.criterion = ReSSLLoss(student_temperature, teacher_temperature)
        self.base_momentum, self.final_momentum = base_momentum, final_momentum
        self.momentum = base_momentum

    def training_step(self, batch: ViewBatch) -> StepOutput:
        strong, weak = batch.views[0], batch.views[1]
        features = self.backbone(strong)
        student = self.projector(features)
        teacher = nn.functional.normalize(self.teacher(weak), dim=1)
        loss = self.criterion(student, teacher, self.queue.features())
        if self.training:
            self.queue.enqueue(teacher)
        return StepOutput(loss=loss, features=features, logs={"momentum": self.momentum})

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        self.momentum = cosine_momentum(progress, self.base_momentum, self.final_momentum)
        self.teacher.momentum_update(self.momentum)
