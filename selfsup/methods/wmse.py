"""W-MSE: "Whitening for Self-Supervised Representation Learning".

Ermolov, Siarohin, Sangineto, Sebe, 2021 (ICML). https://arxiv.org/abs/2007.06346
Official code: https://github.com/htdt/self-supervised
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.wmse import WMSELoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("wmse", "W-MSE (2021): MSE between positives after Cholesky whitening of sub-batches")
class WMSE(Method):
    """All views through one backbone and head, then the W-MSE loss over every pair of views.

    Defaults are the official code's CIFAR settings: head ``1024-64`` (Linear, BatchNorm, ReLU,
    Linear), whitening sub-batches of 128, one whitening iteration, no covariance shrinkage. The
    number of views is whatever the view recipe yields (W-MSE 2 with the default two-view recipe;
    the paper's W-MSE 4 needs a four-view recipe). The (global) batch must be a multiple of
    ``w_size``.

    Example:
        >>> method = WMSE(selfsup.backbones.get("resnet18", cifar_stem=True), w_size=128)
        >>> out = method.training_step(ViewBatch(views=[x0, x1], labels=y, indices=i))
    """

    default_views = "mocov2"

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 1024,
        proj_output_dim: int = 64,
        w_size: int = 128,
        w_iter: int = 1,
        w_eps: float = 0.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim])
        self.criterion = WMSELoss(w_size=w_size, w_iter=w_iter, eps=w_eps, gather_distributed=gather_distributed)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """W-MSE over all pairs of the batch's views.

        Example:
            >>> method.training_step(ViewBatch([x0, x1], labels, indices)).loss.backward()
        """
        n = len(batch.views[0])
        features = self.backbone(torch.cat(batch.views))
        embeddings = self.projector(features).split(n)
        loss = self.criterion(list(embeddings))
        return StepOutput(loss=loss, features=features[:n], logs={"whiten_shrunk": self.criterion.shrunk_fraction})
