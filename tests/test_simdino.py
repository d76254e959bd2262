"""SimDINO: the coding rate and the loss against slow float64 references of the paper's formulas
(eigenvalues, explicit loops over view pairs and images), and the expansion term's answer to collapse.
"""
from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import SimDINOLoss, coding_rate


def ref_coding_rate(w: torch.Tensor, eps: float) -> float:
    """``1/2 sum_i log(1 + p / (m eps) lambda_i)`` over the eigenvalues of ``W^T W``."""
    m, p = w.shape
    eig = torch.linalg.eigvalsh(w.double().T @ w.double())
    return 0.5 * sum(math.log(1 + p / (m * eps) * float(e)) for e in eig)


def ref_simdino(student: torch.Tensor, teacher: torch.Tensor, eps: float, coeff: float) -> float:
    s_views, b, p = student.shape
    t_views = teacher.shape[0]
    total, pairs = 0.0, 0
    for i in range(t_views):
        for v in range(s_views):
            if v == i:
                continue
            pairs += 1
            for k in range(b):
                t, s = teacher[i, k].double(), student[v, k].double()
                total += float(t @ s / (t.norm() * s.norm())) / b
    compression = total / pairs
    expansion = sum(ref_coding_rate((student[i] + teacher[i]) / 2, eps) * (p + b) / (p * b)
                    for i in range(t_views)) / t_views
    return -coeff * compression - expansion


@pytest.mark.parametrize("eps", [0.5, 0.1])
def test_coding_rate_matches_reference(eps: float) -> None:
    w = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))
    assert float(coding_rate(w.double(), eps)) == pytest.approx(ref_coding_rate(w, eps), rel=1e-9)


@pytest.mark.parametrize("coeff", [1.0, 3.0])
def test_simdino_loss_matches_reference(coeff: float) -> None:
    g = torch.Generator().manual_seed(int(coeff))
    student, teacher = torch.randn(4, 6, 5, generator=g), torch.randn(2, 6, 5, generator=g)
    loss, compression, expansion = SimDINOLoss(eps=0.5, coeff=coeff)(student, teacher)
    assert float(loss) == pytest.approx(ref_simdino(student, teacher, 0.5, coeff), rel=1e-5)
    assert float(loss) == pytest.approx(-coeff * float(compression) - float(expansion), rel=1e-6)


def test_collapsed_features_lose_the_expansion_reward() -> None:
    g = torch.Generator().manual_seed(0)
    spread = torch.nn.functional.normalize(torch.randn(2, 64, 16, generator=g), dim=-1)
    collapsed = torch.nn.functional.normalize(torch.ones(2, 64, 16), dim=-1)
    _, c_spread, e_spread = SimDINOLoss()(spread, spread)
    _, c_collapsed, e_collapsed = SimDINOLoss()(collapsed, collapsed)
    assert float(c_collapsed) == pytest.approx(1.0) and float(c_collapsed) > float(c_spread)
    assert float(e_spread) > 3 * float(e_collapsed)  # the coding rate is what keeps the features apart
    with pytest.raises(ValueError, match="T <= S"):
        SimDINOLoss()(spread[:1], spread)


def test_batchnorm_in_the_head_is_an_option_and_the_teacher_copies_it() -> None:
    import selfsup
    from selfsup.methods.simdino import SimDINO

    def norms(module: torch.nn.Module) -> int:
        return sum(isinstance(m, torch.nn.BatchNorm1d) for m in module.modules())

    backbone = selfsup.backbones.get("resnet_tiny", width=4)
    plain = SimDINO(backbone, hidden_dim=16, bottleneck_dim=8)
    normed = SimDINO(selfsup.backbones.get("resnet_tiny", width=4), hidden_dim=16, bottleneck_dim=8, use_bn_in_head=True)
    assert norms(plain.head) == 0 and norms(normed.head) == 2  # after each of the two hidden layers
    assert norms(normed.teacher) == norms(normed.backbone) + 2
