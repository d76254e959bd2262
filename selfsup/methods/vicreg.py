"""VICReg: "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning".

Bardes, Ponce, LeCun, 2021. https://arxiv.org/abs/2105.04906
Official code: https://github.com/facebookresearch/vicreg
"""
from __future__ import annotations

from selfsup.backbones.base import Backbone
from selfsup.losses.vicreg import VICRegLoss
from selfsup.methods._projected_pair import ProjectedPair
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("vicreg")
class VICReg(ProjectedPair):
    """Two views, a 3-layer expander and the variance-invariance-covariance loss.

    Defaults are the paper's: expander ``8192-8192-8192`` (Linear, BatchNorm, ReLU; the last layer
    plain), loss weights 25 / 25 / 1, BYOL's asymmetric views. Variance and covariance use the
    embeddings of all processes, as the official code does
    (:class:`~selfsup.losses.vicreg.VICRegLoss`).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = VICReg(backbone, proj_hidden_dim=32, proj_output_dim=32)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="VICReg", year=2021, authors="Bardes et al.",
        title="VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
        paper="https://arxiv.org/abs/2105.04906", code="https://github.com/facebookresearch/vicreg",
        family="redundancy reduction", views="byol", backbones=ANY_BACKBONE,
        summary="invariance + variance hinge + covariance penalty on an expander",
        small=dict(proj_hidden_dim=32, proj_output_dim=32),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 8192,
        proj_output_dim: int = 8192,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_hidden_dim, proj_output_dim])
        self.criterion = VICRegLoss(
            sim_weight=sim_weight, var_weight=var_weight, cov_weight=cov_weight,
            gather_distributed=gather_distributed,
        )
