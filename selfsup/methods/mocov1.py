"""MoCo v1: "Momentum Contrast for Unsupervised Visual Representation Learning".

He, Fan, Wu, Xie, Girshick, 2019. https://arxiv.org/abs/1911.05722
Official code: https://github.com/facebookresearch/moco
"""
from __future__ import annotations

from selfsup.backbones.base import Backbone
from selfsup.methods._momentum_contrast import MomentumContrast
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("mocov1")
class MoCoV1(MomentumContrast):
    """MoCo as first published: a linear 128-d head, temperature 0.07, constant momentum 0.999.

    Queries come from view 0, positive keys from view 1 through the momentum key encoder; the
    negatives are a FIFO queue of past keys (65,536), InfoNCE (Eq. 1) with temperature 0.07, and
    the key encoder follows the query encoder with momentum 0.999 (Eq. 2, Sec. 3.3 and 4). All
    defaults are the paper's and the official code's (``main_moco.py``: ``--moco-dim 128
    --moco-k 65536 --moco-m 0.999 --moco-t 0.07``; the head is the backbone's ``fc`` layer
    replaced by ``Linear(feature_dim, 128)``). The default views are MoCo v1's (``mocov1``
    recipe). Shuffled BatchNorm is not implemented (see ``docs/architecture.md``).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = MoCoV1(backbone, queue_size=256, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="MoCo v1", year=2019, authors="He et al.",
        title="Momentum Contrast for Unsupervised Visual Representation Learning",
        paper="https://arxiv.org/abs/1911.05722", code="https://github.com/facebookresearch/moco",
        family="contrastive", views="mocov1", backbones=ANY_BACKBONE,
        summary="momentum key encoder, queue of 65,536 negatives, linear head",
        small=dict(proj_output_dim=16, queue_size=100),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_output_dim: int = 128,
        temperature: float = 0.07,
        queue_size: int = 65536,
        momentum: float = 0.999,
    ) -> None:
        projector = MLP([int(backbone.feature_dim), proj_output_dim], batch_norm=False)
        super().__init__(
            backbone, projector, proj_output_dim=proj_output_dim, temperature=temperature,
            queue_size=queue_size, base_momentum=momentum, final_momentum=None,
        )
