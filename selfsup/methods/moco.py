"""MoCo v2: "Improved Baselines with Momentum Contrastive Learning".

Chen, Fan, Girshick, He, 2020. https://arxiv.org/abs/2003.04297 (MoCo v1: He et al. 2019,
"Momentum Contrast for Unsupervised Visual Representation Learning", https://arxiv.org/abs/1911.05722)
Official code: https://github.com/facebookresearch/moco
"""
from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.losses import NTXentLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP, copy_frozen, ema_update


@METHODS.register("mocov2", "MoCo v2 (2020): momentum key encoder, queue of 65,536 negatives, MLP head")
class MoCoV2(Method):
    """A query encoder, a momentum key encoder and a queue of past keys as negatives.

    The loss is InfoNCE (MoCo's Eq. 1): each query's positive is the key of the other view of the
    same image and its negatives are the queued keys; the current keys then enter the queue
    (first in, first out). The key encoder (backbone + head) follows the query encoder as an
    exponential moving average with a constant ``momentum`` (0.999), updated after every optimizer
    step. Defaults are the paper's: a 2-layer MLP head (hidden width = backbone width, no
    BatchNorm) with 128-d output, temperature 0.2, queue of 65,536 keys. The official code's
    shuffled BatchNorm across GPUs is not implemented (as in solo-learn and lightly); keys of all
    processes enter the queue.

    Example:
        >>> method = MoCoV2(selfsup.backbones.get("resnet18", cifar_stem=True), queue_size=4096)
        >>> out = method.training_step(ViewBatch(views=[x0, x1], labels=y, indices=i))
    """

    default_views = "mocov2"

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
        super().__init__(backbone)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"MoCo momentum must be in [0, 1], got {momentum}")
        if queue_size < 1:
            raise ValueError(f"MoCo queue_size must be >= 1, got {queue_size}")
        hidden = proj_hidden_dim or self.feature_dim
        self.projector = MLP([self.feature_dim, hidden, proj_output_dim], batch_norm=False)
        self.target = nn.ModuleDict(
            {"backbone": copy_frozen(self.backbone), "projector": copy_frozen(self.projector)}
        )
        self.momentum = momentum
        self.criterion = NTXentLoss(
            temperature=temperature, memory_bank_size=queue_size, memory_bank_dim=proj_output_dim,
            gather_distributed=True,
        )

    def training_step(self, batch: ViewBatch) -> StepOutput:
        x_query, x_key = batch.views[0], batch.views[1]
        features = self.backbone(x_query)
        queries = self.projector(features)
        with torch.no_grad():
            keys = self.target["projector"](self.target["backbone"](x_key))
        loss = self.criterion(queries, keys)
        return StepOutput(loss=loss, features=features)

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        online = nn.ModuleDict({"backbone": self.backbone, "projector": self.projector})
        ema_update(self.target, online, self.momentum)
