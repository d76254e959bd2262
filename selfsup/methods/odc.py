"""ODC: "Online Deep Clustering for Unsupervised Representation Learning".

Zhan, Xie, Liu, Ong, Loy, 2020 (CVPR). https://arxiv.org/abs/2006.10645
Official code: https://github.com/open-mmlab/mmselfsup (configs/selfsup/odc; first released in
OpenSelfSup by the authors)
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.losses.cluster_ce import ClusterCrossEntropyLoss, cluster_size_weights
from selfsup.methods.base import Method, StepOutput, TrainingProgress, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.broadcast import broadcast_from_rank0
from selfsup.nn.kmeans import kmeans
from selfsup.nn.odc_memory import ODCMemory


@METHODS.register("odc")
class ODC(Method):
    """Classify samples into clusters whose labels and centroids evolve online with a memory.

    Network: backbone -> neck (Linear-BN(no affine)-ReLU-Dropout-Linear-ReLU, 512 then 256 wide,
    as ``ODCNeck``) -> linear head over ``num_clusters`` clusters (weights N(0, 0.01), bias 0).
    At the first epoch start the neck features of the whole training set (neck applied in eval
    mode to ``train_features()``) are L2-normalised and clustered by k-means (no PCA, as ODC's
    config), which initialises the :class:`~selfsup.nn.odc_memory.ODCMemory`. Each step: the loss
    is the cross-entropy of the head on view 0 against the memory labels, each sample weighted by
    ``n_c ** -reweight_power`` (0.5; weighted mean as ``nn.CrossEntropyLoss(weight=...)``); then,
    in :meth:`on_step_end`, the batch's memory features are momentum-updated (0.5) and relabelled,
    every ``centroids_update_interval`` (10) steps all centroids are recomputed, small clusters
    (< ``min_cluster_size`` = 20) are dissolved and re-seeded every step, and the class weights
    are refreshed. ``num_clusters`` defaults to the paper's 10,000 (ImageNet); the CIFAR-10
    recipe uses 100. Views: ODC's config uses crop, flip, a 2 degree rotation, colour jitter and
    grayscale; the closest recipe here is ``mocov2`` (only view 0 is used). Differences: no
    rotation; the head's zero momentum in the official optimizer is not reproduced.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = ODC(backbone, num_clusters=4, min_cluster_size=2, neck_hidden_dim=32, neck_output_dim=16,
        ...              kmeans_iterations=3, num_samples=32)
        >>> images = torch.randn(32, 3, 16, 16)  # the training set, in index order
        >>> method.on_epoch_start(0, lambda: method.embed(images))  # the first epoch: k-means initialises the memory
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
        >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
        >>> method.training_step(batch).loss.shape
        torch.Size([])
    """

    card = MethodCard(
        label="ODC", year=2020, authors="Zhan et al.",
        title="Online Deep Clustering for Unsupervised Representation Learning",
        paper="https://arxiv.org/abs/2006.10645", code="https://github.com/open-mmlab/mmselfsup", family="clustering",
        views="mocov2", backbones=ANY_BACKBONE,
        summary="online cluster labels from a feature memory, re-weighted classification",
        small=dict(neck_hidden_dim=32, neck_output_dim=16, num_clusters=4, min_cluster_size=2, kmeans_iterations=3),
    )
    class_weights: Tensor

    def __init__(
        self,
        backbone: Backbone,
        *,
        neck_hidden_dim: int = 512,
        neck_output_dim: int = 256,
        num_clusters: int = 10000,
        memory_momentum: float = 0.5,
        min_cluster_size: int = 20,
        centroids_update_interval: int = 10,
        reweight_power: float = 0.5,
        kmeans_iterations: int = 20,
        seed: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(backbone)
        if num_samples is None or num_samples < 1:
            raise ValueError("ODC needs num_samples (the training set's size; the engine fills it in)")
        if not 1 <= num_clusters <= num_samples:
            raise ValueError(f"ODC needs 1 <= num_clusters <= num_samples, got {num_clusters} and {num_samples}")
        if centroids_update_interval < 1:
            raise ValueError(f"ODC centroids_update_interval must be >= 1, got {centroids_update_interval}")
        self.num_clusters, self.reweight_power = int(num_clusters), float(reweight_power)
        self.centroids_update_interval, self.kmeans_iterations = int(centroids_update_interval), int(kmeans_iterations)
        self.seed = int(seed)
        self.neck = nn.Sequential(
            nn.Linear(self.feature_dim, neck_hidden_dim), nn.BatchNorm1d(neck_hidden_dim, affine=False),
            nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(neck_hidden_dim, neck_output_dim), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(neck_output_dim, self.num_clusters)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)
        self.memory = ODCMemory(num_samples, neck_output_dim, self.num_clusters, memory_momentum, min_cluster_size)
        self.register_buffer("class_weights", torch.full((self.num_clusters,), 1.0 / self.num_clusters))
        self.criterion = ClusterCrossEntropyLoss(temperature=1.0)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, train_features: Callable[[], Tensor]) -> None:
        if bool(self.memory.initialized):
            return  # ODC clusters the whole data set once; later labels evolve online
        device = self.memory.features.device
        was_training = self.neck.training
        self.neck.eval()
        backbone_features = train_features().to(device)
        features = torch.cat([self.neck(chunk) for chunk in backbone_features.split(4096)])
        self.neck.train(was_training)
        generator = torch.Generator().manual_seed(self.seed)
        result = kmeans(torch.nn.functional.normalize(features, dim=1), self.num_clusters,
                        iterations=self.kmeans_iterations, metric="euclidean", empty="split", generator=generator)
        self.memory.initialize(features, broadcast_from_rank0(result.labels))
        self._refresh_weights()

    def _refresh_weights(self) -> None:
        self.class_weights.copy_(cluster_size_weights(self.memory.labels, self.num_clusters, self.reweight_power))

    def training_step(self, batch: ViewBatch) -> StepOutput:
        if not bool(self.memory.initialized):
            raise RuntimeError("ODC.training_step before on_epoch_start: the memory is not initialised")
        features = self.backbone(batch.views[0])
        z = self.neck(features)
        indices = batch.indices.to(self.memory.labels.device)
        loss = self.criterion(self.head(z), self.memory.labels[indices], self.class_weights)
        self.defer(indices, z.detach())
        return StepOutput(loss=loss, features=features)

    @torch.no_grad()
    def on_step_end(self, progress: TrainingProgress) -> None:
        deferred = self.take_deferred()
        if not deferred:
            return
        changes = [self.memory.update_samples(indices, z) for indices, z in deferred]
        change = sum(changes) / len(changes)
        steps_done = progress.step + 1
        if steps_done % self.centroids_update_interval == 0:
            self.memory.update_centroids()
        self.memory.deal_with_small_clusters(torch.Generator().manual_seed(self.seed * 100003 + steps_done))
        self._refresh_weights()
        self.last_change_ratio = float(change)
