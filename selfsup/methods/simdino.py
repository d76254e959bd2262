"""SimDINO: "Simplifying DINO via Coding Rate Regularization".

Wu, Zhang, Buchanan, Ma, et al., 2025. https://arxiv.org/abs/2502.10385
Official code: https://github.com/RobinWu218/SimDINO
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.backbones.base import Backbone
from selfsup.losses.simdino import SimDINOLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.dino_head import dino_mlp
from selfsup.nn.momentum import MomentumTeacher
from selfsup.nn.multicrop import forward_by_resolution


class NormalizedMLP(torch.nn.Module):
    """DINO's head MLP to the bottleneck, its output L2-normalised (SimDINO's head: no prototype layer)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, num_layers: int, use_bn: bool = False) -> None:
        super().__init__()
        self.mlp = dino_mlp(in_dim, hidden_dim, bottleneck_dim, num_layers, use_bn=use_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1)


@METHODS.register("simdino")
class SimDINO(Method):
    """DINO's multi-crop student and EMA teacher, with a coding-rate term in place of the prototypes,
    centring and sharpening.

    The student's features of every view (global first) and the teacher's of the global views go
    through DINO's head MLP to a 256-d bottleneck and are L2-normalised; :class:`~selfsup.losses.SimDINOLoss`
    rewards their cosine agreement across views and the coding rate of the global views' features.
    Defaults are the official ones (``simdino/main_dino.py``): head 2048-2048-256, ``eps = 0.5``,
    ``coeff = 1``, teacher momentum 0.996 -> 1 (cosine), 2 global views. ``use_bn_in_head`` puts
    BatchNorm after the head's hidden layers (DINO's option of the same name, off by default).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = SimDINO(backbone, hidden_dim=16, bottleneck_dim=8)
        >>> views = [torch.randn(8, 3, 16, 16)] * 2 + [torch.randn(8, 3, 8, 8)] * 2  # 2 global (16 px), 2 local views (8 px)
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> sorted(out.logs)
        ['compression', 'expansion']
    """

    card = MethodCard(
        label="SimDINO", year=2025, authors="Wu et al.",
        title="Simplifying DINO via Coding Rate Regularization", paper="https://arxiv.org/abs/2502.10385",
        code="https://github.com/RobinWu218/SimDINO", family="distillation", views="dino", backbones=ANY_BACKBONE,
        summary="DINO with a coding-rate term instead of prototypes, centring and sharpening",
        small=dict(hidden_dim=16, bottleneck_dim=8), small_views=dict(local_size=8, num_local=2),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn_in_head: bool = False,
        eps: float = 0.5,
        coeff: float = 1.0,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        num_global_views: int = 2,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        if num_global_views < 1:
            raise ValueError(f"SimDINO needs num_global_views >= 1, got {num_global_views}")
        self.head = NormalizedMLP(self.feature_dim, hidden_dim, bottleneck_dim, num_layers, use_bn=use_bn_in_head)
        self.teacher = MomentumTeacher({"backbone": self.backbone, "head": self.head},
                                       base_momentum=base_momentum, final_momentum=final_momentum, owner="SimDINO")
        self.criterion = SimDINOLoss(eps=eps, coeff=coeff, gather_distributed=gather_distributed)
        self.num_global_views = num_global_views

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """SimDINO's loss over the batch's views (global views first, of one size).

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = SimDINO(backbone, hidden_dim=16, bottleneck_dim=8)
            >>> views = [torch.randn(8, 3, 16, 16)] * 2 + [torch.randn(8, 3, 8, 8)] * 2
            >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
            >>> method.training_step(batch).loss.backward()
        """
        views, g = batch.views, self.num_global_views
        if len(views) < max(2, g):
            raise ValueError(f"SimDINO needs at least {max(2, g)} views (global first), got {len(views)}")
        n = len(views[0])
        features = forward_by_resolution(self.backbone, views)
        student = self.head(features).reshape(len(views), n, -1)
        teacher = self.teacher(torch.cat(views[:g])).reshape(g, n, -1)
        loss, compression, expansion = self.criterion(student, teacher)
        return StepOutput(loss=loss, features=features[:n],
                          logs={"compression": compression, "expansion": expansion})
