"""DenseCL: "Dense Contrastive Learning for Self-Supervised Visual Pre-Training".

Wang, Zhang, Shen, Kong, Li, 2021. https://arxiv.org/abs/2011.09157
Official code: https://github.com/WXinlong/DenseCL
"""
from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.losses.densecl import DenseContrastiveLoss
from selfsup.losses.ntxent import NTXentLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.dense_match import match_locations
from selfsup.nn.mlp import MLP
from selfsup.nn.momentum import MomentumTeacher


@METHODS.register("densecl")
class DenseCL(Method):
    """MoCo v2 with a second, dense contrastive branch on the backbone's feature map.

    Global branch: MoCo v2 (pooled features, MLP head, InfoNCE against a queue of 65,536 keys).
    Dense branch: a head of two 1x1 convolutions (``C -> hidden``, ReLU, ``hidden -> 128``) on the
    backbone's last feature map gives a vector per location. The positive key of each query
    location is the key-view location whose *backbone* feature is most cosine-similar
    (:func:`selfsup.nn.dense_match.match_locations`); negatives come from a second queue holding
    the key view's dense projections pooled over the locations
    (:class:`~selfsup.losses.densecl.DenseContrastiveLoss`). The loss is
    ``(1 - lambda) * global + lambda * dense`` with ``lambda = 0.5``; as in the authors' code
    (their DenseCL warm-up hook) ``lambda`` is 0 during the first ``lambda_warmup_steps``
    optimizer steps. The key encoder (backbone and both heads) is a momentum copy updated with
    momentum 0.999 after every step; temperature 0.2. All defaults are the paper's / official
    code's (ResNet-50 on ImageNet). The official code's shuffled BatchNorm is not implemented
    (as for :class:`~selfsup.methods.mocov2.MoCoV2`); keys of all processes enter both queues.

    Args:
        backbone: Encoder with ``feature_dim`` and ``feature_map`` (all ResNets here).
        proj_hidden_dim: Hidden width of both heads; None for the backbone width (2048 in the
            paper's ResNet-50).
        proj_output_dim: Output width of both heads (128).
        temperature: InfoNCE temperature of both branches (0.2).
        queue_size: Length of each queue (65,536).
        momentum: EMA momentum of the key encoder (0.999).
        loss_lambda: Weight of the dense loss (0.5).
        lambda_warmup_steps: Steps at the start with ``lambda = 0`` (1,000 in the official code).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = DenseCL(backbone, queue_size=256, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="DenseCL", year=2021, authors="Wang et al.",
        title="Dense Contrastive Learning for Self-Supervised Visual Pre-Training",
        paper="https://arxiv.org/abs/2011.09157", code="https://github.com/WXinlong/DenseCL", family="contrastive",
        views="mocov2", backbones=ANY_BACKBONE,
        summary="MoCo v2 plus a dense InfoNCE between matched locations",
        small=dict(proj_output_dim=16, queue_size=100, lambda_warmup_steps=5),
    )
    representation = "avg"  # with a ViT: the global branch pools the patch map (feature_map().mean)

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        momentum: float = 0.999,
        loss_lambda: float = 0.5,
        lambda_warmup_steps: int = 1000,
    ) -> None:
        super().__init__(backbone)
        if not 0.0 <= loss_lambda <= 1.0:
            raise ValueError(f"DenseCL loss_lambda must be in [0, 1], got {loss_lambda}")
        if queue_size < 1 or lambda_warmup_steps < 0:
            raise ValueError(
                f"DenseCL needs queue_size >= 1 and lambda_warmup_steps >= 0, got {queue_size} "
                f"and {lambda_warmup_steps}"
            )
        hidden = proj_hidden_dim or self.feature_dim
        self.projector = MLP([self.feature_dim, hidden, proj_output_dim], batch_norm=False)
        self.dense_projector = nn.Sequential(
            nn.Conv2d(self.feature_dim, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, proj_output_dim, 1),
        )
        # called piece by piece (the dense head reads the feature map), updated as a whole
        self.target = MomentumTeacher(
            {"backbone": self.backbone, "projector": self.projector, "dense_projector": self.dense_projector},
            base_momentum=momentum, final_momentum=None, owner="DenseCL",
        )
        self.loss_lambda = loss_lambda
        self.lambda_warmup_steps = lambda_warmup_steps
        self.global_loss = NTXentLoss(
            temperature=temperature, memory_bank_size=queue_size, memory_bank_dim=proj_output_dim,
            gather_distributed=True,
        )
        self.dense_loss = DenseContrastiveLoss(temperature, queue_size, proj_output_dim)

    def current_lambda(self) -> float:
        """The dense-loss weight of the current step (``self.progress``): 0 during the first
        ``lambda_warmup_steps`` steps, then ``loss_lambda``.

        Example:
            >>> DenseCL(selfsup.backbones.get("resnet_tiny", width=4), lambda_warmup_steps=0).current_lambda()
            0.5
        """
        return self.loss_lambda if self.progress.step >= self.lambda_warmup_steps else 0.0

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """Global MoCo loss on views 0 / 1 plus the dense loss between matched locations.

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = DenseCL(backbone, queue_size=256, proj_output_dim=16, lambda_warmup_steps=0)
            >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
            >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
            >>> out.logs["lambda"], sorted(out.logs)
            (0.5, ['lambda', 'loss_dense', 'loss_global'])
        """
        x_query, x_key = batch.views[0], batch.views[1]
        query_map = self.backbone.feature_map(x_query)  # (B, C, h, w)
        features = query_map.mean(dim=(2, 3))
        queries = self.projector(features)
        dense_queries = self.dense_projector(query_map).flatten(2)  # (B, D, S)
        with torch.no_grad():
            key_map = self.target["backbone"].feature_map(x_key)
            keys = self.target["projector"](key_map.mean(dim=(2, 3)))
            dense_keys = self.target["dense_projector"](key_map).flatten(2)  # (B, D, S)
            match = match_locations(query_map.flatten(2), key_map.flatten(2))  # (B, S)
            index = match.unsqueeze(1).expand(-1, dense_keys.shape[1], -1)
            matched_keys = dense_keys.gather(2, index)
            pooled_keys = dense_keys.mean(dim=2)
        loss_global = self.global_loss(queries, keys)
        loss_dense = self.dense_loss(dense_queries, matched_keys, pooled_keys)
        lam = self.current_lambda()
        loss = (1 - lam) * loss_global + lam * loss_dense
        logs = {"loss_global": loss_global.detach(), "loss_dense": loss_dense.detach(), "lambda": lam}
        return StepOutput(loss=loss, features=features, logs=logs)
