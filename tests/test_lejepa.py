"""LeJEPA: SIGReg against a slow float64 reference of the Epps-Pulley statistic integrated over the
whole symmetric frequency range, the invariance term and the weighting, the method's seeded
directions, and (when lightly is installed) the loss against lightly's on the same inputs.
"""
from __future__ import annotations

import cmath
import math

import pytest
import torch

from selfsup.losses import LeJEPALoss, SIGReg


def ref_epps_pulley(x: list[float], t_max: float, knots: int) -> float:
    """``n * integral_{-t_max}^{t_max} |phi_n(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt`` by the trapezoidal
    rule on the full symmetric grid of ``2 * knots - 1`` points (no use of the integrand's symmetry)."""
    n = len(x)
    grid = [-t_max + j * t_max / (knots - 1) for j in range(2 * knots - 1)]
    step = grid[1] - grid[0]
    total = 0.0
    for j, t in enumerate(grid):
        ecf = sum(cmath.exp(1j * t * xi) for xi in x) / n
        integrand = abs(ecf - math.exp(-t * t / 2)) ** 2 * math.exp(-t * t / 2)
        total += integrand * (step / 2 if j in (0, len(grid) - 1) else step)
    return n * total


def ref_sigreg(z: torch.Tensor, directions: torch.Tensor, t_max: float, knots: int) -> float:
    """Mean over views and directions of the statistic of ``z @ a`` (``z``: ``(views, n, d)``)."""
    z, directions = z.double(), directions.double()
    stats = [ref_epps_pulley([float(z[v, i] @ directions[:, m]) for i in range(z.shape[1])], t_max, knots)
             for v in range(z.shape[0]) for m in range(directions.shape[1])]
    return sum(stats) / len(stats)


@pytest.mark.parametrize("knots,t_max", [(17, 3.0), (9, 2.0)])
def test_sigreg_matches_the_full_range_reference(knots: int, t_max: float) -> None:
    g = torch.Generator().manual_seed(knots)
    z = torch.randn(2, 10, 5, generator=g) * 1.3 + 0.2
    sigreg = SIGReg(num_slices=3, knots=knots, t_max=t_max)
    directions = sigreg.directions(5, torch.Generator().manual_seed(1))
    assert torch.allclose(directions.norm(dim=0), torch.ones(3))
    got = sigreg.statistic(z, directions).mean()
    assert float(got) == pytest.approx(ref_sigreg(z, directions, t_max, knots), rel=1e-5)


def test_sigreg_is_small_for_standard_gaussian_embeddings_and_large_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    sigreg = SIGReg()
    gaussian = float(sigreg(torch.randn(2048, 16, generator=g), torch.Generator().manual_seed(1)))
    scaled = float(sigreg(3 * torch.randn(2048, 16, generator=g), torch.Generator().manual_seed(1)))
    collapsed = float(sigreg(torch.zeros(2048, 16), torch.Generator().manual_seed(1)))
    assert gaussian < 2.0 < 50 * gaussian < min(scaled, collapsed)


def test_lejepa_loss_weights_sigreg_and_invariance_to_the_global_centre() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 6, 4, generator=g)
    loss_fn = LeJEPALoss(lambda_=0.3, num_global_views=2, num_slices=4)
    sigreg, invariance = loss_fn.terms(z, torch.Generator().manual_seed(7))
    centre = [[float(z[0, i, j] + z[1, i, j]) / 2 for j in range(4)] for i in range(6)]
    expected = sum((centre[i][j] - float(z[v, i, j])) ** 2 for v in range(5) for i in range(6) for j in range(4))
    assert float(invariance) == pytest.approx(expected / (5 * 6 * 4), rel=1e-6)
    assert float(sigreg) == pytest.approx(float(loss_fn.sigreg(z, torch.Generator().manual_seed(7))), rel=1e-6)
    assert float(loss_fn(z, torch.Generator().manual_seed(7))) == pytest.approx(
        0.3 * float(sigreg) + 0.7 * float(invariance), rel=1e-6)
    # with every view global, identical views have zero invariance
    same = z[:1].expand(3, -1, -1)
    assert float(LeJEPALoss().invariance(same)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="3 global views"):
        LeJEPALoss(num_global_views=3).invariance(z[:2])
    with pytest.raises(ValueError, match="lambda_"):
        LeJEPALoss(lambda_=1.5)


def test_lejepa_draws_the_same_directions_at_the_same_step_and_new_ones_at_the_next() -> None:
    from method_sizes import small, tiny_backbone

    from selfsup import methods
    from selfsup.methods import ViewBatch

    torch.manual_seed(0)
    method = methods.get("lejepa", backbone=tiny_backbone("lejepa"), **small("lejepa")).eval()
    g = torch.Generator().manual_seed(0)
    batch = ViewBatch(views=[torch.randn(8, 3, 16, 16, generator=g) for _ in range(3)], labels=None,
                      indices=torch.arange(8))
    with torch.no_grad():
        method.begin_step(5)
        first = method.training_step(batch)
        again = method.training_step(batch)
        method.begin_step(6)
        later = method.training_step(batch)
    assert float(first.loss) == float(again.loss)
    assert float(first.logs["sigreg"]) != float(later.logs["sigreg"])
    assert float(first.logs["invariance"]) == float(later.logs["invariance"])  # only the directions changed


def test_lejepa_loss_equals_lightlys_on_the_same_directions() -> None:
    """lightly's ``LeJEPALoss`` draws its directions from the global generator, with the shape
    ``(d, num_vectors)`` used here; seeding it equally gives both the same directions."""
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is not installed (bash benchmarks/parity/setup.sh)")
    g = torch.Generator().manual_seed(3)
    global_proj, local_proj = torch.randn(2, 12, 8, generator=g), torch.randn(3, 12, 8, generator=g)
    theirs_fn = lightly_loss.LeJEPALoss(lambda_param=0.05, sigreg_num_vectors=32)
    torch.manual_seed(11)
    theirs = theirs_fn(local_proj=local_proj, global_proj=global_proj)
    torch.manual_seed(11)
    ours = LeJEPALoss(lambda_=0.05, num_global_views=2, num_slices=32)(torch.cat([global_proj, local_proj]))
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
