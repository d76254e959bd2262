"""Top-k accuracy of class scores, with ties counted against the true class."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def topk_accuracy(scores: Tensor, labels: Tensor, topk: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-``t`` accuracies (percent) of ``(n, num_classes)`` scores against integer ``labels``.

    A sample is a top-``t`` hit when fewer than ``t`` other classes score at least as high as its
    true class: ties are broken against the true class, so a constant classifier (all scores equal)
    scores 0, never chance by luck. ``t`` is clipped to the number of classes (top-5 with 3 classes
    is top-3); the key stays ``f"top{t}"``.

    Example:
        >>> topk_accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]), topk=(1,))
        {'top1': 50.0}
    """
    if scores.dim() != 2 or labels.dim() != 1 or scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"topk_accuracy needs (n, classes) scores and (n,) labels, got {tuple(scores.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if scores.shape[0] == 0:
        raise ValueError("topk_accuracy needs at least one sample")
    if any(int(t) <= 0 for t in topk):
        raise ValueError(f"topk entries must be positive, got {tuple(topk)}")
    num_classes = scores.shape[1]
    labels = labels.to(device=scores.device, dtype=torch.long)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for {num_classes} class scores, got values "
            f"{int(labels.min())}..{int(labels.max())}"
        )
    true_score = scores.gather(1, labels[:, None])
    rivals = (scores >= true_score).sum(dim=1) - 1  # classes scoring >= the true class, itself excluded
    return {f"top{t}": 100.0 * float((rivals < min(int(t), num_classes)).double().mean()) for t in topk}
