"""Batched k-means in torch (Euclidean or cosine) with seeded initialisation.

The offline clustering step of DeepCluster (Caron et al., "Deep Clustering for Unsupervised
Learning of Visual Features", 2018, https://arxiv.org/abs/1807.05520; official code
https://github.com/facebookresearch/deepcluster, which runs faiss' Euclidean k-means) and of
DeepCluster-v2 (Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", 2020, https://arxiv.org/abs/2006.09882, Appendix; official code
https://github.com/facebookresearch/swav, ``main_deepclusterv2.py``, cosine k-means).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["KMeansResult", "kmeans", "kmeans_assign", "kmeans_centroids"]

_METRICS = ("euclidean", "cosine")
_EMPTY = ("split", "keep")


@dataclass
class KMeansResult:
    """What :func:`kmeans` returns.

    Attributes:
        centroids: ``(k, d)`` float centroids (unit rows for the cosine metric).
        labels: ``(n,)`` long, index of each point's nearest centroid in ``centroids``.
        counts: ``(k,)`` long, number of points per cluster under ``labels``.
    """

    centroids: Tensor
    labels: Tensor
    counts: Tensor


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise ValueError(f"k-means metric must be one of {_METRICS}, got {metric!r}")


@torch.no_grad()
def kmeans_assign(x: Tensor, centroids: Tensor, metric: str = "euclidean", chunk_size: int = 1 << 24) -> Tensor:
    """Index of the nearest centroid of every row of ``x`` (the E step of k-means).

    Euclidean: ``argmin_j ||x_i - c_j||^2``, computed as ``argmin_j ||c_j||^2 - 2 x_i . c_j``.
    Cosine: ``argmax_j x_i . c_j / (||x_i|| ||c_j||)`` (DeepCluster-v2's E step on unit vectors).
    Rows are processed in chunks of at most ``chunk_size`` distance entries, so a million points
    against ten thousand centroids fits in memory. Part of the k-means of DeepCluster (Caron et
    al. 2018, https://arxiv.org/abs/1807.05520; https://github.com/facebookresearch/deepcluster).

    Args:
        x: ``(n, d)`` points.
        centroids: ``(k, d)`` centroids.
        metric: ``"euclidean"`` or ``"cosine"``.
        chunk_size: Largest number of ``(point, centroid)`` pairs held at once.

    Returns:
        ``(n,)`` long tensor of cluster indices.

    Example:
        >>> kmeans_assign(torch.tensor([[0.0], [9.0]]), torch.tensor([[1.0], [10.0]]))
        tensor([0, 1])
    """
    _check_metric(metric)
    x, c = x.float(), centroids.float()
    if metric == "cosine":
        x, c = F.normalize(x, dim=1), F.normalize(c, dim=1)
    sq_norms = (c * c).sum(1)
    rows = max(1, chunk_size // max(1, c.shape[0]))
    labels = []
    for start in range(0, x.shape[0], rows):
        dots = x[start : start + rows] @ c.T
        scores = dots if metric == "cosine" else 2 * dots - sq_norms  # larger is nearer
        labels.append(scores.argmax(1))
    return torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=x.device)


@torch.no_grad()
def kmeans_centroids(
    x: Tensor, labels: Tensor, k: int, previous: Tensor | None = None, metric: str = "euclidean"
) -> tuple[Tensor, Tensor]:
    """Means of the members of each cluster (the M step of k-means) and the cluster sizes.

    Empty clusters keep their ``previous`` centroid (zeros without one), as DeepCluster-v2's M
    step does; :func:`kmeans` then re-seeds them if asked. With the cosine metric the means are
    L2-normalised (spherical k-means, as in ``main_deepclusterv2.py`` of
    https://github.com/facebookresearch/swav; Caron et al. 2020, https://arxiv.org/abs/2006.09882).

    Args:
        x: ``(n, d)`` points (unit rows expected for the cosine metric).
        labels: ``(n,)`` cluster index of each point, in ``[0, k)``.
        k: Number of clusters.
        previous: ``(k, d)`` centroids used for empty clusters.
        metric: ``"euclidean"`` or ``"cosine"``.

    Returns:
        ``(centroids (k, d), counts (k,))``.

    Example:
        >>> c, n = kmeans_centroids(torch.tensor([[0.0], [2.0], [5.0]]), torch.tensor([0, 0, 1]), 2)
        >>> c.flatten().tolist(), n.tolist()
        ([1.0, 5.0], [2, 1])
    """
    _check_metric(metric)
    x = x.float()
    sums = torch.zeros(k, x.shape[1], device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k)
    centroids = sums / counts.clamp(min=1).unsqueeze(1).to(sums)
    empty = counts == 0
    if empty.any():
        centroids[empty] = 0.0 if previous is None else previous.float()[empty]
    if metric == "cosine":
        centroids = F.normalize(centroids, dim=1)
    return centroids, counts


@torch.no_grad()
def _split_for_empty(centroids: Tensor, counts: Tensor, generator: torch.Generator, eps: float) -> None:
    """Re-seed each empty cluster by splitting a random non-empty one (DeepCluster, Sec. 3.3).

    A donor cluster with ``m >= 2`` members is drawn with probability proportional to ``m - 1``
    (as faiss does); the empty cluster gets the donor's centroid plus a small random offset and
    the donor the same centroid minus it; the donor's points are divided between the two at the
    next assignment. Counts are updated to an even split so later empty clusters see them.
    """
    for e in torch.nonzero(counts == 0).flatten().tolist():
        weights = (counts - 1).clamp(min=0).double().cpu()
        if weights.sum() <= 0:
            return  # no cluster has two points: nothing to split
        donor = int(torch.multinomial(weights, 1, generator=generator))
        c = centroids[donor]
        scale = float(c.norm()) / max(1, c.numel()) ** 0.5 or 1.0
        offset = (eps * scale * torch.randn(c.shape, generator=generator)).to(c)
        centroids[e] = c + offset
        centroids[donor] = c - offset
        half = counts[donor] // 2
        counts[e], counts[donor] = half, counts[donor] - half


@torch.no_grad()
def kmeans(
    x: Tensor,
    k: int,
    *,
    iterations: int = 20,
    metric: str = "euclidean",
    empty: str = "split",
    generator: torch.Generator | None = None,
    split_eps: float = 1.0 / 1024,
) -> KMeansResult:
    """Lloyd's k-means with a fixed number of iterations, then a final assignment.

    Initial centroids are ``k`` distinct points drawn with ``generator`` (a CPU generator; the
    same seed gives the same result). Each iteration assigns every point to its nearest centroid
    (:func:`kmeans_assign`) and moves every centroid to the mean of its points
    (:func:`kmeans_centroids`). Empty clusters are then re-seeded: ``empty="split"`` splits a
    random non-empty cluster in two, as DeepCluster does (Caron et al. 2018,
    https://arxiv.org/abs/1807.05520, Sec. 3.3 "Avoiding trivial solutions"; faiss in
    https://github.com/facebookresearch/deepcluster); ``empty="keep"`` keeps the old centroid, as
    DeepCluster-v2 (https://github.com/facebookresearch/swav, ``main_deepclusterv2.py``: random
    points as initial centroids, 10 iterations, cosine metric). After the last iteration the
    points are assigned once more, so the returned labels are the nearest returned centroids.

    Args:
        x: ``(n, d)`` points, ``n >= k``.
        k: Number of clusters.
        iterations: Number of assignment + update rounds (DeepCluster 20, DeepCluster-v2 10).
        metric: ``"euclidean"`` or ``"cosine"``.
        empty: ``"split"`` or ``"keep"`` (see above).
        generator: CPU random generator; ``None`` uses torch's global one.
        split_eps: Relative size of the offset that separates a split pair of centroids.

    Returns:
        :class:`KMeansResult` with centroids, labels and cluster sizes.

    Raises:
        ValueError: ``k < 1``, ``n < k``, ``iterations < 0`` or an unknown option.

    Example:
        >>> result = kmeans(torch.randn(100, 8), k=5, generator=torch.Generator().manual_seed(0))
        >>> result.centroids.shape, result.labels.shape
        (torch.Size([5, 8]), torch.Size([100]))
    """
    _check_metric(metric)
    if empty not in _EMPTY:
        raise ValueError(f"k-means `empty` must be one of {_EMPTY}, got {empty!r}")
    if x.dim() != 2:
        raise ValueError(f"k-means expects (n, d) points, got shape {tuple(x.shape)}")
    if k < 1 or x.shape[0] < k:
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k} for {x.shape[0]} points")
    if iterations < 0:
        raise ValueError(f"k-means iterations must be >= 0, got {iterations}")
    x = x.float()
    if metric == "cosine":
        x = F.normalize(x, dim=1)
    generator = generator if generator is not None else torch.default_generator
    first = torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)
    centroids = x[first].clone()
    for _ in range(iterations):
        labels = kmeans_assign(x, centroids, metric)
        centroids, counts = kmeans_centroids(x, labels, k, previous=centroids, metric=metric)
        if empty == "split" and (counts == 0).any():
            _split_for_empty(centroids, counts, generator, split_eps)
            if metric == "cosine":
                centroids = F.normalize(centroids, dim=1)
    labels = kmeans_assign(x, centroids, metric)
    return KMeansResult(centroids, labels, torch.bincount(labels, minlength=k))
