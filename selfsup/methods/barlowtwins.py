"""Barlow Twins: "Barlow Twins: Self-Supervised Learning via Redundancy Reduction".

Zbontar, Jing, Misra, LeCun, Deny, 2021. https://arxiv.org/abs/2103.03230
Official code: https://github.com/facebookresearch/barlowtwins
"""
from __future__ import annotations

from selfsup.backbones.base import Backbone
from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.methods._projected_pair import ProjectedPair
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("barlowtwins")
class BarlowTwins(ProjectedPair):
    """Two views, a 3-layer projector and the Barlow Twins loss on the global batch.

    Defaults are the paper's / official code's: projector ``8192-8192-8192`` (Linear without bias,
    BatchNorm and ReLU between layers), ``lambd = 0.0051``, no loss scaling, BYOL's asymmetric
    views. Both views go through the backbone in one call. With several processes the loss
    standardises and correlates the embeddings of the global batch
    (:class:`~selfsup.losses.barlow_twins.BarlowTwinsLoss`).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = BarlowTwins(backbone, proj_hidden_dim=32, proj_output_dim=32)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="Barlow Twins", year=2021, authors="Zbontar et al.",
        title="Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
        paper="https://arxiv.org/abs/2103.03230", code="https://github.com/facebookresearch/barlowtwins",
        family="redundancy reduction", views="byol", backbones=ANY_BACKBONE,
        summary="cross-correlation of two views' embeddings driven to the identity",
        small=dict(proj_hidden_dim=32, proj_output_dim=32),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 8192,
        proj_output_dim: int = 8192,
        lambd: float = 0.0051,
        scale_loss: float = 1.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_hidden_dim, proj_output_dim], bias=False)
        self.criterion = BarlowTwinsLoss(lambd=lambd, scale_loss=scale_loss, gather_distributed=gather_distributed)
