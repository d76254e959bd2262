"""TiCo's momentum encoder and the gradient of its running-covariance term (issue 15, item 3).

The second branch comes from a frozen EMA copy of backbone + projector (as in sayannag/TiCo-pytorch
and lightly), which follows the online network at BYOL's cosine rate after each step; no gradient
reaches the online network through it. The loss's gradient is checked against a slow float64
reference of the paper's formula, in which the current batch's covariance ``B_t`` is part of
``C_t`` and is differentiated (lightly detaches it; see ``TiCoLoss``).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses.tico import TiCoLoss


def small(**options: object) -> dict:
    """TiCo's test sizes from its method card, plus ``options`` (selfsup.methods imported lazily)."""
    import selfsup.methods as methods

    return {**methods.card("tico").small, **options}


def _batch(views: list[torch.Tensor]):
    from selfsup.methods import ViewBatch

    n = len(views[0])
    return ViewBatch(views=views, labels=torch.arange(n) % 3, indices=torch.arange(n))


def _method(backbone, **kwargs):
    import selfsup.methods as methods

    return methods.get("tico", backbone=backbone, **small(**kwargs))


def test_target_is_frozen_copy_that_follows_online_at_cosine_rate(tiny_backbone, two_views) -> None:
    method = _method(tiny_backbone, base_momentum=0.9, final_momentum=1.0)
    online = dict(method.backbone.named_parameters()) | {
        f"p.{k}": v for k, v in method.projector.named_parameters()
    }
    target = dict(method.target["backbone"].named_parameters()) | {
        f"p.{k}": v for k, v in method.target["projector"].named_parameters()
    }
    assert online.keys() == target.keys()
    for k in online:  # starts as a copy, frozen, and outside the optimizer's groups
        assert torch.equal(online[k], target[k]) and not target[k].requires_grad, k
    in_groups = {id(p) for g in method.parameter_groups(weight_decay=1e-4) for p in g["params"]}
    assert not in_groups & {id(p) for p in target.values()}

    opt = torch.optim.SGD([g for g in method.parameter_groups(weight_decay=0.0) if g["params"]], lr=0.5)
    method.configure_training(epochs=1, steps_per_epoch=4)
    assert method.state_logs() == {"momentum": 0.9}  # the base momentum before any step
    progress = 0.25
    method.begin_step(1)  # the second of 4 steps
    out = method.training_step(_batch(two_views))
    opt.zero_grad()
    out.loss.backward()
    assert all(p.grad is None for p in target.values())
    old_target = {k: v.detach().clone() for k, v in target.items()}
    opt.step()
    assert all(torch.equal(target[k], old_target[k]) for k in target)  # only end_step moves it
    method.end_step()
    m = 1.0 - (1.0 - 0.9) * (math.cos(math.pi * progress) + 1) / 2  # BYOL Sec. 3.2
    assert method.target.momentum == pytest.approx(m, abs=1e-12)
    moved = 0
    for k in target:
        want = m * old_target[k] + (1 - m) * online[k].detach()
        torch.testing.assert_close(target[k], want, rtol=0, atol=1e-6, msg=k)
        moved += not torch.equal(target[k], old_target[k])
    assert moved > 0  # the online step changed something the target had to follow
    assert method.state_logs()["momentum"] == pytest.approx(m)  # what the engine logs with the step


def test_second_branch_is_the_target_and_sends_no_gradient(tiny_backbone, two_views) -> None:
    method = _method(tiny_backbone)
    x0, x1 = (v.clone().requires_grad_(True) for v in two_views)
    method.training_step(_batch([x0, x1])).loss.backward()
    assert x0.grad is not None and x0.grad.abs().sum() > 0
    assert x1.grad is None or not x1.grad.any()  # the second view only passes through the target

    with torch.no_grad():  # make the target differ from the online network
        for p in method.target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    c_prev = method.criterion.covariance.clone()
    out = method.training_step(_batch(two_views))
    with torch.no_grad():  # train-mode BatchNorm: the same batches the step used
        z0 = method.projector(method.backbone(two_views[0]))
        z1 = method.target["projector"](method.target["backbone"](two_views[1]))
        features = method.backbone(two_views[0])
    ref = TiCoLoss(small()["proj_output_dim"], gather_distributed=False)
    ref.covariance.copy_(c_prev)
    assert out.loss.item() == pytest.approx(ref(z0, z1).item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(method.criterion.covariance, ref.covariance)  # C from the online branch
    torch.testing.assert_close(out.features.detach(), features)  # the online view-0 features


def test_without_momentum_encoder_both_branches_share_the_online_network(tiny_backbone, two_views) -> None:
    method = _method(tiny_backbone, momentum_encoder=False)
    assert method.target is None
    x0, x1 = (v.clone().requires_grad_(True) for v in two_views)
    method.training_step(_batch([x0, x1])).loss.backward()
    assert x1.grad is not None and x1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="base_momentum"):
        _method(tiny_backbone, base_momentum=1.0, final_momentum=0.99)


# ---------------------------------------------------------------------------------------------
# The covariance term's gradient against a slow float64 reference of the formula.
# ---------------------------------------------------------------------------------------------


def ref_tico_loss(z0: torch.Tensor, z1: torch.Tensor, c_prev: torch.Tensor, beta: float, rho: float) -> torch.Tensor:
    """Eq.: ``-1/N sum_i <z_i, z'_i> + rho/N sum_i z_i^T C_t z_i``, ``C_t = beta C_{t-1} +
    (1 - beta)/N sum_b z_b z_b^T`` on L2-normalised rows, written as explicit sums; ``C_{t-1}`` is a
    constant, the current batch's term is not."""
    n, d = z0.shape
    a = [z0[b] / torch.sqrt(sum(z0[b, j] ** 2 for j in range(d))) for b in range(n)]
    p = [z1[b] / torch.sqrt(sum(z1[b, j] ** 2 for j in range(d))) for b in range(n)]
    c = [[beta * float(c_prev[i, j]) + (1 - beta) * sum(a[b][i] * a[b][j] for b in range(n)) / n
          for j in range(d)] for i in range(d)]
    invariance = -sum(sum(a[b][j] * p[b][j] for j in range(d)) for b in range(n)) / n
    contrast = sum(a[b][i] * c[i][j] * a[b][j] for b in range(n) for i in range(d) for j in range(d)) / n
    return invariance + rho * contrast


def test_covariance_gradient_flows_through_current_batch_as_in_reference() -> None:
    beta, rho, n, d = 0.7, 3.0, 6, 4
    g = torch.Generator().manual_seed(3)
    loss_fn = TiCoLoss(d, beta=beta, rho=rho)
    loss_fn(torch.randn(n, d, generator=g), torch.randn(n, d, generator=g))  # a non-zero C_{t-1}
    c_prev = loss_fn.covariance.clone()
    assert c_prev.abs().sum() > 0
    z0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z1 = z0 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)

    a, b = z0.clone().requires_grad_(True), z1.clone().requires_grad_(True)
    loss_fn(a, b).backward()
    ra, rb = z0.clone().requires_grad_(True), z1.clone().requires_grad_(True)
    ref_tico_loss(ra, rb, c_prev.double(), beta, rho).backward()
    torch.testing.assert_close(a.grad, ra.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(b.grad, rb.grad, rtol=1e-9, atol=1e-12)

    # the alternative (lightly since PR #1484: B_t detached) differs, so the test tells them apart
    za = F.normalize(z0.clone().requires_grad_(True), dim=1)
    detached_c = beta * c_prev.double() + (1 - beta) * (za.T @ za).detach() / n
    leaf = z0.clone().requires_grad_(True)
    zl = F.normalize(leaf, dim=1)
    detached = -(zl * F.normalize(z1, dim=1)).sum(1).mean() + rho * ((zl @ detached_c) * zl).sum(1).mean()
    detached.backward()
    assert (leaf.grad - ra.grad).abs().max() > 1e-2
