"""FastSiam: "FastSiam: Resource-Efficient Self-supervised Learning on a Single GPU".

Pototzky, Sultan, Schmidt-Thieme, GCPR 2022. https://doi.org/10.1007/978-3-031-16788-1_4
Official code: none released; lightly implements it (``examples/pytorch/fastsiam.py``).
"""
from __future__ import annotations

from typing import Any

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.fastsiam import FastSiamLoss
from selfsup.methods.base import StepOutput, ViewBatch
from selfsup.methods.registry import METHODS
from selfsup.methods.simsiam import SimSiam


@METHODS.register("fastsiam")
class FastSiam(SimSiam):
    """SimSiam with ``k`` views, each predicting the stop-gradient mean of the others' projections.

    Projector, predictor, the fixed predictor learning rate and every option are SimSiam's (see
    :class:`~selfsup.methods.SimSiam`); only the views (four by default, the ``fastsiam`` recipe)
    and the target change: :class:`~selfsup.losses.FastSiamLoss` averages the other views'
    projections into one target per view, a steadier target than SimSiam's single view, which is
    what the paper credits for training well with small batches on one GPU.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = FastSiam(backbone, proj_layers=2, proj_dim=32, pred_hidden_dim=8)
        >>> views = [torch.randn(8, 3, 16, 16) for _ in range(4)]  # 4 augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = SimSiam.card.variant(
        label="FastSiam", year=2022, authors="Pototzky et al.",
        title="FastSiam: Resource-Efficient Self-supervised Learning on a Single GPU",
        paper="https://doi.org/10.1007/978-3-031-16788-1_4", code=None, views="fastsiam",
        summary="SimSiam with four views, each predicting the mean projection of the other three",
        small_views=dict(num_views=3),
    )

    def __init__(self, backbone: Backbone, **options: Any) -> None:
        """``options`` are :class:`~selfsup.methods.simsiam.SimSiam`'s."""
        super().__init__(backbone, **options)
        self.criterion = FastSiamLoss()

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """FastSiam's loss over all the batch's views (at least two of the same size).

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = FastSiam(backbone, proj_dim=32, pred_hidden_dim=8)
            >>> views = [torch.randn(8, 3, 16, 16) for _ in range(4)]
            >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
            >>> method.training_step(batch).loss.backward()
        """
        views = batch.views
        if len(views) < 2 or any(v.shape != views[0].shape for v in views):
            raise ValueError(f"FastSiam needs at least 2 views of one size, got shapes "
                             f"{[tuple(v.shape) for v in views]}")
        features = self.backbone(torch.cat(list(views)))
        z = self.projector(features)
        p = self.predictor(z)
        k = len(views)
        loss = self.criterion(p.chunk(k), z.chunk(k))
        return StepOutput(loss=loss, features=features[: len(views[0])])
