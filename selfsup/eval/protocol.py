"""The k-NN evaluation protocol end to end: embed both splits once, then vote."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy


def knn_eval(
    encoder: Callable[[Tensor], Tensor],
    train_set: Dataset,
    test_set: Dataset,
    transform: Callable[[Tensor], Tensor],
    *,
    k: int = 200,
    temperature: float = 0.1,
    train_indices: Tensor | None = None,
    **feature_options: Any,
) -> dict[str, float]:
    """Weighted cosine k-NN top-1 / top-5 (percent) of ``encoder`` from ``train_set`` to ``test_set``.

    Unlabelled training samples (label -1) are left out of the memory and unlabelled test samples
    out of the score. ``feature_options`` go to :func:`extract_features` (device, batch size, ...).

    Example:
        >>> train_set, test_set = selfsup.data.get("digits", split="train"), selfsup.data.get("digits", split="test")
        >>> transform = selfsup.augment.EvalTransform(8, train_set.mean, train_set.std)
        >>> scores = knn_eval(nn.Flatten(), train_set, test_set, transform)  # raw pixels as the encoder
        >>> {name: round(value, 1) for name, value in scores.items()}
        {'top1': 95.8, 'top5': 100.0}
    """
    if train_indices is None:
        train_indices = torch.nonzero(torch.as_tensor(train_set.labels) >= 0).flatten()
    if len(train_indices) == 0:
        raise ValueError("k-NN needs labelled training images; this training split has none")
    train_x, train_y = extract_features(encoder, train_set, transform, indices=train_indices, **feature_options)
    test_x, test_y = extract_features(encoder, test_set, transform, **feature_options)
    keep = test_y >= 0
    if not keep.any():
        raise ValueError("k-NN needs labelled test images; this split has none")
    num_classes = int(max(train_y.max(), test_y[keep].max())) + 1
    return knn_accuracy(train_x, train_y, test_x[keep], test_y[keep], num_classes=num_classes, k=k,
                        temperature=temperature)
