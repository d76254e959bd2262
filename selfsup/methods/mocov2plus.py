"""MoCo v2+: solo-learn's symmetric MoCo v2 with a cosine momentum schedule.

Built on Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", 2020,
https://arxiv.org/abs/2003.04297 (official code https://github.com/facebookresearch/moco); the
"+" variant is defined by solo-learn (da Costa et al., "solo-learn: A Library of Self-supervised
Methods for Visual Representation Learning", JMLR 2022, https://arxiv.org/abs/2108.01775; code
https://github.com/vturrisi/solo-learn, ``solo/methods/mocov2plus.py``).
"""
from __future__ import annotations

from selfsup.backbones.base import Backbone
from selfsup.methods._momentum_contrast import MomentumContrast
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("mocov2plus")
class MoCoV2Plus(MomentumContrast):
    """MoCo v2 with the loss symmetrised over the two view orders and a momentum schedule.

    ``loss = (InfoNCE(q0, k1; queue of past k1) + InfoNCE(q1, k0; queue of past k0)) / 2`` (as
    solo-learn, one queue per view order), a 2-layer projector without BatchNorm
    (``Linear-ReLU-Linear``) and the key-encoder momentum rising from ``base_momentum`` to
    ``final_momentum`` along BYOL's cosine schedule, once per optimizer step. There is no paper:
    every default comes from solo-learn's CIFAR recipe (``scripts/pretrain/cifar/mocov2plus.yaml``:
    projector 2048-256, queue 32,768, temperature 0.2, base momentum 0.99), except
    ``final_momentum=1.0``, solo-learn's default for all momentum methods (its CIFAR recipe sets
    0.999, see ``configs/cifar10/mocov2plus.yaml``).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = MoCoV2Plus(backbone, proj_hidden_dim=32, proj_output_dim=16, queue_size=256)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="MoCo v2+", year=2021, authors="da Costa et al.",
        title="solo-learn: A Library of Self-supervised Methods for Visual Representation Learning",
        paper="https://arxiv.org/abs/2108.01775", code="https://github.com/vturrisi/solo-learn", family="contrastive",
        views="mocov2", backbones=ANY_BACKBONE,
        summary="solo-learn's symmetric MoCo v2, two queues, cosine momentum",
        small=dict(proj_hidden_dim=32, proj_output_dim=16, queue_size=100),
        # cpu: two queues of 32,768 256-d keys (solo-learn's CIFAR recipe): on a 2-core AVX2 CPU in fp32 a
        # resnet_small step took ~1.3 s (190 images/s, ~70 min for 8 epochs; stopped at step 450); with
        # MoCo v2's 4,096 (its CIFAR recipe's size; 7.6% of the 54,000 training images) 0.8 s (320 images/s)
        cpu=dict(queue_size=4096),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 256,
        temperature: float = 0.2,
        queue_size: int = 32768,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
    ) -> None:
        projector = MLP(
            [int(backbone.feature_dim), proj_hidden_dim, proj_output_dim], batch_norm=False
        )
        super().__init__(
            backbone, projector, proj_output_dim=proj_output_dim, temperature=temperature,
            queue_size=queue_size, base_momentum=base_momentum, final_momentum=final_momentum,
            symmetric=True,
        )
