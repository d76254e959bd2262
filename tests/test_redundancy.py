"""Redundancy-reduction methods: Barlow Twins, VICReg, W-MSE, TiCo.

Each loss is checked against a slow float64 loop reference written from the paper's formula,
the methods get a two-step smoke test in the engine's hook order, TiCo's running covariance and
W-MSE's whitening are checked directly, and a two-process test shows the distributed losses equal
the one-process loss on the concatenated batch.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from distributed import run_distributed

from selfsup.losses.barlow_twins import BarlowTwinsLoss
from selfsup.losses.tico import TiCoLoss
from selfsup.losses.vicreg import VICRegLoss
from selfsup.losses.wmse import WMSELoss
from selfsup.nn.whitening import cholesky_whiten, cholesky_whiten_shrunk

# selfsup.methods (every method module) is imported inside the method tests only, so that the
# two worker processes of the distributed test, which import this module, start quickly.

# ---------------------------------------------------------------------------------------------
# Slow references (float64, explicit loops), written from the papers' formulas.
# ---------------------------------------------------------------------------------------------


def _col_mean(z: torch.Tensor, j: int) -> torch.Tensor:
    return sum(z[b, j] for b in range(z.shape[0])) / z.shape[0]


def ref_barlow(z0: torch.Tensor, z1: torch.Tensor, lambd: float, scale: float, eps: float = 1e-5) -> float:
    """Barlow Twins Eq. 1-2: standardise each column over the batch, C_ij = sum_b a_bi c_bj / N."""
    z0, z1 = z0.double(), z1.double()
    n, d = z0.shape

    def standardise(z: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(z)
        for j in range(d):
            m = _col_mean(z, j)
            var = sum((z[b, j] - m) ** 2 for b in range(n)) / n  # biased, as BatchNorm
            for b in range(n):
                out[b, j] = (z[b, j] - m) / math.sqrt(var + eps)
        return out

    a, c = standardise(z0), standardise(z1)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            cij = float(sum(a[b, i] * c[b, j] for b in range(n)) / n)
            loss += (1 - cij) ** 2 if i == j else lambd * cij**2
    return scale * loss


def ref_vicreg(z0: torch.Tensor, z1: torch.Tensor, lam: float, mu: float, nu: float, eps: float = 1e-4) -> float:
    """VICReg Eq. 1-6 with gamma = 1: unbiased variance, covariance / (n - 1), off-diagonal / d."""
    z0, z1 = z0.double(), z1.double()
    n, d = z0.shape
    inv = sum(float((z0[b, j] - z1[b, j]) ** 2) for b in range(n) for j in range(d)) / (n * d)

    def var_term(z: torch.Tensor) -> float:
        total = 0.0
        for j in range(d):
            m = float(_col_mean(z, j))
            var = sum((float(z[b, j]) - m) ** 2 for b in range(n)) / (n - 1)
            total += max(0.0, 1.0 - math.sqrt(var + eps))
        return total / d

    def cov_term(z: torch.Tensor) -> float:
        means = [float(_col_mean(z, j)) for j in range(d)]
        total = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov = sum((float(z[b, i]) - means[i]) * (float(z[b, j]) - means[j]) for b in range(n)) / (n - 1)
                    total += cov**2
        return total / d

    return lam * inv + mu * (var_term(z0) + var_term(z1)) / 2 + nu * (cov_term(z0) + cov_term(z1))


def ref_cholesky(a: torch.Tensor) -> torch.Tensor:
    """Cholesky-Banachiewicz: lower L with L L^T = a."""
    d = a.shape[0]
    low = torch.zeros_like(a)
    for i in range(d):
        for j in range(i + 1):
            s = sum(low[i, k] * low[j, k] for k in range(j))
            low[i, j] = torch.sqrt(a[i, i] - s) if i == j else (a[i, j] - s) / low[j, j]
    return low


def ref_whiten(x: torch.Tensor, eps: float) -> torch.Tensor:
    """W-MSE Eq. 4-5: centre, covariance / (n - 1), shrink, L^{-1} by forward substitution."""
    x = x.double()
    n, d = x.shape
    centred = x - torch.stack([_col_mean(x, j) for j in range(d)])
    cov = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d):
        for j in range(d):
            cov[i, j] = sum(centred[b, i] * centred[b, j] for b in range(n)) / (n - 1)
    low = ref_cholesky((1 - eps) * cov + eps * torch.eye(d, dtype=torch.float64))
    out = torch.zeros_like(centred)
    for b in range(n):  # solve L y = centred[b]
        for i in range(d):
            out[b, i] = (centred[b, i] - sum(low[i, k] * out[b, k] for k in range(i))) / low[i, i]
    return out


def ref_wmse(views: list[torch.Tensor], perms: list[torch.Tensor], w_size: int, eps: float) -> float:
    """W-MSE Alg. 1: per permutation, whiten each sub-batch of each view; 2 - 2 cos per pair."""
    n = views[0].shape[0]
    total, count = 0.0, 0
    for perm in perms:
        whitened = [torch.zeros(n, v.shape[1], dtype=torch.float64) for v in views]
        for start in range(0, n, w_size):
            idx = perm[start : start + w_size]
            for v, w in zip(views, whitened):
                w[idx] = ref_whiten(v[idx], eps)
        for a in range(len(views)):
            for b in range(a + 1, len(views)):
                cos = [float(whitened[a][i] @ whitened[b][i] / (whitened[a][i].norm() * whitened[b][i].norm()))
                       for i in range(n)]
                total += sum(2 - 2 * c for c in cos) / n
                count += 1
    return total / count


def ref_tico(z0: torch.Tensor, z1: torch.Tensor, c_prev: torch.Tensor, beta: float, rho: float):
    """TiCo Alg. 1: normalise rows, C = beta C + (1 - beta) z0^T z0 / N, loss with the new C."""
    z0 = torch.stack([r / r.norm() for r in z0.double()])
    z1 = torch.stack([r / r.norm() for r in z1.double()])
    n, d = z0.shape
    c = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d):
        for j in range(d):
            c[i, j] = beta * float(c_prev[i, j]) + (1 - beta) * sum(float(z0[b, i] * z0[b, j]) for b in range(n)) / n
    inv = -sum(float(z0[b] @ z1[b]) for b in range(n)) / n
    contrast = sum(float(z0[b, i] * c[i, j] * z0[b, j]) for b in range(n) for i in range(d) for j in range(d)) / n
    return inv + rho * contrast, c


def _pair(seed: int, n: int = 6, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, d, generator=g)
    return z0, z0 + 0.7 * torch.randn(n, d, generator=g)


# ---------------------------------------------------------------------------------------------
# Losses vs references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lambd,scale", [(0.0051, 1.0), (0.5, 0.1)])
def test_barlow_twins_matches_reference(lambd: float, scale: float) -> None:
    z0, z1 = _pair(1)
    got = BarlowTwinsLoss(lambd=lambd, scale_loss=scale)(z0, z1)
    assert got.item() == pytest.approx(ref_barlow(z0, z1, lambd, scale), abs=1e-5, rel=1e-5)


def test_barlow_twins_identical_whitened_views_have_zero_loss() -> None:
    # C = I exactly when both views equal the same decorrelated, standardised batch
    z = cholesky_whiten(torch.randn(64, 4, dtype=torch.float64))
    assert float(BarlowTwinsLoss(eps=0.0)(z, z)) == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("weights", [(25.0, 25.0, 1.0), (1.0, 2.0, 3.0)])
def test_vicreg_matches_reference(weights: tuple[float, float, float]) -> None:
    z0, z1 = _pair(2)
    z0 = 0.3 * z0  # std below 1 so the hinge is active in some dimensions
    got = VICRegLoss(*weights)(z0, z1)
    assert got.item() == pytest.approx(ref_vicreg(z0, z1, *weights), abs=1e-5, rel=1e-5)


def test_whitening_a_singular_batch_shrinks_it_instead_of_stopping() -> None:
    """A sub-batch spanning 3 of 4 dimensions (a partly collapsed projector) has a singular
    covariance: it is whitened with the smallest listed jitter that works, equal to the reference
    whitening of that shrunk covariance, and the jitter is returned (W-MSE counts such sub-batches;
    tests/test_wmse_collapse.py checks that persistent ones stop the run). The 4th column is
    constant, so the covariance is exactly singular (a column that is the sum of two others is not
    reliably so: rounding left a positive pivot of 3e-8 and Cholesky succeeded)."""
    from selfsup.nn.whitening import JITTER

    g = torch.Generator().manual_seed(4)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    x = torch.cat([x, torch.full((12, 1), 0.5, dtype=torch.float64)], dim=1)  # 4th column without variance: rank 3
    got = cholesky_whiten(x)
    assert torch.isfinite(got).all()
    centred = x - x.mean(0)
    cov = centred.T @ centred / 11
    eye = torch.eye(4, dtype=torch.float64)
    first = next(j for j in JITTER if torch.linalg.cholesky_ex(cov + j * cov.diagonal().mean() * eye)[1] == 0)
    lower = ref_cholesky(cov + first * cov.diagonal().mean() * eye)
    torch.testing.assert_close(got, torch.linalg.solve_triangular(lower, centred.T, upper=False).T)
    assert cholesky_whiten_shrunk(x)[1] == first > 0
    assert cholesky_whiten_shrunk(x[:, :3])[1] == 0.0  # the full-rank part needs no shrinkage


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_whitening_matches_reference_and_whitens(eps: float) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 4, generator=g, dtype=torch.float64)
    got = cholesky_whiten(x, eps)
    torch.testing.assert_close(got, ref_whiten(x, eps), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(got.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)
    cov = got.T @ got / 11
    # with S' = (1 - eps) S + eps I = L L^T and W = L^{-1}: W S W^T = (I - eps W W^T) / (1 - eps),
    # the identity for eps = 0
    centred = x - x.mean(0)
    shrunk = (1 - eps) * (centred.T @ centred / 11) + eps * torch.eye(4, dtype=torch.float64)
    w = torch.linalg.inv(ref_cholesky(shrunk))
    want = (torch.eye(4, dtype=torch.float64) - eps * w @ w.T) / (1 - eps)
    torch.testing.assert_close(cov, want, atol=1e-8, rtol=0)
    if eps == 0.0:
        torch.testing.assert_close(cov, torch.eye(4, dtype=torch.float64), atol=1e-8, rtol=0)


@pytest.mark.parametrize("num_views,w_iter", [(2, 1), (3, 2)])
def test_wmse_matches_reference(num_views: int, w_iter: int) -> None:
    g = torch.Generator().manual_seed(4)
    base = torch.randn(16, 3, generator=g)
    views = [base + 0.5 * torch.randn(16, 3, generator=g) for _ in range(num_views)]
    got = WMSELoss(w_size=8, w_iter=w_iter)(views, generator=torch.Generator().manual_seed(9))
    replay = torch.Generator().manual_seed(9)
    perms = [torch.randperm(16, generator=replay) for _ in range(w_iter)]
    assert got.item() == pytest.approx(ref_wmse(views, perms, 8, 0.0), abs=1e-5, rel=1e-5)


def test_wmse_reports_the_share_of_shrunk_sub_batches() -> None:
    """Two of four sub-batches made rank-deficient (a collapsed embedding dimension) are counted in
    shrunk_fraction for each of the two views: 4 of 8 whitenings."""
    g = torch.Generator().manual_seed(5)
    loss_fn = WMSELoss(w_size=8)
    loss_fn.permutation = lambda n, device, generator: torch.arange(n)  # sub-batches = consecutive rows
    views = [torch.randn(32, 3, generator=g, dtype=torch.float64) for _ in range(2)]
    loss_fn(views)
    assert loss_fn.shrunk_fraction == 0.0
    for v in views:
        v[:16, 2] = 1.0  # rows 0..15 (sub-batches 0 and 1): a dimension without variance
    loss_fn(views)
    assert loss_fn.shrunk_fraction == 0.5


def test_wmse_rejects_batch_not_multiple_of_w_size() -> None:
    with pytest.raises(ValueError, match="w_size"):
        WMSELoss(w_size=8)([torch.randn(12, 3), torch.randn(12, 3)])


def test_tico_matches_reference_and_updates_running_covariance() -> None:
    beta, rho = 0.9, 20.0
    loss_fn = TiCoLoss(5, beta=beta, rho=rho)
    assert torch.equal(loss_fn.covariance, torch.zeros(5, 5))  # C starts at zero
    c_prev = torch.zeros(5, 5, dtype=torch.float64)
    for seed in (5, 6):  # two steps: the second uses the first step's C
        z0, z1 = _pair(seed)
        got = loss_fn(z0, z1)
        want, c_prev = ref_tico(z0, z1, c_prev, beta, rho)
        assert got.item() == pytest.approx(want, abs=1e-5, rel=1e-5)
        torch.testing.assert_close(loss_fn.covariance.double(), c_prev, atol=1e-6, rtol=0)
    # evaluation mode computes the loss with the would-be C but leaves the buffer alone
    before = loss_fn.covariance.clone()
    loss_fn.eval()(*_pair(7))
    assert torch.equal(loss_fn.covariance, before)
    assert set(loss_fn.state_dict()) == {"covariance"}


def test_tico_gradient_flows_only_through_current_batch() -> None:
    loss_fn = TiCoLoss(5)
    loss_fn(*_pair(8))
    z0, z1 = (t.requires_grad_(True) for t in _pair(9))
    loss_fn(z0, z1).backward()
    assert z0.grad is not None and z0.grad.abs().sum() > 0
    assert not loss_fn.covariance.requires_grad


# ---------------------------------------------------------------------------------------------
# Methods: defaults and state (the smoke run is tests/test_methods.py's, over every method)
# ---------------------------------------------------------------------------------------------

NAMES = ["barlowtwins", "tico", "vicreg", "wmse"]


def small(name: str, **options: object) -> dict:
    """The test sizes of ``name``'s method card plus ``options`` (selfsup.methods is imported in the
    tests only, as the two-process test's children import this module)."""
    import selfsup.methods

    return {**selfsup.methods.card(name).small, **options}


def _batch(views: list[torch.Tensor]):
    from selfsup.methods import ViewBatch

    n = len(views[0])
    return ViewBatch(views=views, labels=torch.arange(n) % 3, indices=torch.arange(n))


def test_registered_with_paper_defaults(tiny_backbone) -> None:
    import inspect

    import selfsup.methods as methods

    assert set(NAMES) <= set(methods.names())
    defaults = {
        "barlowtwins": dict(proj_hidden_dim=8192, proj_output_dim=8192, lambd=0.0051, scale_loss=1.0),
        "vicreg": dict(proj_hidden_dim=8192, proj_output_dim=8192, sim_weight=25.0, var_weight=25.0, cov_weight=1.0),
        "wmse": dict(proj_hidden_dim=1024, proj_output_dim=64, w_size=128, w_iter=1, w_eps=0.0),
        "tico": dict(proj_hidden_dim=4096, proj_output_dim=256, beta=0.9, rho=20.0, momentum_encoder=True,
                     base_momentum=0.99, final_momentum=1.0),
    }
    for name, want in defaults.items():
        params = inspect.signature(type(methods.get(name, backbone=tiny_backbone, **small(name))).__init__).parameters
        assert {k: params[k].default for k in want} == want, name
    bt = methods.get("barlowtwins", backbone=tiny_backbone, **small("barlowtwins", proj_output_dim=16))
    linears = [m for m in bt.projector if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [32, 32, 16]  # three layers, as the paper's 8192 x 3
    assert all(m.bias is None for m in linears)  # the official projector has no biases
    vic = methods.get("vicreg", backbone=tiny_backbone, **small("vicreg"))
    assert len([m for m in vic.projector if isinstance(m, torch.nn.Linear)]) == 3


def test_tico_method_covariance_state(tiny_backbone, two_views) -> None:
    import selfsup.methods as methods

    method = methods.get("tico", backbone=tiny_backbone, beta=0.5, **small("tico"))
    c = torch.zeros(16, 16)
    for _ in range(2):
        with torch.no_grad():  # train-mode BatchNorm: the online projections of view 0 the step computes
            z0 = F.normalize(method.projector(method.backbone(two_views[0])), dim=1)
        method.training_step(_batch(two_views))
        c = 0.5 * c + 0.5 * z0.T @ z0 / 8
        torch.testing.assert_close(method.criterion.covariance, c, atol=1e-6, rtol=0)
    state = method.state_dict()
    assert "criterion.covariance" in state
    assert any(k.startswith("target.backbone.") for k in state)  # the momentum encoder is saved too


def test_wmse_method_uses_all_views(tiny_backbone, two_views) -> None:
    import selfsup.methods as methods

    method = methods.get("wmse", backbone=tiny_backbone, **small("wmse", proj_output_dim=4, w_size=8))  # 8 images
    views = two_views + [two_views[0].flip(-1)]
    torch.manual_seed(0)
    out = method.training_step(_batch(views))
    with torch.no_grad():
        z = method.projector(method.backbone(torch.cat(views))).split(8)
    torch.manual_seed(0)
    perm = torch.randperm(8)
    want = ref_wmse([t.double() for t in z], [perm], 8, 0.0)
    assert out.loss.item() == pytest.approx(want, abs=1e-4, rel=1e-4)
    assert out.logs["whiten_shrunk"] == method.criterion.shrunk_fraction


# ---------------------------------------------------------------------------------------------
# Two processes vs one.
#
# Barlow Twins, W-MSE and TiCo: each rank gathers the global batch (with gradient) and computes
# the full loss L, so every per-rank loss equals L. VICReg: rank r's loss is its local MSE plus
# the global variance/covariance terms, so the MEAN of the per-rank losses equals L (equal
# per-rank batches). In both cases gather's backward sums over ranks the gradients all ranks'
# losses send to rank r's rows, giving rank r's inputs W * dL/dz_r (W = 2 ranks); DDP averages
# parameter gradients over ranks, (1/W) sum_r W dL/dz_r dz_r/dtheta = dL/dtheta. So we check:
# the mean per-rank loss equals the one-process loss, and input gradients / W equal the
# one-process input gradients of the same rows.
# ---------------------------------------------------------------------------------------------

_N = 4  # rows per rank


def _dist_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(21)
    z0 = torch.randn(2 * _N, 3, generator=g, dtype=torch.float64)
    return z0, z0 + 0.5 * torch.randn(2 * _N, 3, generator=g, dtype=torch.float64)


def _losses() -> dict[str, torch.nn.Module]:
    return {
        "barlow": BarlowTwinsLoss(lambd=0.3), "vicreg": VICRegLoss(),
        "wmse": WMSELoss(w_size=_N), "tico": TiCoLoss(3, beta=0.5),
    }


def _call(name: str, fn: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if name == "wmse":
        return fn([a, b], generator=torch.Generator().manual_seed(5))
    return fn(a, b)


def _dist_worker(rank: int, world: int) -> dict:
    z0, z1 = _dist_data()
    rows = slice(rank * _N, (rank + 1) * _N)
    out = {}
    for name, fn in _losses().items():
        a = z0[rows].clone().requires_grad_(True)
        b = z1[rows].clone().requires_grad_(True)
        loss = _call(name, fn, a, b)
        loss.backward()
        out[name] = {"loss": loss.detach(), "a": a.grad, "b": b.grad}
        if name == "tico":
            out[name]["cov"] = fn.covariance.clone()
    return out


def test_two_processes_equal_one_process_on_concatenated_batch(tmp_path: Path) -> None:
    res = run_distributed(_dist_worker, tmp_path, world=2)
    z0, z1 = _dist_data()
    for name, fn in _losses().items():
        a, b = z0.clone().requires_grad_(True), z1.clone().requires_grad_(True)
        loss = _call(name, fn, a, b)
        loss.backward()
        torch.testing.assert_close(sum(r[name]["loss"] for r in res) / 2, loss.detach(), msg=name)
        for r in range(2):
            rows = slice(r * _N, (r + 1) * _N)
            torch.testing.assert_close(res[r][name]["a"] / 2, a.grad[rows], msg=name)
            torch.testing.assert_close(res[r][name]["b"] / 2, b.grad[rows], msg=name)
        if name == "tico":  # every rank keeps the same, global running covariance
            for r in range(2):
                torch.testing.assert_close(res[r][name]["cov"], fn.covariance)
