"""DINOv3's Gram anchoring as an option of iBOT and DINOv2: the loss against a slow float64 reference,
its snapshot schedule, and the Gram teacher taken from the EMA teacher and then held fixed.
"""
from __future__ import annotations

import math

import pytest
import torch

from selfsup.losses import GramAnchoringLoss


def ref_gram(student: torch.Tensor, teacher: torch.Tensor, remove_negative: bool) -> float:
    """``mean_b mean_ij (cos(s_bi, s_bj) - cos(t_bi, t_bj))^2`` with loops."""
    b, n, _ = student.shape
    total = 0.0
    for k in range(b):
        for i in range(n):
            for j in range(n):
                cs = float(student[k, i].double() @ student[k, j].double()
                           / (student[k, i].double().norm() * student[k, j].double().norm()))
                ct = float(teacher[k, i].double() @ teacher[k, j].double()
                           / (teacher[k, i].double().norm() * teacher[k, j].double().norm()))
                if remove_negative:
                    cs, ct = max(cs, 0.0), max(ct, 0.0)
                total += (cs - ct) ** 2
    return total / (b * n * n)


@pytest.mark.parametrize("remove_negative", [False, True])
def test_gram_loss_matches_reference(remove_negative: bool) -> None:
    g = torch.Generator().manual_seed(int(remove_negative))
    student, teacher = torch.randn(2, 5, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    got = GramAnchoringLoss(remove_negative)(student, teacher)
    assert float(got) == pytest.approx(ref_gram(student, teacher, remove_negative), rel=1e-5)


def test_gram_loss_ignores_feature_norms_and_a_common_rotation() -> None:
    g = torch.Generator().manual_seed(2)
    teacher = torch.randn(3, 6, 4, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    student = (teacher @ rotation) * torch.rand(3, 6, 1, generator=g).add(0.5)  # same similarities
    assert float(GramAnchoringLoss()(student, teacher)) == pytest.approx(0.0, abs=1e-10)
    assert float(GramAnchoringLoss()(torch.randn(3, 6, 4, generator=g), teacher)) > 0.05
    with pytest.raises(ValueError, match="same B and N"):
        GramAnchoringLoss()(torch.randn(3, 5, 4), teacher)


def _ibot(name: str, **options):
    from method_sizes import small, tiny_backbone

    from selfsup import methods

    torch.manual_seed(0)
    return methods.get(name, backbone=tiny_backbone(name), **small(name, **options))


def test_snapshot_schedule_follows_the_official_pattern() -> None:
    method = _ibot("ibot", gram_weight=2.0, gram_start=0.5, gram_every=10, gram_max_updates=3)
    refreshes = [s for s in range(100) if method.refreshes_gram_teacher(s, total_steps=100)]
    assert refreshes == [50, 60, 70]
    unlimited = _ibot("ibot", gram_weight=2.0, gram_start=0.5, gram_every=20, gram_max_updates=None)
    assert [s for s in range(100) if unlimited.refreshes_gram_teacher(s, total_steps=100)] == [50, 70, 90]
    assert _ibot("ibot").gram_teacher is None  # off by default: no extra copy, no extra forward


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_gram_teacher_is_the_ema_teacher_at_each_snapshot_and_fixed_between(name: str) -> None:
    from method_sizes import small_views

    from selfsup.methods import ViewBatch

    method = _ibot(name, gram_weight=2.0, gram_start=0.5, gram_every=2, gram_max_updates=2)
    method.configure_training(epochs=1, steps_per_epoch=8)  # anchoring from step 4; snapshots for 4 and 6
    views = small_views(name)
    optimizer = torch.optim.SGD([p for grp in method.parameter_groups(0.0) for p in grp["params"]], lr=0.1)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    taken = {}
    for step in range(8):
        method.begin_step(step)
        out = method.training_step(ViewBatch(views=views(images), labels=None, indices=torch.arange(8)))
        assert ("loss_gram" in out.logs) == (step >= 4), step
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.end_step()
        gram = {k: v.clone() for k, v in method.gram_teacher.state_dict().items()}
        ema = method.teacher["backbone"].state_dict()
        if method.refreshes_gram_teacher(step + 1, 8):
            assert all(torch.equal(gram[k], ema[k]) for k in gram), step
        taken[step] = gram
    same = lambda a, b: all(torch.equal(taken[a][k], taken[b][k]) for k in taken[a])  # noqa: E731
    assert same(3, 4) and not same(4, 5) and same(5, 6) and same(6, 7)  # refreshed after steps 3 and 5 only
    assert not same(2, 3)  # ...the second snapshot differs from the first
    assert math.isfinite(float(out.logs["loss_gram"]))
    assert all(not p.requires_grad for p in method.gram_teacher.parameters())
