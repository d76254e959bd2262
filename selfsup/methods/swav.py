"""SwAV: "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments".

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, 2020. https://arxiv.org/abs/2006.09882
Official code: https://github.com/facebookresearch/swav
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.losses.swav import SwAVLoss
from selfsup.methods.base import Method, StepOutput, TrainingProgress, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP
from selfsup.nn.multicrop import forward_by_resolution
from selfsup.nn.sinkhorn import sinkhorn


@METHODS.register("swav")
class SwAV(Method):
    """Online clustering: codes of the global crops (Sinkhorn-Knopp) are predicted from other views.

    Each view's L2-normalised projection is scored against ``num_prototypes`` unit prototypes;
    the codes of the first ``num_assign_views`` views (the global crops) come from
    :func:`~selfsup.nn.sinkhorn.sinkhorn` over the global batch (plus, from epoch
    ``epoch_queue_starts`` on and once full, a queue of this process's past projections), and
    :class:`~selfsup.losses.swav.SwAVLoss` predicts them from every other view. The prototypes are
    renormalised after every optimizer step and get no update during the first
    ``freeze_prototypes_iters`` steps. Defaults are the paper's ImageNet ones (Sec. 4, Appendix
    A; official ``main_swav.py``): projector 2048-128 with BatchNorm, 3000 prototypes,
    temperature 0.1, epsilon 0.05, 3 Sinkhorn iterations, prototypes frozen for 313 steps, no
    queue (``queue_size`` 3840 from epoch 15 in the small-batch runs). ``queue_size`` is per
    process (the official ``queue_length / world_size``).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = SwAV(backbone, queue_size=64, proj_hidden_dim=16, proj_output_dim=8, num_prototypes=10)
        >>> views = [torch.randn(8, 3, 16, 16)] * 2 + [torch.randn(8, 3, 8, 8)] * 2  # 2 global (16 px), 2 local views (8 px)
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.logs  # the queue joins the codes' batch from epoch_queue_starts on
        (torch.Size([]), {'queue_active': 0.0})
    """

    card = MethodCard(
        label="SwAV", year=2020, authors="Caron et al.",
        title="Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
        paper="https://arxiv.org/abs/2006.09882", code="https://github.com/facebookresearch/swav", family="clustering",
        views="multicrop", backbones=ANY_BACKBONE,
        summary="swapped prediction of Sinkhorn-Knopp prototype codes, multi-crop",
        small=dict(proj_hidden_dim=16, proj_output_dim=8, num_prototypes=10, freeze_prototypes_iters=0, queue_size=64,
                   epoch_queue_starts=1),
        small_views=dict(local_size=8, num_local=2),
    )
    queue: torch.Tensor

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 128,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        num_assign_views: int = 2,
        queue_size: int = 0,
        epoch_queue_starts: int = 15,
        freeze_prototypes_iters: int = 313,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        if num_assign_views < 1 or queue_size < 0 or freeze_prototypes_iters < 0:
            raise ValueError(
                "SwAV needs num_assign_views >= 1, queue_size >= 0 and freeze_prototypes_iters >= 0, got "
                f"{num_assign_views}, {queue_size}, {freeze_prototypes_iters}"
            )
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim])
        self.prototypes = nn.Linear(proj_output_dim, num_prototypes, bias=False)
        self.normalize_prototypes()
        self.criterion = SwAVLoss(temperature)
        self.epsilon, self.sinkhorn_iterations = epsilon, sinkhorn_iterations
        self.num_assign_views, self.gather_distributed = num_assign_views, gather_distributed
        self.queue_size, self.epoch_queue_starts = queue_size, epoch_queue_starts
        self.freeze_prototypes_iters = freeze_prototypes_iters
        self.register_buffer("queue", torch.zeros(num_assign_views, queue_size, proj_output_dim))

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Rescale every prototype (row of the weight) to unit L2 norm."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    @property
    def queue_active(self) -> bool:
        """Whether the queue is being filled (``queue_size > 0`` and the epoch of the current step,
        ``self.progress.epoch``, at least ``epoch_queue_starts``)."""
        return self.queue_size > 0 and self.progress.epoch >= self.epoch_queue_starts

    @torch.no_grad()
    def codes(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Sinkhorn codes ``(A, B, K)`` of the assignment views' embeddings ``(A, B, D)``; in
        training mode with an active queue, also pushes them into the queue (newest first)."""
        weight = self.prototypes.weight.detach()
        batch = embeddings.shape[1]
        result = []
        for a, z in enumerate(embeddings):
            scores = z @ weight.T
            use_queue = self.queue_active and bool(self.queue[a, -1].any())
            if use_queue:  # the official code waits until the queue is full
                scores = torch.cat([self.queue[a] @ weight.T, scores])
            codes = sinkhorn(scores, self.epsilon, self.sinkhorn_iterations, self.gather_distributed)
            result.append(codes[-batch:])
            if self.queue_active and self.training:
                self.queue[a] = torch.cat([z, self.queue[a, :-batch]])[: self.queue_size]
        return torch.stack(result)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        views, a = batch.views, self.num_assign_views
        if len(views) < max(2, a):
            raise ValueError(
                f"SwAV needs at least {max(2, a)} views (assignment views first), got {len(views)}"
            )
        n = len(views[0])
        features = forward_by_resolution(self.backbone, views)
        z = F.normalize(self.projector(features), dim=1)
        scores = self.prototypes(z).reshape(len(views), n, -1)
        codes = self.codes(z.detach().reshape(len(views), n, -1)[:a])
        loss = self.criterion(scores, codes)
        return StepOutput(loss=loss, features=features[:n], logs={"queue_active": float(self.queue_active)})

    def on_after_backward(self, progress: TrainingProgress) -> None:
        """Drop the prototypes' gradient during the first ``freeze_prototypes_iters`` steps."""
        if progress.step < self.freeze_prototypes_iters:
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def on_step_end(self, progress: TrainingProgress) -> None:
        self.normalize_prototypes()
