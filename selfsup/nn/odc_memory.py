"""ODC's memory: a feature per sample, its cluster label, and the cluster centroids."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.nn.distributed import gather_no_grad, world_size
from selfsup.nn.kmeans import kmeans, kmeans_centroids

__all__ = ["ODCMemory"]


class ODCMemory(nn.Module):
    """Samples memory and centroids memory of Online Deep Clustering.

    Zhan, Xie, Liu, Ong, Loy, "Online Deep Clustering for Unsupervised Representation Learning",
    2020, https://arxiv.org/abs/2006.10645, Sec. 3.2; code https://github.com/open-mmlab/mmselfsup
    (``ODCMemory``). Holds a unit feature per sample, its pseudo-label and one centroid per
    cluster, all buffers (saved in checkpoints). With several processes the batch of every rank
    is gathered, so all ranks keep identical memories.

    * :meth:`update_samples`: ``f <- normalize((1 - m) f_old + m normalize(f_new))`` for the
      batch's samples (``m = momentum = 0.5``), then each of them is relabelled to the centroid
      with the largest dot product.
    * :meth:`update_centroids`: centroid = mean of its members' memory features (all clusters,
      or the listed ones); empty clusters keep their centroid.
    * :meth:`deal_with_small_clusters`: samples of clusters smaller than ``min_cluster`` are moved
      to their nearest other (non-small) centroid; each emptied cluster then takes half of the
      currently largest cluster, split by 2-means (random halves if 2-means fails), and both
      centroids are recomputed.

    Args:
        num_samples: Training-set size.
        dim: Feature width.
        num_clusters: ``k``.
        momentum: Weight of the new feature (ODC: 0.5).
        min_cluster: Smallest cluster kept (ODC: 20).

    Example:
        >>> memory = ODCMemory(num_samples=100, dim=16, num_clusters=5)
        >>> memory.initialize(torch.randn(100, 16), torch.arange(100) % 5)
    """

    features: Tensor
    labels: Tensor
    centroids: Tensor
    initialized: Tensor

    def __init__(self, num_samples: int, dim: int, num_clusters: int, momentum: float = 0.5,
                 min_cluster: int = 20) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"ODCMemory momentum must be in [0, 1], got {momentum}")
        self.num_clusters, self.momentum, self.min_cluster = int(num_clusters), float(momentum), int(min_cluster)
        self.register_buffer("features", torch.zeros(num_samples, dim))
        self.register_buffer("labels", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(num_clusters, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def initialize(self, features: Tensor, labels: Tensor) -> None:
        """Store L2-normalised ``features`` (N, d) and ``labels`` (N,); centroids = member means.

        Example:
            >>> memory = ODCMemory(num_samples=100, dim=16, num_clusters=5)
            >>> memory.initialize(torch.randn(100, 16), torch.arange(100) % 5)
            >>> memory.centroids.shape
            torch.Size([5, 16])
        """
        self.features.copy_(F.normalize(features.float(), dim=1))
        self.labels.copy_(labels)
        self.update_centroids()
        self.initialized.fill_(True)

    @torch.no_grad()
    def update_samples(self, indices: Tensor, features: Tensor) -> Tensor:
        """Momentum-update the memory features of ``indices`` and relabel them; returns the
        fraction of these samples whose label changed.

        Example:
            >>> memory = ODCMemory(num_samples=100, dim=16, num_clusters=5)
            >>> memory.initialize(torch.randn(100, 16), torch.arange(100) % 5)
            >>> changed = memory.update_samples(torch.tensor([0, 1]), torch.randn(2, 16))
            >>> changed.item() in (0.0, 0.5, 1.0)  # none, one or both of the two samples relabelled
            True
        """
        features = F.normalize(features.detach().float(), dim=1)
        if world_size() > 1:
            indices, features = gather_no_grad(indices), gather_no_grad(features)
        indices = indices.to(self.labels.device)
        mixed = (1 - self.momentum) * self.features[indices] + self.momentum * features.to(self.features)
        mixed = F.normalize(mixed, dim=1)
        self.features[indices] = mixed
        new_labels = (mixed @ self.centroids.T).argmax(1)
        changed = (new_labels != self.labels[indices]).float().mean()
        self.labels[indices] = new_labels
        return changed

    @torch.no_grad()
    def update_centroids(self, clusters: list[int] | None = None) -> None:
        """Centroids = means of their members' features (all, or only ``clusters``).

        Example:
            >>> memory = ODCMemory(num_samples=100, dim=16, num_clusters=5)
            >>> memory.initialize(torch.randn(100, 16), torch.arange(100) % 5)
            >>> memory.update_centroids([0, 3])  # only clusters 0 and 3
        """
        means, _ = kmeans_centroids(self.features, self.labels, self.num_clusters, previous=self.centroids)
        if clusters is None:
            self.centroids.copy_(means)
        else:
            idx = torch.tensor(clusters, dtype=torch.long, device=self.centroids.device)
            self.centroids[idx] = means[idx]

    @torch.no_grad()
    def deal_with_small_clusters(self, generator: torch.Generator | None = None) -> list[int]:
        """Empty the clusters smaller than ``min_cluster`` and re-seed them; returns their indices.

        Example:
            >>> memory = ODCMemory(num_samples=100, dim=16, num_clusters=5, min_cluster=10)
            >>> memory.initialize(torch.randn(100, 16), torch.tensor([0, 1, 2, 3] * 24 + [4] * 4))
            >>> memory.deal_with_small_clusters(torch.Generator().manual_seed(0))  # cluster 4 had 4 samples
            [4]
        """
        counts = torch.bincount(self.labels, minlength=self.num_clusters)
        small = counts < self.min_cluster
        if not small.any() or small.all():
            return []
        members = small[self.labels]
        if members.any():
            allowed = torch.nonzero(~small).flatten()
            scores = self.features[members] @ self.centroids[allowed].T
            self.labels[members] = allowed[scores.argmax(1)]
        emptied = torch.nonzero(small).flatten().tolist()
        generator = generator if generator is not None else torch.default_generator
        for e in emptied:
            largest = int(torch.bincount(self.labels, minlength=self.num_clusters).argmax())
            idx = torch.nonzero(self.labels == largest).flatten()
            if len(idx) < 2:
                continue
            halves = kmeans(self.features[idx], 2, iterations=20, metric="euclidean", empty="keep",
                            generator=generator).labels
            if halves.all() or not halves.any():  # 2-means failed: random halves
                halves = torch.zeros(len(idx), dtype=torch.long, device=idx.device)
                halves[torch.randperm(len(idx), generator=generator)[: len(idx) // 2].to(idx.device)] = 1
            self.labels[idx[halves == 1]] = e
            self.update_centroids([largest, e])
        return emptied
