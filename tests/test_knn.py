"""Weighted k-NN evaluation vs a slow reference built from InstDisc's voting rule."""
from __future__ import annotations

import math

import pytest
import torch

from selfsup.eval import knn_accuracy, knn_predict


def ref_knn_scores(
    train: torch.Tensor,
    labels: torch.Tensor,
    test: torch.Tensor,
    num_classes: int,
    k: int,
    t: float,
) -> torch.Tensor:
    """Each of the k most cosine-similar train samples votes exp(sim / t) for its label."""
    train = train.double() / train.double().norm(dim=1, keepdim=True)
    test = test.double() / test.double().norm(dim=1, keepdim=True)
    out = torch.zeros(test.shape[0], num_classes, dtype=torch.float64)
    for i in range(test.shape[0]):
        sims = [float((test[i] * train[j]).sum()) for j in range(train.shape[0])]
        nearest = sorted(range(train.shape[0]), key=lambda j: -sims[j])[: min(k, train.shape[0])]
        for j in nearest:
            out[i, int(labels[j])] += math.exp(sims[j] / t)
    return out


def ref_topk(scores: torch.Tensor, labels: torch.Tensor, t: int) -> float:
    """Percent of rows whose true class is among the t best (ties counted against it)."""
    hits = 0
    for i in range(scores.shape[0]):
        y = int(labels[i])
        better_or_equal = sum(
            1 for c in range(scores.shape[1]) if c != y and scores[i, c] >= scores[i, y]
        )
        hits += better_or_equal < min(t, scores.shape[1])
    return 100.0 * hits / scores.shape[0]


def _data(seed: int, n_train: int = 60, n_test: int = 25, dim: int = 6, classes: int = 7):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_train, dim, generator=g),
        torch.randint(0, classes, (n_train,), generator=g),
        torch.randn(n_test, dim, generator=g),
        torch.randint(0, classes, (n_test,), generator=g),
    )


@pytest.mark.parametrize(("k", "t", "chunk"), [(1, 0.1, 1024), (10, 0.1, 4), (20, 0.5, 7)])
def test_knn_predict_matches_reference(k: int, t: float, chunk: int) -> None:
    xtr, ytr, xte, _ = _data(k)
    got = knn_predict(xtr, ytr, xte, num_classes=7, k=k, temperature=t, chunk_size=chunk)
    want = ref_knn_scores(xtr, ytr, xte, 7, k, t)
    assert got.shape == (25, 7) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [5, 30])
def test_knn_accuracy_matches_reference(k: int) -> None:
    xtr, ytr, xte, yte = _data(100 + k)
    acc = knn_accuracy(xtr, ytr, xte, yte, num_classes=7, k=k, temperature=0.2)
    scores = ref_knn_scores(xtr, ytr, xte, 7, k, 0.2)
    assert set(acc) == {"top1", "top5"}
    assert acc["top1"] == pytest.approx(ref_topk(scores, yte, 1))
    assert acc["top5"] == pytest.approx(ref_topk(scores, yte, 5))
    assert 0.0 <= acc["top1"] <= acc["top5"] <= 100.0


def test_knn_well_separated_clusters_are_perfect() -> None:
    g = torch.Generator().manual_seed(0)
    centers = 10.0 * torch.eye(4, 16)  # four orthogonal directions
    ytr = torch.arange(4).repeat_interleave(20)
    yte = torch.arange(4).repeat_interleave(5)
    xtr = centers[ytr] + 0.3 * torch.randn(80, 16, generator=g)
    xte = centers[yte] + 0.3 * torch.randn(20, 16, generator=g)
    acc = knn_accuracy(xtr, ytr, xte, yte, num_classes=4, k=10, topk=(1, 2))
    assert acc == {"top1": 100.0, "top2": 100.0}


def test_knn_k_larger_than_train_set() -> None:
    xtr, ytr, xte, yte = _data(5, n_train=8)
    got = knn_predict(xtr, ytr, xte, num_classes=7, k=200)
    want = ref_knn_scores(xtr, ytr, xte, 7, 8, 0.1)  # k clipped to the 8 train samples
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    acc = knn_accuracy(xtr, ytr, xte, yte, num_classes=7, k=200)
    assert acc["top1"] == pytest.approx(ref_topk(want, yte, 1))


def test_knn_top5_with_fewer_than_five_classes() -> None:
    xtr, ytr, xte, yte = _data(9, classes=3)
    acc = knn_accuracy(xtr, ytr, xte, yte, num_classes=3, k=5)
    assert acc["top5"] == 100.0
    assert acc["top1"] <= 100.0


def test_knn_class_without_votes_is_not_a_lucky_hit() -> None:
    # Both train samples are class 0; a class-2 query gets no vote, so even though
    # top-2 has room for a second (zero-score) class it is not counted as a hit.
    xtr = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    ytr = torch.tensor([0, 0])
    query, label = torch.tensor([[1.0, 0.0]]), torch.tensor([2])
    acc = knn_accuracy(xtr, ytr, query, label, num_classes=3, k=2, topk=(1, 2, 3))
    assert acc == {"top1": 0.0, "top2": 0.0, "top3": 100.0}


def test_knn_low_temperature_does_not_overflow() -> None:
    xtr, ytr, xte, _ = _data(2)
    got = knn_predict(xtr, ytr, xte, num_classes=7, k=5, temperature=0.005)
    assert got.dtype == torch.float64 and torch.isfinite(got).all()


def test_knn_rejects_negative_train_labels() -> None:
    xtr, ytr, xte, yte = _data(3)
    ytr[4] = -1
    with pytest.raises(ValueError, match="negative"):
        knn_predict(xtr, ytr, xte, num_classes=7)
    with pytest.raises(ValueError, match="negative"):
        knn_accuracy(xtr, ytr, xte, yte, num_classes=7)


def test_knn_rejects_bad_inputs() -> None:
    xtr, ytr, xte, yte = _data(4)
    with pytest.raises(ValueError, match="num_classes"):
        knn_predict(xtr, ytr, xte, num_classes=5)  # labels go up to 6
    with pytest.raises(ValueError, match="width"):
        knn_predict(xtr, ytr, xte[:, :3], num_classes=7)
    with pytest.raises(ValueError, match="labels"):
        knn_predict(xtr, ytr[:-1], xte, num_classes=7)
    with pytest.raises(ValueError, match="k"):
        knn_predict(xtr, ytr, xte, num_classes=7, k=0)
    with pytest.raises(ValueError, match="test_labels"):
        knn_accuracy(xtr, ytr, xte, yte[:-1], num_classes=7)
    with pytest.raises(ValueError, match="topk"):
        knn_accuracy(xtr, ytr, xte, yte, num_classes=7, topk=(0,))
