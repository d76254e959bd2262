"""TiCo: "TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised Visual
Representation Learning".

Zhu, Moraes, Karakulak, Sobol, Canziani, LeCun, 2022. https://arxiv.org/abs/2206.10698
Official code: none published; re-implementation https://github.com/sayannag/TiCo-pytorch
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.tico import TiCoLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("tico", "TiCo (2022): cosine invariance + contrast against a running covariance matrix")
class TiCo(Method):
    """Two views, a projector and TiCo's loss with a running covariance matrix (a buffer).

    Follows the paper's Algorithm 1: both branches share the encoder, the running covariance
    ``C`` (``beta = 0.9``) is updated inside the loss in training mode and the covariance term is
    weighted by ``rho = 20``. The projector ``4096-256`` (Linear, BatchNorm, ReLU, Linear) is the
    one of the public re-implementations (sayannag/TiCo-pytorch, lightly). Those also put a
    BYOL-style momentum encoder on the second branch; that variant is not implemented here.

    Example:
        >>> method = TiCo(selfsup.backbones.get("resnet18", cifar_stem=True))
        >>> out = method.training_step(ViewBatch(views=[x0, x1], labels=y, indices=i))
    """

    default_views = "byol"

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        beta: float = 0.9,
        rho: float = 20.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim])
        self.criterion = TiCoLoss(proj_output_dim, beta=beta, rho=rho, gather_distributed=gather_distributed)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """TiCo's loss on the projections of views 0 and 1 (updates the running covariance).

        Example:
            >>> method.training_step(ViewBatch([x0, x1], labels, indices)).loss.backward()
        """
        x0, x1 = batch.views[0], batch.views[1]
        features = self.backbone(torch.cat([x0, x1]))
        z0, z1 = self.projector(features).chunk(2)
        return StepOutput(loss=self.criterion(z0, z1), features=features[: len(x0)])
