"""DeepCluster: "Deep Clustering for Unsupervised Learning of Visual Features".

Caron, Bojanowski, Joulin, Douze, 2018. https://arxiv.org/abs/1807.05520
Official code: https://github.com/facebookresearch/deepcluster
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.losses.cluster_ce import ClusterCrossEntropyLoss, cluster_size_weights
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.broadcast import broadcast_from_rank0
from selfsup.nn.kmeans import kmeans
from selfsup.nn.pca import pca_whiten
from selfsup.nn.sobel import Sobel


class SobelBackbone(Backbone):
    """A backbone whose input first goes through :class:`selfsup.nn.sobel.Sobel`.

    DeepCluster's ``--sobel`` (Caron et al. 2018, https://arxiv.org/abs/1807.05520, Sec. 4;
    https://github.com/facebookresearch/deepcluster). The wrapped backbone must take 2 input
    channels (``backbone.in_channels=2``). Evaluation goes through this module too, so features
    always see Sobel inputs, as in the official code.

    Example:
        >>> net = SobelBackbone(selfsup.backbones.get("resnet_tiny", width=4, in_channels=2))
        >>> net(torch.zeros(2, 3, 16, 16)).shape, net.feature_dim  # RGB in, through Sobel's 2 channels
        (torch.Size([2, 32]), 32)
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.sobel = Sobel()
        self.net = backbone
        self.feature_dim = int(backbone.feature_dim)
        self.name = getattr(backbone, "name", "")
        self.config = dict(getattr(backbone, "config", {}))

    def forward(self, images: Tensor) -> Tensor:
        """Pooled features ``(B, feature_dim)`` of the Sobel-filtered images."""
        return self.net(self.sobel(images))


@METHODS.register("deepcluster")
class DeepCluster(Method):
    """Alternate k-means on the whole training set and classification of the cluster indices.

    At each epoch start the backbone features of all ``num_samples`` training images are
    PCA-whitened to ``pca_dim`` (256) dimensions, L2-normalised and clustered by Euclidean k-means
    (20 iterations, empty clusters re-seeded by splitting a non-empty one; paper Sec. 3.3 and 4);
    the cluster indices become each image's pseudo-label (a buffer indexed by ``batch.indices``)
    and the linear classifier on the pooled features is re-initialised (weights N(0, 0.01),
    bias 0, as the official ``top_layer``). The loss is the cross-entropy of the classifier on
    view 0 against the pseudo-label. The official code samples images uniformly over clusters;
    here that is approximated by weighting each sample by ``n_c ** -cluster_balance`` (1 gives
    the same expected loss as uniform-over-clusters sampling, 0 the plain loss; see
    :func:`selfsup.losses.cluster_ce.cluster_size_weights`). ``num_clusters`` defaults to the
    paper's 10,000 (ImageNet); the CIFAR-10 recipe uses 100 (10x the classes). Views: random
    resized crop + flip (``crop_flip``), as the paper. ``sobel=True`` puts the paper's fixed
    Sobel layer before the backbone (which must then take 2 channels); off by default.
    Difference: the optimizer state of the re-initialised classifier (momentum) is not reset, as
    the engine owns the optimizer; the official code creates a new optimizer for it each epoch.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = DeepCluster(backbone, num_clusters=4, pca_dim=8, num_samples=32)
        >>> images = torch.randn(32, 3, 16, 16)  # the training set, in index order
        >>> method.on_epoch_start(0, lambda: method.embed(images))  # k-means on its features: the pseudo-labels
        >>> method.labels.shape, int(method.labels.max()) < 4
        (torch.Size([32]), True)
    """

    card = MethodCard(
        label="DeepCluster", year=2018, authors="Caron et al.",
        title="Deep Clustering for Unsupervised Learning of Visual Features", paper="https://arxiv.org/abs/1807.05520",
        code="https://github.com/facebookresearch/deepcluster", family="clustering", views="crop_flip",
        backbones=ANY_BACKBONE,
        summary="k-means of the data set each epoch, classify its pseudo-labels",
        small=dict(num_clusters=4, pca_dim=8, kmeans_iterations=3),
    )
    labels: Tensor
    class_weights: Tensor
    clustered: Tensor

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_clusters: int = 10000,
        pca_dim: int = 256,
        kmeans_iterations: int = 20,
        cluster_balance: float = 1.0,
        sobel: bool = False,
        seed: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(SobelBackbone(backbone) if sobel else backbone)
        if num_samples is None or num_samples < 1:
            raise ValueError("DeepCluster needs num_samples (the training set's size; the engine fills it in)")
        if not 1 <= num_clusters <= num_samples:
            raise ValueError(f"DeepCluster needs 1 <= num_clusters <= num_samples, got {num_clusters} and {num_samples}")
        self.num_clusters, self.pca_dim = int(num_clusters), int(pca_dim)
        self.kmeans_iterations, self.cluster_balance, self.seed = int(kmeans_iterations), float(cluster_balance), int(seed)
        self.classifier = nn.Linear(self.feature_dim, self.num_clusters)
        self.register_buffer("labels", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("class_weights", torch.full((self.num_clusters,), 1.0 / self.num_clusters))
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool))
        self.criterion = ClusterCrossEntropyLoss(temperature=1.0)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, train_features: Callable[[], Tensor]) -> None:
        device = self.labels.device
        features = train_features().to(device)
        if features.shape[0] != self.labels.shape[0]:
            raise ValueError(f"DeepCluster got features of {features.shape[0]} samples, expected {self.labels.shape[0]}")
        generator = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        result = kmeans(pca_whiten(features, self.pca_dim), self.num_clusters, iterations=self.kmeans_iterations,
                        metric="euclidean", empty="split", generator=generator)
        self.labels.copy_(broadcast_from_rank0(result.labels.to(device)))
        self.class_weights.copy_(cluster_size_weights(self.labels, self.num_clusters, self.cluster_balance))
        weight = torch.randn(self.classifier.weight.shape, generator=generator) * 0.01
        self.classifier.weight.copy_(broadcast_from_rank0(weight.to(self.classifier.weight)))
        self.classifier.bias.zero_()
        self.clustered.fill_(True)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        if not bool(self.clustered):
            raise RuntimeError("DeepCluster.training_step before any on_epoch_start: the pseudo-labels are not set")
        features = self.backbone(batch.views[0])
        targets = self.labels[batch.indices.to(self.labels.device)]
        weights = self.class_weights if self.cluster_balance != 0 else None
        loss = self.criterion(self.classifier(features), targets, weights)
        return StepOutput(loss=loss, features=features)
