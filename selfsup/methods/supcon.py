"""SupCon: "Supervised Contrastive Learning".

Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan, 2020.
https://arxiv.org/abs/2004.11362 -- Official code: https://github.com/HobbitLong/SupContrast
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.supcon import SupConLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("supcon")
class SupCon(Method):
    """Views of labelled images; every view of a same-class sample is a positive (``L_out``).

    Uses ``batch.labels``; samples labelled ``-1`` have only their own other views as positives
    (see :class:`~selfsup.losses.supcon.SupConLoss`), so an unlabelled batch gives SimCLR's
    positives. Any number of views: all go through the backbone in one call. Defaults are the
    official code's: projection head ``Linear(d, d) -> ReLU -> Linear(d, 128)`` (no BatchNorm) on
    the pooled features, temperature 0.1, the two-view crop / flip / jitter / grayscale recipe.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = SupCon(backbone, temperature=0.1, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 2, -1, -1])  # positives: the other view and same-class images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, labels=labels, indices=torch.arange(8)))
        >>> out.loss.shape
        torch.Size([])
    """

    card = MethodCard(
        label="SupCon", year=2020, authors="Khosla et al.",
        title="Supervised Contrastive Learning", paper="https://arxiv.org/abs/2004.11362",
        code="https://github.com/HobbitLong/SupContrast", family="contrastive", views="mocov2", backbones=ANY_BACKBONE,
        summary="supervised contrastive, same-class views are positives (labels)",
        small=dict(proj_output_dim=16),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 128,
        temperature: float = 0.1,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        hidden = proj_hidden_dim or self.feature_dim
        self.projector = MLP([self.feature_dim, hidden, proj_output_dim], batch_norm=False)
        self.criterion = SupConLoss(temperature=temperature, gather_distributed=gather_distributed)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """SupCon loss over the projections of all views, with ``batch.labels``."""
        n = len(batch.views[0])
        features = self.backbone(torch.cat(batch.views))
        projections = self.projector(features).split(n)
        loss = self.criterion(list(projections), batch.labels)
        return StepOutput(loss=loss, features=features[:n])
