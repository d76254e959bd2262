"""BYOL: "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning".

Grill et al., 2020. https://arxiv.org/abs/2006.07733
Official code: https://github.com/deepmind/deepmind-research/tree/master/byol
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses import NegativeCosineSimilarity
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP, MomentumTeacher


@METHODS.register("byol")
class BYOL(Method):
    """An online network (backbone, projector, predictor) predicts a momentum target's projection.

    The loss is the paper's symmetrised ``2 - 2 cos(q(z_online(v)), z_target(v'))`` averaged over
    both view orders. The target (backbone + projector) is an exponential moving average of the
    online weights whose rate follows the paper's cosine schedule from ``base_momentum`` to 1
    (Sec. 3.2). ``base_momentum`` defaults to 0.99, the value of the CIFAR recipes (solo-learn);
    the paper uses 0.996 on ImageNet. Projector and predictor: Linear(4096)-BN-ReLU-Linear(256).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = BYOL(backbone, proj_hidden_dim=32, pred_hidden_dim=32, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
        >>> out.loss.backward(); optimizer.step(); method.end_step()  # the target follows
    """

    card = MethodCard(
        label="BYOL", year=2020, authors="Grill et al.",
        title="Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
        paper="https://arxiv.org/abs/2006.07733",
        code="https://github.com/deepmind/deepmind-research/tree/master/byol", family="distillation", views="byol",
        backbones=ANY_BACKBONE,
        summary="online network + predictor regress an EMA target network",
        small=dict(proj_hidden_dim=32, pred_hidden_dim=32, proj_output_dim=16),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        pred_hidden_dim: int = 4096,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim])
        self.predictor = MLP([proj_output_dim, pred_hidden_dim, proj_output_dim])
        self.target = MomentumTeacher({"backbone": self.backbone, "projector": self.projector},
                                      base_momentum=base_momentum, final_momentum=final_momentum, owner="BYOL")
        self.criterion = NegativeCosineSimilarity()

    def training_step(self, batch: ViewBatch) -> StepOutput:
        x0, x1 = batch.views[0], batch.views[1]
        features = self.backbone(torch.cat([x0, x1]))
        p0, p1 = self.predictor(self.projector(features)).chunk(2)
        t0, t1 = self.target(torch.cat([x0, x1])).chunk(2)
        # 2 - 2 cos, averaged over the two view orders (the paper sums them; same minimiser)
        loss = 2 + (self.criterion(p0, t1) + self.criterion(p1, t0))
        return StepOutput(loss=loss, features=features[: len(x0)])
