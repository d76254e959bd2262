"""TiCo: "TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised Visual
Representation Learning".

Zhu, Moraes, Karakulak, Sobol, Canziani, LeCun, 2022. https://arxiv.org/abs/2206.10698
Official code: none published; re-implementations https://github.com/sayannag/TiCo-pytorch and
lightly (``lightly.loss.TiCoLoss``, ``examples/pytorch/tico.py``).
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.tico import TiCoLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP, MomentumTeacher


@METHODS.register("tico")
class TiCo(Method):
    """An online network and an EMA target network, TiCo's loss with a running covariance matrix.

    The paper's loss (Alg. 1) has two branches: the first, ``z`` of view 0, feeds the running
    covariance ``C`` (``beta = 0.9``) and both terms; the second, ``z'`` of view 1, enters only the
    invariance term ``-<z, z'>``; the loss is not symmetrised over the two views. As in both
    public re-implementations (sayannag/TiCo-pytorch, lightly's example), ``z'`` comes from a
    momentum (EMA) copy of backbone + projector, run without gradient; its rate follows BYOL's
    cosine schedule from ``base_momentum`` to ``final_momentum`` (0.99 -> 1; sayannag's code
    starts at 0.99, lightly's example at 0.996) and is logged as ``momentum``.
    ``momentum_encoder=False`` runs Alg. 1 as written instead: one shared encoder, the gradient
    flowing through both branches. That variant fell below the initial network on Fashion-MNIST
    (issue 15; here, 2 epochs of resnet_small: val k-NN 69.50, initial 74.28, 76.67 with the
    momentum encoder).
    The covariance term is weighted by ``rho = 20``; the projector ``4096-256`` (Linear,
    BatchNorm, ReLU, Linear) is the re-implementations'. See :class:`TiCoLoss` for the gradient
    through the current batch's covariance.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = TiCo(backbone, proj_hidden_dim=32, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
        >>> out.loss.backward(); optimizer.step(); method.end_step()  # the target follows
    """

    card = MethodCard(
        label="TiCo", year=2022, authors="Zhu et al.",
        title=("TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised Visual "
               "Representation Learning"),
        paper="https://arxiv.org/abs/2206.10698", code=None, family="redundancy reduction", views="byol",
        backbones=ANY_BACKBONE,
        summary="cosine invariance + contrast against a running covariance matrix",
        small=dict(proj_hidden_dim=32, proj_output_dim=16),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        beta: float = 0.9,
        rho: float = 20.0,
        momentum_encoder: bool = True,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim])
        self.target = MomentumTeacher(
            {"backbone": self.backbone, "projector": self.projector},
            base_momentum=base_momentum, final_momentum=final_momentum, owner="TiCo",
        ) if momentum_encoder else None
        self.criterion = TiCoLoss(proj_output_dim, beta=beta, rho=rho, gather_distributed=gather_distributed)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """TiCo's loss of the online projection of view 0 against the target's of view 1.

        Updates the running covariance (with the online projections) in training mode.

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = TiCo(backbone, proj_hidden_dim=32, proj_output_dim=16)
            >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
            >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
            >>> method.training_step(batch).loss.backward()
        """
        x0, x1 = batch.views[0], batch.views[1]
        if self.target is None:  # Alg. 1 as written: one shared encoder, gradient through both
            features = self.backbone(torch.cat([x0, x1]))
            z0, z1 = self.projector(features).chunk(2)
            return StepOutput(loss=self.criterion(z0, z1), features=features[: len(x0)])
        features = self.backbone(x0)
        z0 = self.projector(features)
        z1 = self.target(x1)  # no gradient
        return StepOutput(loss=self.criterion(z0, z1), features=features)
