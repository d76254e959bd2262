"""Weighted cosine k-nearest-neighbour evaluation of frozen features (InstDisc's k-NN monitor)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from selfsup.eval.metrics import topk_accuracy
from selfsup.eval.splits import stratified_holdout

__all__ = ["knn_accuracy", "knn_predict", "knn_sweep"]

# exp(1 / T) overflows float32 (max ~ e^88.7) when 1 / T is this large; votes then use float64.
_FLOAT32_MAX_EXPONENT = 80.0


def _check_labels(labels: torch.Tensor, n: int, num_classes: int, what: str) -> None:
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{what} must be a 1-D tensor of {n} labels, got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{what} must hold integer class indices, got dtype {labels.dtype}")
    if n == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise ValueError(
            f"{what} contains negative labels (min {lo}); unlabelled samples cannot be used for "
            "k-NN evaluation, drop them first"
        )
    if hi >= num_classes:
        raise ValueError(f"{what} contains label {hi} but num_classes={num_classes}")


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores of a temperature-weighted cosine k-NN classifier.

    The non-parametric classifier of InstDisc (Wu et al., "Unsupervised Feature Learning via
    Non-Parametric Instance Discrimination", 2018, https://arxiv.org/abs/1805.01978, Sec. 3.4;
    official code https://github.com/zhirongw/lemniscate.pytorch), the usual k-NN monitor of
    self-supervised training. Features are L2-normalised; each test sample takes its ``k`` most
    cosine-similar training samples (``k`` is clipped to the training set size), each of which
    votes for its label with weight ``exp(sim / temperature)``; a class's score is the sum of its
    votes (0 for a class with no vote). Test rows are processed ``chunk_size`` at a time, so
    memory is ``O(chunk_size * n_train)``. Computed on ``train_features``' device. Scores are
    float32 (float64 for float64 features, or when ``temperature < 1/80``, where
    ``exp(1/temperature)`` would overflow float32).

    Args:
        train_features: ``(n_train, d)`` memory features.
        train_labels: ``(n_train,)`` integer labels in ``[0, num_classes)``.
        test_features: ``(n_test, d)`` query features.
        num_classes: Number of classes.
        k: Number of neighbours (InstDisc uses 200).
        temperature: Vote temperature ``T`` (InstDisc uses 0.1).
        chunk_size: Test rows per chunk.

    Returns:
        ``(n_test, num_classes)`` tensor of summed vote weights.

    Raises:
        ValueError: Bad shapes, an empty training set, labels outside ``[0, num_classes)``
            (negative labels mark unlabelled data, which cannot serve as k-NN memory), or a
            non-positive ``num_classes``, ``k``, ``temperature`` or ``chunk_size``.

    Example:
        >>> scores = knn_predict(torch.randn(100, 8), torch.randint(0, 3, (100,)),
        ...                      torch.randn(5, 8), num_classes=3, k=10)
    """
    if num_classes <= 0 or k <= 0 or chunk_size <= 0 or not temperature > 0:
        raise ValueError(
            "knn_predict needs num_classes, k, temperature and chunk_size > 0, got "
            f"num_classes={num_classes}, k={k}, temperature={temperature}, chunk_size={chunk_size}"
        )
    if train_features.dim() != 2 or test_features.dim() != 2:
        raise ValueError(
            "knn_predict expects 2-D (n, d) features, got train "
            f"{tuple(train_features.shape)} and test {tuple(test_features.shape)}"
        )
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train features have width {train_features.shape[1]} but test features have width "
            f"{test_features.shape[1]}"
        )
    n_train = train_features.shape[0]
    if n_train == 0:
        raise ValueError("knn_predict needs at least one training sample")
    _check_labels(train_labels, n_train, num_classes, "train_labels")

    device = train_features.device
    dtype = torch.promote_types(train_features.dtype, torch.float32)
    vote_dtype = dtype
    if 1.0 / temperature > _FLOAT32_MAX_EXPONENT:
        vote_dtype = torch.float64
    train = F.normalize(train_features.to(dtype), dim=1)
    labels = train_labels.to(device=device, dtype=torch.long)
    k = min(k, n_train)

    scores = []
    for start in range(0, test_features.shape[0], chunk_size):
        test = F.normalize(test_features[start : start + chunk_size].to(device, dtype), dim=1)
        sim = test @ train.T  # (c, n_train)
        top_sim, top_idx = sim.topk(k, dim=1)  # (c, k)
        weights = (top_sim.to(vote_dtype) / temperature).exp()
        chunk = torch.zeros(test.shape[0], num_classes, dtype=vote_dtype, device=device)
        chunk.scatter_add_(1, labels[top_idx], weights)
        scores.append(chunk)
    if not scores:
        return torch.zeros(0, num_classes, dtype=vote_dtype, device=device)
    return torch.cat(scores, dim=0)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    topk: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Top-k accuracies (percent) of the weighted k-NN classifier of :func:`knn_predict`.

    InstDisc's k-NN evaluation (Wu et al., 2018, https://arxiv.org/abs/1805.01978; official code
    https://github.com/zhirongw/lemniscate.pytorch). A test sample is a top-``t`` hit when fewer
    than ``t`` other classes score at least as high as its true class: ties are broken against
    the true class, so a class with no votes is never a hit by chance. ``t`` is clipped to
    ``num_classes`` (top-5 with 3 classes is top-3, i.e. 100%); the key stays ``f"top{t}"``.

    Args:
        train_features: ``(n_train, d)`` memory features.
        train_labels: ``(n_train,)`` integer labels in ``[0, num_classes)``.
        test_features: ``(n_test, d)`` query features, ``n_test >= 1``.
        test_labels: ``(n_test,)`` integer labels in ``[0, num_classes)``.
        num_classes: Number of classes.
        k: Number of neighbours.
        temperature: Vote temperature.
        chunk_size: Test rows per chunk.
        topk: Which top-``t`` accuracies to report.

    Returns:
        ``{"top1": ..., "top5": ...}`` (one key per entry of ``topk``), in percent.

    Raises:
        ValueError: As :func:`knn_predict`, or no test samples, bad test labels, or a
            non-positive entry in ``topk``.

    Example:
        >>> x, y = torch.randn(50, 8), torch.randint(0, 4, (50,))
        >>> acc = knn_accuracy(x, y, x, y, num_classes=4, k=5)
    """
    n_test = test_features.shape[0]
    if n_test == 0:
        raise ValueError("knn_accuracy needs at least one test sample")
    if any(t <= 0 for t in topk):
        raise ValueError(f"knn_accuracy topk entries must be positive, got {tuple(topk)}")
    _check_labels(test_labels, n_test, num_classes, "test_labels")
    scores = knn_predict(
        train_features,
        train_labels,
        test_features,
        num_classes=num_classes,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    return topk_accuracy(scores, test_labels, topk)


def knn_sweep(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    ks: Sequence[int] = (10, 20, 50, 100, 200),
    temperature: float = 0.1,
    val_fraction: float = 0.1,
    seed: int = 0,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> dict[str, Any]:
    """Choose ``k`` for :func:`knn_accuracy` on a validation part of the TRAINING features only.

    A seeded, stratified ``val_fraction`` of the training features
    (:func:`selfsup.eval.stratified_holdout`) is classified with the rest as memory, for each ``k``
    in ``ks``; the ``k`` with the best validation top-1 wins (ties: the smaller ``k``). Test
    features are not an argument: the choice cannot depend on them. Score the test split at the
    chosen ``k`` afterwards, with the whole training set as memory.

    Returns:
        A dict: ``k`` (the chosen k), ``val_top1`` (its validation top-1), ``sweep`` (one
        ``{"k", "val_top1", "val_top5"}`` dict per k) and ``val_size`` (validation samples).

    Example:
        >>> x, y = torch.randn(500, 8), torch.randint(0, 4, (500,))
        >>> knn_sweep(x, y, ks=(5, 20))["k"] in (5, 20)
        True
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] <= 0:
        raise ValueError(f"knn_sweep needs positive values of k, got {ks}")
    labels = train_y.long()
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    fit_idx, val_idx = stratified_holdout(labels.cpu(), val_fraction, seed)
    fit_idx, val_idx = fit_idx.to(train_x.device), val_idx.to(train_x.device)
    sweep = []
    for k in ks:
        acc = knn_accuracy(train_x[fit_idx], labels[fit_idx], train_x[val_idx], labels[val_idx], num_classes=num_classes,
                           k=k, temperature=temperature, chunk_size=chunk_size)
        sweep.append({"k": k, "val_top1": acc["top1"], "val_top5": acc["top5"]})
    best = max(sweep, key=lambda entry: (entry["val_top1"], -entry["k"]))
    return {"k": best["k"], "val_top1": best["val_top1"], "sweep": sweep, "val_size": len(val_idx)}
