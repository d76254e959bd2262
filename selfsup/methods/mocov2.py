"""MoCo v2: "Improved Baselines with Momentum Contrastive Learning".

Chen, Fan, Girshick, He, 2020. https://arxiv.org/abs/2003.04297 (MoCo v1: He et al. 2019,
"Momentum Contrast for Unsupervised Visual Representation Learning", https://arxiv.org/abs/1911.05722)
Official code: https://github.com/facebookresearch/moco
"""
from __future__ import annotations

from selfsup.backbones.base import Backbone
from selfsup.methods._momentum_contrast import MomentumContrast
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("mocov2")
class MoCoV2(MomentumContrast):
    """A query encoder, a momentum key encoder and a queue of past keys as negatives.

    The loss is InfoNCE (MoCo's Eq. 1): each query's positive is the key of the other view of the
    same image and its negatives are the queued keys; the current keys then enter the queue
    (first in, first out). The key encoder (backbone + head) follows the query encoder as an
    exponential moving average with a constant ``momentum`` (0.999), updated after every optimizer
    step. Defaults are the paper's: a 2-layer MLP head (hidden width = backbone width, no
    BatchNorm) with 128-d output, temperature 0.2, queue of 65,536 keys. The official code's
    shuffled BatchNorm across GPUs is not implemented (as in solo-learn and lightly); keys of all
    processes enter the queue. The machinery is shared with MoCo v1 and v2+
    (:class:`~selfsup.methods._momentum_contrast.MomentumContrast`).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = MoCoV2(backbone, queue_size=256, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="MoCo v2", year=2020, authors="Chen et al.",
        title="Improved Baselines with Momentum Contrastive Learning", paper="https://arxiv.org/abs/2003.04297",
        code="https://github.com/facebookresearch/moco", family="contrastive", views="mocov2", backbones=ANY_BACKBONE,
        summary="momentum key encoder, queue of 65,536 negatives, MLP head",
        small=dict(proj_output_dim=16, queue_size=100),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        momentum: float = 0.999,
    ) -> None:
        width = int(backbone.feature_dim)
        projector = MLP([width, proj_hidden_dim or width, proj_output_dim], batch_norm=False)
        super().__init__(
            backbone, projector, proj_output_dim=proj_output_dim, temperature=temperature,
            queue_size=queue_size, base_momentum=momentum, final_momentum=None,
        )
