"""MMCR and FastSiam: losses against slow float64 references of the papers' formulas, MMCR's
momentum variant, and (when lightly is installed) MMCR's loss against lightly's on the same
inputs; and that MMCR, FastSiam and LeJEPA (the methods of k identically drawn views) use every view.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import FastSiamLoss, MMCRLoss, NegativeCosineSimilarity

# ---------------------------------------------------------------------------------------------
# Slow references (float64, explicit loops), written from the papers' formulas.
# ---------------------------------------------------------------------------------------------


def nuclear_norm(m: torch.Tensor) -> float:
    """Sum of singular values as the square roots of the eigenvalues of ``m^T m`` (float64)."""
    m = m.double()
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return sum(math.sqrt(max(float(e), 0.0)) for e in torch.linalg.eigvalsh(gram))


def ref_mmcr(views: list[torch.Tensor], lmbda: float, targets: list[torch.Tensor] | None = None) -> float:
    """Yerxa et al. 2023, Eq. 2: unit-norm embeddings, per-image centroids, ``-||C||_* + lmbda/B sum_b ||Z_b||_*``."""
    k, (b, d) = len(views), views[0].shape
    unit = [[views[v][i].double() / views[v][i].double().norm() for i in range(b)] for v in range(k)]
    centroids = torch.zeros(b, d, dtype=torch.float64)
    for i in range(b):
        centroids[i] = sum(unit[v][i] for v in range(k)) / k
        if targets is not None:
            t = [targets[v][i].double() / targets[v][i].double().norm() for v in range(k)]
            centroids[i] = 0.5 * (centroids[i] + sum(t) / k)
    loss = -nuclear_norm(centroids)
    if lmbda:
        loss += lmbda / b * sum(nuclear_norm(torch.stack([unit[v][i] for v in range(k)], dim=1)) for i in range(b))
    return loss


def ref_fastsiam(p: list[torch.Tensor], z: list[torch.Tensor]) -> float:
    """FastSiam: ``1/k sum_i -mean_b cos(p_i[b], mean_{j != i} z_j[b])``."""
    k, b = len(p), p[0].shape[0]
    total = 0.0
    for i in range(k):
        for n in range(b):
            target = sum(z[j][n].double() for j in range(k) if j != i) / (k - 1)
            pi = p[i][n].double()
            total -= float(pi @ target / (pi.norm() * target.norm())) / b
    return total / k


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,lmbda,momentum", [(2, 0.0, False), (4, 0.0, True), (3, 5e-3, False), (3, 0.1, True)])
def test_mmcr_loss_matches_reference(k: int, lmbda: float, momentum: bool) -> None:
    g = torch.Generator().manual_seed(k)
    views = [torch.randn(12, 6, generator=g) for _ in range(k)]
    targets = [torch.randn(12, 6, generator=g) for _ in range(k)] if momentum else None
    got = MMCRLoss(lmbda=lmbda)(views, targets)
    assert float(got) == pytest.approx(ref_mmcr(views, lmbda, targets), rel=1e-5, abs=1e-5)


def test_mmcr_loss_is_lowest_for_invariant_and_orthogonal_centroids() -> None:
    """Identical views of B orthogonal directions give ||C||_* = B, the most B unit centroids can have;
    views that disagree shorten the centroids and raise the loss."""
    basis = torch.eye(8)[:5] * 3.0  # 5 orthogonal directions, any length (the loss normalises)
    assert float(MMCRLoss()([basis, basis, basis])) == pytest.approx(-5.0, abs=1e-5)
    noisy = [basis + 0.5 * torch.randn(5, 8, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    assert float(MMCRLoss()(noisy)) > -5.0 + 1e-3
    collapsed = torch.ones(5, 8)
    assert float(MMCRLoss()([collapsed, collapsed])) == pytest.approx(-math.sqrt(5.0), abs=1e-5)


def test_mmcr_loss_sends_no_gradient_to_targets_beyond_their_values_and_rejects_bad_shapes() -> None:
    views = torch.randn(3, 6, 4, requires_grad=True)
    MMCRLoss()(views).backward()
    assert views.grad is not None and views.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="views"):
        MMCRLoss()(torch.randn(6, 4))
    with pytest.raises(ValueError, match="targets"):
        MMCRLoss()(torch.randn(2, 6, 4), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="lmbda"):
        MMCRLoss(lmbda=-1.0)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_fastsiam_loss_matches_reference(k: int) -> None:
    g = torch.Generator().manual_seed(10 + k)
    p = [torch.randn(7, 5, generator=g) for _ in range(k)]
    z = [torch.randn(7, 5, generator=g) for _ in range(k)]
    assert float(FastSiamLoss()(p, z)) == pytest.approx(ref_fastsiam(p, z), rel=1e-5, abs=1e-6)


def test_fastsiam_with_two_views_is_simsiams_symmetric_loss_and_stops_the_targets_gradient() -> None:
    g = torch.Generator().manual_seed(3)
    p = [torch.randn(7, 5, generator=g) for _ in range(2)]
    z = [torch.randn(7, 5, generator=g, requires_grad=True) for _ in range(2)]
    simsiam = 0.5 * (NegativeCosineSimilarity()(p[0], z[1]) + NegativeCosineSimilarity()(p[1], z[0]))
    loss = FastSiamLoss()(p, z)
    assert float(loss.detach()) == pytest.approx(float(simsiam), abs=1e-6)
    p_leaf = [x.clone().requires_grad_(True) for x in p]
    FastSiamLoss()(p_leaf, z).backward()
    assert all(x.grad is not None for x in p_leaf) and all(x.grad is None for x in z)
    with pytest.raises(ValueError, match="k >= 2"):
        FastSiamLoss()(p[:1], z[:1])


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------


def _method(name: str, **options):
    from method_sizes import small, tiny_backbone

    from selfsup import methods

    torch.manual_seed(0)
    return methods.get(name, backbone=tiny_backbone(name), **small(name, **options))


def _batch(k: int, seed: int = 0):
    from selfsup.methods import ViewBatch

    g = torch.Generator().manual_seed(seed)
    return ViewBatch(views=[torch.randn(8, 3, 16, 16, generator=g) for _ in range(k)],
                     labels=torch.zeros(8, dtype=torch.long), indices=torch.arange(8))


@pytest.mark.parametrize("name", ["mmcr", "fastsiam", "lejepa"])
def test_every_view_reaches_the_loss(name: str) -> None:
    """Replacing only the last of four views changes the loss: no view is dropped."""
    method = _method(name).eval()  # BatchNorm with running statistics: views do not interact through it
    batch = _batch(4)
    with torch.no_grad():
        before = float(method.training_step(batch).loss)
        batch.views[3] = 3.0 * torch.randn(batch.views[3].shape, generator=torch.Generator().manual_seed(9))
        after = float(method.training_step(batch).loss)
    assert abs(after - before) > 1e-4


def test_mmcr_step_equals_its_loss_on_the_projections() -> None:
    method = _method("mmcr").eval()
    batch = _batch(3)
    with torch.no_grad():
        out = method.training_step(batch)
        z = [method.projector(method.backbone(v)) for v in batch.views]
    assert float(out.loss) == pytest.approx(float(MMCRLoss()(z)), abs=1e-5)
    assert float(out.logs["centroid_nuclear_norm"]) == pytest.approx(-float(out.loss))
    assert out.features.shape[0] == 8


def test_mmcr_momentum_encoder_follows_the_online_network_at_a_constant_rate() -> None:
    method = _method("mmcr", momentum_encoder=True)
    method.configure_training(epochs=1, steps_per_epoch=10)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    for step in range(2):
        method.begin_step(step)
        out = method.training_step(_batch(3, seed=step))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.end_step()
    online = dict(method.projector.named_parameters())
    target = dict(method.target["projector"].named_parameters())
    moved = [name for name in online if not torch.equal(online[name], target[name])]
    assert moved, "the momentum projector should lag the online one"
    assert all(not p.requires_grad for p in target.values())
    assert method.target.momentum == pytest.approx(0.99)  # constant, as the official tau


def test_views_the_cards_name() -> None:
    from selfsup import augment, methods

    assert augment.get(methods.card("fastsiam").views, size=16).num_views == 4
    assert augment.get(methods.card("mmcr").views, size=16, num_views=8).num_views == 8
    with pytest.raises(ValueError, match="num_views >= 2"):
        augment.get("mmcr", size=16, num_views=1)


# ---------------------------------------------------------------------------------------------
# Optional comparison with lightly (installed by benchmarks/parity/setup.sh)
# ---------------------------------------------------------------------------------------------


def test_mmcr_loss_equals_lightlys_without_the_local_term() -> None:
    """lightly's ``MMCRLoss`` expects normalised ``(B, k, d)`` online and momentum outputs and puts the
    momentum views into its local term too; with ``lmda = 0`` (the official recipes' value) both are
    minus the nuclear norm of the same centroids."""
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is not installed (bash benchmarks/parity/setup.sh)")
    g = torch.Generator().manual_seed(5)
    online, momentum = torch.randn(10, 4, 6, generator=g), torch.randn(10, 4, 6, generator=g)
    theirs = lightly_loss.MMCRLoss(lmda=0.0)(F.normalize(online, dim=-1), F.normalize(momentum, dim=-1))
    ours = MMCRLoss()(online.transpose(0, 1), momentum.transpose(0, 1))
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
