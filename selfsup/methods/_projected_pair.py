"""The step shared by the methods whose loss compares the projections of two views (SimCLR, DCL,
Barlow Twins, VICReg): both views through the backbone in one call (so BatchNorm normalises them
together, as the official implementations do), one projector, ``criterion(z0, z1)``.
"""
from __future__ import annotations

import torch
from torch import nn

from selfsup.methods.base import Method, StepOutput, ViewBatch


class ProjectedPair(Method):
    """A method that sets ``self.projector`` and ``self.criterion``; its step is
    ``criterion(projector(backbone(view 0)), projector(backbone(view 1)))``.

    Subclasses declare their card, build the projector and the criterion, and inherit the step.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = selfsup.methods.get("vicreg", backbone=backbone, proj_hidden_dim=32, proj_output_dim=32)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
        >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
        >>> method.training_step(batch).loss.backward()
    """

    projector: nn.Module
    criterion: nn.Module

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """The criterion on the projections of views 0 and 1; the features of view 0 feed the probe."""
        x0, x1 = batch.views[0], batch.views[1]
        features = self.backbone(torch.cat([x0, x1]))
        z0, z1 = self.projector(features).chunk(2)
        return StepOutput(loss=self.criterion(z0, z1), features=features[: len(x0)])
