"""ReSSL: "ReSSL: Relational Self-Supervised Learning with Weak Augmentation".

Zheng, You, Wang, Qian, Zhang, Wang, Xu, 2021. https://arxiv.org/abs/2107.09282
Official code: https://github.com/KyleZheng1997/ReSSL
"""
from __future__ import annotations

from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.losses.ressl import ReSSLLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP, MemoryBank, MomentumTeacher


@METHODS.register("ressl")
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
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = ReSSL(backbone, queue_size=256, proj_hidden_dim=32, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # a strong and a weak augmentation
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="ReSSL", year=2021, authors="Zheng et al.",
        title="ReSSL: Relational Self-Supervised Learning with Weak Augmentation",
        paper="https://arxiv.org/abs/2107.09282", code="https://github.com/KyleZheng1997/ReSSL", family="distillation",
        views="ressl", backbones=ANY_BACKBONE,
        summary="strong-view student matches a weak-view EMA teacher's queue relations",
        small=dict(proj_hidden_dim=32, proj_output_dim=16, queue_size=100),
    )

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
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim], batch_norm=False)
        self.teacher = MomentumTeacher({"backbone": self.backbone, "projector": self.projector},
                                       base_momentum=base_momentum, final_momentum=final_momentum, owner="ReSSL")
        self.queue = MemoryBank(queue_size, proj_output_dim, gather_distributed=True)
        self.criterion = ReSSLLoss(student_temperature, teacher_temperature)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        strong, weak = batch.views[0], batch.views[1]
        features = self.backbone(strong)
        student = self.projector(features)
        teacher = nn.functional.normalize(self.teacher(weak), dim=1)
        loss = self.criterion(student, teacher, self.queue.features())
        if self.training:
            self.queue.enqueue(teacher)
        return StepOutput(loss=loss, features=features)
