"""DeepCluster-v2, from "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments".

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, 2020 (SwAV paper, Appendix on DeepCluster-v2).
https://arxiv.org/abs/2006.09882
Official code: https://github.com/facebookresearch/swav (main_deepclusterv2.py)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.backbones.base import Backbone
from selfsup.losses.cluster_ce import ClusterCrossEntropyLoss
from selfsup.methods.base import Method, StepOutput, TrainingProgress, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP
from selfsup.nn.broadcast import broadcast_from_rank0
from selfsup.nn.distributed import gather_no_grad, world_size
from selfsup.nn.kmeans import kmeans


@METHODS.register("deepclusterv2")
class DeepClusterV2(Method):
    """Predict k-means assignments of a memory of projections with prototypes set to the centroids.

    A projector (Linear-BN-ReLU-Linear, 2048 then 128, output L2-normalised) maps pooled features
    to ``z``. A memory keeps the last ``z`` of every sample for each of the ``num_global_views``
    global crops. At each epoch start, for every head ``h`` (three heads of 3000 prototypes on
    ImageNet) cosine k-means (10 iterations, random samples as initial centroids, empty clusters
    keep their centroid) runs on the memory of crop ``h mod num_global_views``; its labels become
    the pseudo-labels of head ``h`` and its centroids the prototypes. The loss is the mean over
    heads and crops of the cross-entropy of ``z . prototypes / 0.1`` against the pseudo-label.
    After each step the memory rows of the batch's samples are overwritten with the step's
    (detached) projections of the global crops. The prototypes are not trained: the official
    scripts freeze them for 300,000 iterations, longer than their runs. The memory is filled
    before the first epoch from ``train_features()`` through the projector (eval mode); the
    official code runs a pass of augmented crops instead. Views: SwAV's multi-crop; with the
    recipes here ``mocov2`` (2 global crops, all views used; more views than
    ``num_global_views`` are treated as extra crops in the loss only).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = DeepClusterV2(backbone, proj_hidden_dim=32, proj_output_dim=16, num_prototypes=[4, 4],
        ...                        kmeans_iterations=3, num_samples=32)
        >>> method.on_epoch_start(0, lambda: torch.randn(32, 32))  # features of the training set (unused: see above)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
        >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
        >>> method.training_step(batch).loss.shape
        torch.Size([])
    """

    card = MethodCard(
        label="DeepCluster-v2", year=2020, authors="Caron et al.",
        title="Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
        paper="https://arxiv.org/abs/2006.09882", code="https://github.com/facebookresearch/swav", family="clustering",
        views="mocov2", backbones=ANY_BACKBONE,
        summary="k-means of a projection memory, prototypes = centroids",
        small=dict(proj_hidden_dim=32, proj_output_dim=16, num_prototypes=[4, 4], kmeans_iterations=3),
    )
    memory: Tensor
    labels: Tensor
    memory_ready: Tensor

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 128,
        num_prototypes: Sequence[int] = (3000, 3000, 3000),
        temperature: float = 0.1,
        kmeans_iterations: int = 10,
        num_global_views: int = 2,
        seed: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(backbone)
        if num_samples is None or num_samples < 1:
            raise ValueError("DeepClusterV2 needs num_samples (the training set's size; the engine fills it in)")
        self.num_prototypes = [int(k) for k in num_prototypes]
        if not self.num_prototypes or any(not 1 <= k <= num_samples for k in self.num_prototypes):
            raise ValueError(f"DeepClusterV2 needs 1 <= each of num_prototypes <= num_samples, got {num_prototypes}")
        if num_global_views < 1:
            raise ValueError(f"DeepClusterV2 num_global_views must be >= 1, got {num_global_views}")
        self.kmeans_iterations, self.num_global_views, self.seed = int(kmeans_iterations), int(num_global_views), int(seed)
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim])
        for h, k in enumerate(self.num_prototypes):
            self.register_buffer(f"prototypes{h}", F.normalize(torch.randn(k, proj_output_dim), dim=1))
        self.register_buffer("memory", torch.zeros(self.num_global_views, num_samples, proj_output_dim))
        self.register_buffer("labels", torch.zeros(len(self.num_prototypes), num_samples, dtype=torch.long))
        self.register_buffer("memory_ready", torch.zeros((), dtype=torch.bool))
        self.criterion = ClusterCrossEntropyLoss(temperature=temperature)

    def prototypes(self, head: int) -> Tensor:
        """``(k_head, d)`` prototype matrix of ``head``."""
        return getattr(self, f"prototypes{head}")

    def project(self, features: Tensor) -> Tensor:
        """L2-normalised projection ``z`` of pooled features."""
        return F.normalize(self.projector(features), dim=1)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, train_features: Callable[[], Tensor]) -> None:
        if not bool(self.memory_ready):
            was_training = self.projector.training
            self.projector.eval()
            features = train_features().to(self.memory.device)
            z = torch.cat([self.project(chunk) for chunk in features.split(4096)])
            self.projector.train(was_training)
            self.memory.copy_(z.unsqueeze(0).expand_as(self.memory))
            self.memory_ready.fill_(True)
        for h, k in enumerate(self.num_prototypes):
            generator = torch.Generator().manual_seed((self.seed * 100003 + epoch) * 101 + h)
            result = kmeans(self.memory[h % self.num_global_views], k, iterations=self.kmeans_iterations,
                            metric="cosine", empty="keep", generator=generator)
            self.prototypes(h).copy_(broadcast_from_rank0(result.centroids))
            self.labels[h].copy_(broadcast_from_rank0(result.labels))

    def training_step(self, batch: ViewBatch) -> StepOutput:
        if not bool(self.memory_ready):
            raise RuntimeError("DeepClusterV2.training_step before on_epoch_start: no pseudo-labels yet")
        views, n = batch.views, len(batch.views[0])
        features, start = [], 0
        while start < len(views):  # same-resolution crops go through the backbone together
            end = start + 1
            while end < len(views) and views[end].shape == views[start].shape:
                end += 1
            features.append(self.backbone(torch.cat(views[start:end])))
            start = end
        feats = torch.cat(features)
        z = self.project(feats)
        indices = batch.indices.to(self.labels.device)
        loss = sum(
            self.criterion(z @ self.prototypes(h).T, self.labels[h][indices].repeat(len(views)))
            for h in range(len(self.num_prototypes))
        ) / len(self.num_prototypes)
        self.defer(indices, z[: n * min(self.num_global_views, len(views))].detach())
        return StepOutput(loss=loss, features=feats[:n])

    @torch.no_grad()
    def on_step_end(self, progress: TrainingProgress) -> None:
        for indices, z in self.take_deferred():  # the step's batches (several with micro_batches > 1)
            n = len(indices)
            for j, zj in enumerate(z.split(n)):
                idx, zj = (gather_no_grad(indices), gather_no_grad(zj)) if world_size() > 1 else (indices, zj)
                self.memory[j, idx] = zj.to(self.memory)
