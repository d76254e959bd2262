"""VICRegL: the view geometry its location matching reads, and its loss against a slow reference.

The reference below is written from the paper's and the official code's description (loops over
samples and cells, float64); the optional comparison with lightly 1.6 runs where lightly is
installed (``bash benchmarks/parity/setup.sh``).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from method_sizes import MEAN, STD, small, tiny_backbone
from selfsup import augment, methods
from selfsup.augment.geometry import cell_centres, view_geometry
from selfsup.augment.ops import HorizontalFlip, RandomResizedCrop, Rotate90, Solarize, VerticalFlip
from selfsup.augment.pipeline import View
from selfsup.errors import ConfigError
from selfsup.losses import VICRegLLoss
from selfsup.methods.base import ViewBatch


# ---------------------------------------------------------------------------------------------
# View geometry
# ---------------------------------------------------------------------------------------------


def coordinate_image(size: int) -> torch.Tensor:
    """(1, 2, size, size) float image whose channel 0 holds each pixel's column, channel 1 its row."""
    ramp = torch.arange(size, dtype=torch.float64)
    return torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size)])[None]


def test_the_geometry_says_which_source_pixel_each_view_pixel_shows():
    """Crops with both flips, rendered from an image that holds its own coordinates: every pixel of
    the view shows the source position the geometry maps its centre to."""
    size, out = 48, 12
    view = View([RandomResizedCrop(size=out, scale=(0.2, 0.7)), HorizontalFlip(p=0.5), Solarize(p=0.0),
                 VerticalFlip(p=0.5)], mean=(0.0, 0.0), std=(1.0, 1.0))
    batch = 64
    images = coordinate_image(size).expand(batch, -1, -1, -1).contiguous()
    params = view.sample(batch, size, size, torch.Generator().manual_seed(3))
    rendered = view.render(images.float() / size, params).double() * size  # the ops take [0, 1] values
    geometry = view_geometry(view, params, size, size)
    assert bool((geometry[:, 1] < 0).any()) and bool((geometry[:, 1] > 0).any())  # some mirrored, some not
    assert bool((geometry[:, 3] < 0).any()) and bool((geometry[:, 3] > 0).any())
    centres = cell_centres(geometry, out, out)  # (B, out * out, (y, x)) in source pixels, edges at integers
    shown = rendered.flatten(2).transpose(1, 2)  # (B, out * out, (column, row)) pixel indices
    torch.testing.assert_close(shown[..., 0], centres[..., 1] - 0.5, rtol=0, atol=1e-3)
    torch.testing.assert_close(shown[..., 1], centres[..., 0] - 0.5, rtol=0, atol=1e-3)


def test_a_recipe_returns_views_that_know_their_geometry_and_an_unknown_move_is_refused():
    views = augment.get("byol", size=8, mean=MEAN, std=STD)(torch.zeros(3, 3, 16, 16, dtype=torch.uint8))
    assert len(views) == 2 and views.geometry(1).shape == (3, 4)
    whole = View([Solarize(p=1.0)], mean=MEAN, std=STD)
    p = whole.sample(2, 10, 20, torch.Generator())
    assert view_geometry(whole, p, 10, 20).tolist() == [[0.0, 20.0, 0.0, 10.0]] * 2
    turned = View([Rotate90()], mean=MEAN, std=STD)
    with pytest.raises(ConfigError, match="rotate90"):
        view_geometry(turned, turned.sample(2, 8, 8, torch.Generator()), 8, 8)


def test_vicregl_refuses_views_without_geometry():
    method = methods.get("vicregl", backbone=tiny_backbone("vicregl"), **small("vicregl"))
    with pytest.raises(ValueError, match="position in the image"):
        method.training_step(ViewBatch([torch.randn(4, 3, 16, 16)] * 2, torch.zeros(4), torch.arange(4)))


# ---------------------------------------------------------------------------------------------
# The loss against a slow reference of the formula
# ---------------------------------------------------------------------------------------------


def variance_term(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    return torch.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    return sum(cov[a, b] ** 2 for a in range(d) for b in range(d) if a != b) / d


def matched(a: torch.Tensor, b: torch.Tensor, distance, k: int | None):
    """Per sample: each cell of ``a`` with its nearest cell of ``b``; the k closest pairs in cell order."""
    xs, ys = [], []
    for s in range(len(a)):
        cells = range(a.shape[1])
        nearest = {p: min(range(b.shape[1]), key=lambda q: float(distance(s, p, q))) for p in cells}
        closest = {p: float(distance(s, p, nearest[p])) for p in cells}
        kept = sorted(sorted(cells, key=lambda p: closest[p])[: (k or a.shape[1])])
        xs.append(torch.stack([a[s, p] for p in kept]))
        ys.append(torch.stack([b[s, nearest[p]] for p in kept]))
    return torch.stack(xs), torch.stack(ys)


def vicreg_of_slots(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    slots = range(x.shape[1])
    inv = ((x - y) ** 2).mean()
    var = sum((variance_term(x[:, m]) + variance_term(y[:, m])) / 2 for m in slots) / len(slots)
    cov = sum((covariance_term(x[:, m]) + covariance_term(y[:, m])) / 2 for m in slots) / len(slots)
    return 25 * inv + 25 * var + cov


def reference_loss(embeddings, maps, where, alpha, num_matches, l2_all_matches):
    views = len(embeddings)
    pairs = [(i, j) for i in range(2) for j in range(views) if j != i]
    inv = sum(((embeddings[i] - embeddings[j]) ** 2).mean() for i, j in pairs) / len(pairs)
    var = sum(variance_term(e) for e in embeddings) / views
    cov = sum(covariance_term(e) for e in embeddings) / views
    global_loss = 25 * inv + 25 * var + cov
    local_loss = 0.0
    for i, j in pairs:
        a, b, la, lb = maps[i], maps[j], where[i], where[j]
        by_feature = (lambda s, p, q: (a[s, p] - b[s, q]).norm(), lambda s, p, q: (b[s, p] - a[s, q]).norm())
        by_place = (lambda s, p, q: (la[s, p] - lb[s, q]).norm(), lambda s, p, q: (lb[s, p] - la[s, q]).norm())
        l2_counts = (None, None) if l2_all_matches else num_matches
        for (forward, backward), counts in ((by_feature, l2_counts), (by_place, num_matches)):
            local_loss = local_loss + (vicreg_of_slots(*matched(a, b, forward, counts[0]))
                                       + vicreg_of_slots(*matched(b, a, backward, counts[1]))) / 2
    return alpha * global_loss + (1 - alpha) * local_loss / len(pairs)


@pytest.mark.parametrize("l2_all_matches", [True, False])
def test_vicregl_loss_equals_the_slow_reference(l2_all_matches):
    """Three views (so pairs (0, 1), (0, 2), (1, 0), (1, 2)), maps of 9 and 4 cells, matches
    (5, 2), in float64; positions drawn continuously so no two distances tie."""
    g = torch.Generator().manual_seed(0)
    n, d, c = 6, 5, 4
    cells = [9, 9, 4]
    embeddings = [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in cells]
    maps = [torch.randn(n, length, c, generator=g, dtype=torch.float64) for length in cells]
    where = [torch.rand(n, length, 2, generator=g, dtype=torch.float64) * 32 for length in cells]
    loss_fn = VICRegLLoss(alpha=0.75, num_matches=(5, 2), l2_all_matches=l2_all_matches, gather_distributed=False)
    ours, terms = loss_fn(embeddings, maps, where)
    expected = reference_loss(embeddings, maps, where, 0.75, (5, 2), l2_all_matches)
    assert float(ours) == pytest.approx(float(expected), rel=1e-10)
    assert set(terms) == {f"{p}_{t}" for p in ("global", "local") for t in ("inv", "var", "cov")}


def test_alpha_one_and_zero_keep_one_part_and_matches_beyond_the_map_keep_every_cell():
    g = torch.Generator().manual_seed(1)
    embeddings = [torch.randn(8, 6, generator=g) for _ in range(2)]
    maps = [torch.randn(8, 4, 6, generator=g, requires_grad=True) for _ in range(2)]
    where = [torch.rand(8, 4, 2, generator=g) for _ in range(2)]
    global_only, terms = VICRegLLoss(alpha=1.0)(embeddings, maps, where)
    assert float(terms["local_inv"]) == 0.0 and global_only.requires_grad is False  # maps unused
    local_only, _ = VICRegLLoss(alpha=0.0, num_matches=(20, 4))(embeddings, maps, where)  # 20 > 4 cells
    local_all, _ = VICRegLLoss(alpha=0.0, num_matches=(4, 4))(embeddings, maps, where)
    assert float(local_only.detach()) == pytest.approx(float(local_all))
    local_only.backward()
    assert all(m.grad is not None and m.grad.abs().sum() > 0 for m in maps)


# ---------------------------------------------------------------------------------------------
# Optional comparison with lightly (installed by benchmarks/parity/setup.sh)
# ---------------------------------------------------------------------------------------------


def test_vicregl_loss_equals_lightlys_where_their_cell_orders_agree():
    """lightly keeps matched cells sorted by distance, the official code (and selfsup) in cell
    order, which changes the per-slot variance and covariance; lightly also matches in feature
    space with ``num_matches`` where the official default keeps every cell. With cells whose
    nearest distances grow with their index (in both directions, in both spaces) the two orders
    agree, and with ``l2_all_matches=False`` the losses must be equal."""
    lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is not installed (bash benchmarks/parity/setup.sh)")
    g = torch.Generator().manual_seed(2)
    n, side, c = 8, 3, 16
    cells = side * side
    grid = torch.stack(torch.meshgrid(torch.arange(side) * 10.0, torch.arange(side) * 10.0, indexing="ij"), -1)
    grid = grid.flatten(0, 1).expand(n, -1, -1)  # (n, 9, 2), 10 px apart
    growing = torch.linspace(0.1, 2.0, cells)[None, :, None]  # offsets that grow with the cell index
    where = [grid, grid + growing]
    base = torch.randn(n, cells, c, generator=g)
    maps = [base, base + growing * 0.01 * F.normalize(torch.randn(n, cells, c, generator=g), dim=-1)]
    embeddings = [torch.randn(n, 12, generator=g) for _ in range(2)]
    ours, _ = VICRegLLoss(alpha=0.75, num_matches=(5, 3), l2_all_matches=False, gather_distributed=False)(
        embeddings, maps, where)
    theirs = lightly_loss.VICRegLLoss(alpha=0.75, num_matches=(5, 3))(
        global_view_features=[(e, m.view(n, side, side, c)) for e, m in zip(embeddings, maps)],
        global_view_grids=[w.reshape(n, side, side, 2) for w in where])
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
