"""SimSiam: "Exploring Simple Siamese Representation Learning".

Chen and He, 2021. https://arxiv.org/abs/2011.10566
Official code: https://github.com/facebookresearch/simsiam
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses import NegativeCosineSimilarity
from selfsup.methods.base import Method, StepOutput, ViewBatch, decay_groups
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("simsiam")
class SimSiam(Method):
    """A projector and a bottleneck predictor with a stop-gradient on the other branch.

    Loss (the paper's Algorithm 1): ``D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2`` with
    ``D`` the negative cosine similarity. Defaults are the paper's ImageNet ones: a 3-layer
    projector of width 2048 ending in BatchNorm without affine parameters, a predictor
    2048-512-2048, and the predictor's learning rate kept fixed (not decayed; Sec. 4.4 and the
    official ``--fix-pred-lr``). The paper's CIFAR variant uses a 2-layer projector
    (``proj_layers=2``), see ``configs/cifar10/simsiam.yaml``.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = SimSiam(backbone, proj_layers=2, proj_dim=32, pred_hidden_dim=8)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="SimSiam", year=2021, authors="Chen and He",
        title="Exploring Simple Siamese Representation Learning", paper="https://arxiv.org/abs/2011.10566",
        code="https://github.com/facebookresearch/simsiam", family="distillation", views="mocov2",
        backbones=ANY_BACKBONE,
        summary="siamese network, predictor and stop-gradient, no negatives",
        small=dict(proj_dim=32, pred_hidden_dim=8),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_dim: int = 2048,
        proj_layers: int = 3,
        pred_hidden_dim: int = 512,
        fix_predictor_lr: bool = True,
    ) -> None:
        super().__init__(backbone)
        if proj_layers < 1:
            raise ValueError(f"SimSiam needs proj_layers >= 1, got {proj_layers}")
        dims = [self.feature_dim] + [proj_dim] * proj_layers
        self.projector = MLP(dims, last_batch_norm=True, last_bn_affine=False)
        self.predictor = MLP([proj_dim, pred_hidden_dim, proj_dim])
        self.fix_predictor_lr = fix_predictor_lr
        self.criterion = NegativeCosineSimilarity()

    def training_step(self, batch: ViewBatch) -> StepOutput:
        x0, x1 = batch.views[0], batch.views[1]
        features = self.backbone(torch.cat([x0, x1]))
        z = self.projector(features)
        p0, p1 = self.predictor(z).chunk(2)
        z0, z1 = z.detach().chunk(2)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        return StepOutput(loss=loss, features=features[: len(x0)])

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        rest = [(n, p) for n, p in self.named_parameters() if not n.startswith("predictor.")]
        return decay_groups(rest, weight_decay) + decay_groups(
            self.predictor.named_parameters(), weight_decay, prefix="predictor_",
            fixed_lr=self.fix_predictor_lr,
        )
