"""MMCR: "Learning Efficient Coding of Natural Images with Maximum Manifold Capacity Representations".

Yerxa, Kuang, Simoncelli, Chung, NeurIPS 2023. https://arxiv.org/abs/2303.03307
Official code: https://github.com/ThomasYerxa/mmcr
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.mmcr import MMCRLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP, MomentumTeacher


@METHODS.register("mmcr")
class MMCR(Method):
    """``k`` views of each image, averaged on the sphere; the nuclear norm of the centroids is maximised.

    Every view goes through the backbone and a projector; :class:`~selfsup.losses.MMCRLoss`
    normalises the projections, averages each image's ``k`` views into a centroid and returns minus
    the nuclear norm of the batch's centroid matrix: views of one image are pulled together (a
    short centroid has a small norm) while the centroids of different images are spread over as
    many directions as the embedding has. Defaults are the official CIFAR-10 setting
    (``mmcr/cifar_stl``): projector ``512-128`` (Linear without bias, BatchNorm, ReLU, Linear
    without bias), ``lmbda = 0``, no momentum encoder. ``momentum_encoder=True`` is the official
    ImageNet variant: a momentum copy of backbone and projector (rate ``tau = 0.99``, constant in
    the official code: ``base_momentum = final_momentum = 0.99``) embeds the same views, and the
    centroid is the mean of the online and the momentum centroids.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = MMCR(backbone, proj_hidden_dim=32, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16) for _ in range(4)]  # 4 augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> bool(out.loss == -out.logs["centroid_nuclear_norm"])  # the loss: minus the nuclear norm
        True
    """

    card = MethodCard(
        label="MMCR", year=2023, authors="Yerxa et al.",
        title="Learning Efficient Coding of Natural Images with Maximum Manifold Capacity Representations",
        paper="https://arxiv.org/abs/2303.03307", code="https://github.com/ThomasYerxa/mmcr",
        family="redundancy reduction", views="mmcr", backbones=ANY_BACKBONE,
        summary="k views averaged per image, nuclear norm of the centroid matrix maximised",
        small=dict(proj_hidden_dim=32, proj_output_dim=16), small_views=dict(num_views=3),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 512,
        proj_output_dim: int = 128,
        lmbda: float = 0.0,
        momentum_encoder: bool = False,
        base_momentum: float = 0.99,
        final_momentum: float = 0.99,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim], bias=False)
        self.target = MomentumTeacher(
            {"backbone": self.backbone, "projector": self.projector},
            base_momentum=base_momentum, final_momentum=final_momentum, owner="MMCR",
        ) if momentum_encoder else None
        self.criterion = MMCRLoss(lmbda=lmbda, gather_distributed=gather_distributed)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """MMCR's loss over all the batch's views (at least two of the same size).

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = MMCR(backbone, proj_hidden_dim=32, proj_output_dim=16)
            >>> views = [torch.randn(8, 3, 16, 16) for _ in range(4)]
            >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
            >>> method.training_step(batch).loss.backward()
        """
        views = batch.views
        if len(views) < 2 or any(v.shape != views[0].shape for v in views):
            raise ValueError(f"MMCR needs at least 2 views of one size, got shapes {[tuple(v.shape) for v in views]}")
        x = torch.cat(list(views))
        features = self.backbone(x)
        z = self.projector(features).unflatten(0, (len(views), -1))
        targets = self.target(x).unflatten(0, (len(views), -1)) if self.target is not None else None
        loss = self.criterion(z, targets)
        return StepOutput(loss=loss, features=features[: len(views[0])],
                          logs={"centroid_nuclear_norm": -loss.detach()} if self.criterion.lmbda == 0 else {})
