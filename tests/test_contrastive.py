"""Contrastive methods with momentum encoders and support sets: MoCo v1, MoCo v2+, MoCo v3, NNCLR.

Losses are checked against slow float64 loop references written from the papers' formulas, the
state (key encoders, queues, support set) against the update rules, and every method with a
two-step smoke test that calls the hooks in the engine's order.
"""
from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import torch.nn.functional as F
from distributed import run_distributed

from selfsup.losses.mocov3 import MoCoV3Loss
from selfsup.losses.nnclr import NNCLRLoss
from selfsup.nn.support_set import NearestNeighbourSupportSet

if TYPE_CHECKING:
    from selfsup.methods import Method, ViewBatch

# The two-process test's workers import this module: keep its top level light (no backbones,
# torchvision or lightning), so `selfsup.methods` / `selfsup.config` are imported inside tests.

NAMES = ["mocov1", "mocov2plus", "mocov3", "nnclr"]


def small(name: str) -> dict:
    """The test sizes of ``name``'s method card (imported here, not at the top: see above)."""
    import selfsup.methods

    return dict(selfsup.methods.card(name).small)


# ----------------------------------------------------------------------------- references


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def ref_infonce_in_batch(anchors: torch.Tensor, candidates: torch.Tensor, t: float) -> torch.Tensor:
    """mean_i -log(exp(a_i . c_i / t) / sum_j exp(a_i . c_j / t)), loops, float64, unit vectors."""
    a, c = _unit(anchors.double()), _unit(candidates.double())
    total = torch.zeros((), dtype=torch.float64)
    for i in range(a.shape[0]):
        num = torch.exp((a[i] * c[i]).sum() / t)
        den = sum(torch.exp((a[i] * c[j]).sum() / t) for j in range(c.shape[0]))
        total = total - torch.log(num / den)
    return total / a.shape[0]


def ref_mocov3(q: torch.Tensor, k: torch.Tensor, t: float) -> torch.Tensor:
    """MoCo v3 (arXiv 2104.02057, Eq. 1 and Alg. 1): 2 tau * InfoNCE with in-batch keys."""
    return 2 * t * ref_infonce_in_batch(q, k, t)


def ref_nnclr(nn: torch.Tensor, p: torch.Tensor, t: float) -> torch.Tensor:
    """NNCLR (arXiv 2104.14548, Eq. 2): -log(exp(NN_i . p_i / t) / sum_k exp(NN_i . p_k / t))."""
    return ref_infonce_in_batch(nn, p, t)


def ref_moco_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    """MoCo Eq. 1: positive q.k+, negatives only the queued keys; mean over queries."""
    q, k, queue = _unit(q.double()), _unit(k.double()), queue.double()
    total = torch.zeros((), dtype=torch.float64)
    for i in range(q.shape[0]):
        pos = torch.exp((q[i] * k[i]).sum() / t)
        neg = sum(torch.exp((q[i] * queue[j]).sum() / t) for j in range(queue.shape[0]))
        total = total - torch.log(pos / (pos + neg))
    return total / q.shape[0]


def ref_nearest(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Brute-force cosine nearest neighbour, first index on ties."""
    out = []
    for i in range(z.shape[0]):
        best, best_j = -math.inf, -1
        for j in range(support.shape[0]):
            cos = float((z[i] * support[j]).sum() / (z[i].norm() * support[j].norm()))
            if cos > best:
                best, best_j = cos, j
        out.append(support[best_j])
    return torch.stack(out)


def _pair(seed: int, n: int = 6, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    return a, a + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)


def batch_of(views: list[torch.Tensor]) -> ViewBatch:
    from selfsup.methods import ViewBatch

    n = len(views[0])
    return ViewBatch(views=views, labels=torch.arange(n) % 3, indices=torch.arange(n))


def make(name: str, backbone: torch.nn.Module, **options: object) -> Method:
    import selfsup.methods

    return selfsup.methods.get(name, backbone=backbone, **options)


def default_of(name: str, option: str) -> object:
    """The default of a method option, read from its signature (no paper-sized queue is built)."""
    import selfsup.methods

    return inspect.signature(selfsup.methods.METHODS.factory(name)).parameters[option].default


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_mocov3_loss_matches_reference_values_and_gradients(t: float) -> None:
    q, k = _pair(1)
    q.requires_grad_(True), k.requires_grad_(True)
    got = MoCoV3Loss(temperature=t)(q, k)
    qr, kr = q.detach().clone().requires_grad_(True), k.detach().clone().requires_grad_(True)
    want = ref_mocov3(qr, kr, t)
    assert got.item() == pytest.approx(want.item(), abs=1e-5, rel=1e-5)
    got.backward(), want.backward()
    torch.testing.assert_close(q.grad, qr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k.grad, kr.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_nnclr_loss_matches_reference_values_and_gradients(t: float) -> None:
    nn, p = _pair(2)
    p.requires_grad_(True)
    got = NNCLRLoss(temperature=t)(nn, p)
    pr = p.detach().clone().requires_grad_(True)
    want = ref_nnclr(nn, pr, t)
    assert got.item() == pytest.approx(want.item(), abs=1e-5, rel=1e-5)
    got.backward(), want.backward()
    torch.testing.assert_close(p.grad, pr.grad, rtol=1e-5, atol=1e-5)


def test_losses_reject_bad_arguments() -> None:
    for loss_cls in (MoCoV3Loss, NNCLRLoss):
        with pytest.raises(ValueError, match="temperature"):
            loss_cls(temperature=0.0)
        with pytest.raises(ValueError, match="same shape"):
            loss_cls()(torch.randn(4, 8), torch.randn(3, 8))


# ----------------------------------------------------------------------------- two processes
#
# Single process on the concatenated batch of W ranks x N rows: L = (1/(WN)) sum over all rows,
# and rank r's loss L_r is the mean over its own N rows (each against the gathered global batch),
# so L = (1/W) sum_r L_r: the mean of the per-rank losses must equal L.
# Gradients: rank r backpropagates only L_r. A row that stays local (MoCo v3 queries, NNCLR
# neighbours) receives dL_r/dx_r = W dL/dx_r. A gathered row (MoCo v3 keys, NNCLR predictions)
# receives, through gather's backward, sum_s dL_s/dx_r = W dL/dx_r as well. DDP averages the
# parameter gradients over ranks, (1/W) sum_r W dL/dx_r dx_r/dtheta = dL/dtheta, so every input
# gradient on rank r divided by W must equal the single-process gradient of rank r's rows.

_WORLD, _N = 2, 3


def _dist_inputs() -> dict[str, torch.Tensor]:
    q, k = _pair(11, n=_WORLD * _N)
    nn, p = _pair(12, n=_WORLD * _N)
    return {"q": q, "k": k, "nn": nn, "p": p}


def _losses(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"mocov3": MoCoV3Loss(temperature=0.5)(x["q"], x["k"]),
            "nnclr": NNCLRLoss(temperature=0.1)(x["nn"], x["p"])}


def _dist_worker(rank: int, world: int) -> dict:
    rows = slice(rank * _N, (rank + 1) * _N)
    x = {name: v[rows].clone().requires_grad_(True) for name, v in _dist_inputs().items()}
    losses = _losses(x)
    (losses["mocov3"] + losses["nnclr"]).backward()
    return {**{f"loss_{k}": v.detach() for k, v in losses.items()},
            **{f"grad_{k}": v.grad for k, v in x.items()}}


def test_mocov3_and_nnclr_losses_two_processes_equal_one_process(tmp_path: Path) -> None:
    results = run_distributed(_dist_worker, tmp_path, world=_WORLD)
    x = {name: v.clone().requires_grad_(True) for name, v in _dist_inputs().items()}
    losses = _losses(x)
    (losses["mocov3"] + losses["nnclr"]).backward()
    for name, loss in losses.items():
        mean = sum(r[f"loss_{name}"] for r in results) / _WORLD
        torch.testing.assert_close(mean, loss.detach(), rtol=1e-6, atol=1e-6)
    for r, res in enumerate(results):
        rows = slice(r * _N, (r + 1) * _N)
        for name, v in x.items():
            torch.testing.assert_close(res[f"grad_{name}"] / _WORLD, v.grad[rows], rtol=1e-6, atol=1e-6)
    assert results[0]["grad_k"].abs().sum() > 0  # the keys' gradient crossed processes


# ----------------------------------------------------------------------------- support set


def test_support_set_nearest_neighbour_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    support = NearestNeighbourSupportSet(size=20, dim=5, gather_distributed=False)
    support.update(torch.randn(20, 5, generator=g) * 3)  # fill with non-unit rows
    z = torch.randn(7, 5, generator=g)
    stored = support.queue.bank.clone()
    torch.testing.assert_close(stored.norm(dim=1), torch.ones(20))  # stored normalised
    torch.testing.assert_close(support.nearest(z), ref_nearest(z, stored))
    # a stored row is its own nearest neighbour, whatever its scale in the query
    torch.testing.assert_close(support.nearest(5 * stored[[4, 9]]), stored[[4, 9]])


def test_support_set_update_is_fifo_of_normalised_rows() -> None:
    support = NearestNeighbourSupportSet(size=5, dim=3, gather_distributed=False)
    initial = support.queue.bank.clone()
    a, b = torch.randn(3, 3), torch.randn(4, 3)
    support.update(a)
    assert int(support.queue.ptr) == 3
    torch.testing.assert_close(support.queue.bank[:3], F.normalize(a, dim=1))
    torch.testing.assert_close(support.queue.bank[3:], initial[3:])
    support.update(b)  # wraps around: rows 3, 4, 0, 1
    assert int(support.queue.ptr) == 2
    torch.testing.assert_close(support.queue.bank[[3, 4, 0, 1]], F.normalize(b, dim=1))
    torch.testing.assert_close(support.queue.bank[2], F.normalize(a, dim=1)[2])


# ----------------------------------------------------------------------------- smoke tests


@pytest.mark.parametrize("name", ["mocov1", "mocov2plus", "mocov3"])
def test_key_encoder_is_frozen_and_out_of_the_optimizer(name: str, tiny_backbone) -> None:
    method = make(name, tiny_backbone, **small(name))
    assert all(not p.requires_grad for p in method.target.parameters())
    in_groups = {id(p) for g in method.parameter_groups(0.0) for p in g["params"]}
    assert not in_groups & {id(p) for p in method.target.parameters()}


@pytest.mark.parametrize("name", NAMES)
def test_recipes_load(name: str) -> None:
    for dataset in ("cifar10", "fashion_mnist"):
        import selfsup.config

        config = selfsup.config.load(f"{dataset}/{name}")
        assert config.method["name"] == name


# ----------------------------------------------------------------------------- MoCo v1 / v2+


def _one_step(method: torch.nn.Module, views: list[torch.Tensor], step: int, steps: int) -> tuple:
    """Optimizer step ``step`` of ``steps``; returns (target before, online after the step, target
    after end_step)."""
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    target_before = [p.detach().clone() for p in method.target.parameters()]
    method.configure_training(epochs=1, steps_per_epoch=steps)
    method.begin_step(step)
    out = method.training_step(batch_of(views))
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    online_after = [p.detach().clone() for p in method.target.online().parameters()]
    method.end_step()
    return out, target_before, online_after, [p.detach() for p in method.target.parameters()]


def test_mocov1_defaults_head_views_and_constant_momentum(tiny_backbone, two_views) -> None:
    import selfsup.augment as augment

    method = make("mocov1", tiny_backbone, queue_size=32)
    head = list(method.projector)
    assert len(head) == 1 and isinstance(head[0], torch.nn.Linear) and head[0].out_features == 128
    assert method.criterion.temperature == 0.07 and method.target.momentum == 0.999
    assert method.criterion.memory_bank.size == 32 and default_of("mocov1", "queue_size") == 65536
    spec = augment.get(method.default_views, size=16).specs[0]
    assert (spec.scale, spec.jitter, spec.jitter_p, spec.gray_p, spec.blur_p) == (
        (0.2, 1.0), (0.4, 0.4, 0.4, 0.4), 1.0, 0.2, 0.0)
    bank = method.criterion.memory_bank
    queue_before = bank.bank.clone()
    keys = F.normalize(copy.deepcopy(method).target(two_views[1]), dim=1)
    for step in (0, 2):  # constant momentum whatever the progress (0, then 0.5)
        out, t0, o, t1 = _one_step(method, two_views, step, 4)
        assert method.target.momentum == 0.999
        for a, b, c in zip(t0, o, t1):
            torch.testing.assert_close(c, 0.999 * a + 0.001 * b, rtol=0, atol=1e-6)
        if step == 0:
            torch.testing.assert_close(bank.bank[:8], keys, rtol=0, atol=1e-5)
            torch.testing.assert_close(bank.bank[8:], queue_before[8:])
    assert int(bank.ptr) == 16


def test_mocov2plus_symmetric_loss_two_queues_and_cosine_momentum(tiny_backbone, two_views) -> None:
    base = 0.9
    method = make("mocov2plus", tiny_backbone, base_momentum=base, **small("mocov2plus"))
    assert all(not isinstance(m, torch.nn.BatchNorm1d) for m in method.projector)
    # loss on a frozen copy in eval mode: both orders against their own queue
    probe = copy.deepcopy(method).eval()
    queues = [probe.criterion.memory_bank.bank.clone(), probe.criterion_reverse.memory_bank.bank.clone()]
    out = probe.training_step(batch_of(two_views))
    x0, x1 = two_views
    q0, q1 = (probe.projector(probe.backbone(x)) for x in (x0, x1))
    k0, k1 = probe.target(x0), probe.target(x1)
    want = (ref_moco_queue(q0, k1, queues[0], 0.2) + ref_moco_queue(q1, k0, queues[1], 0.2)) / 2
    assert out.loss.item() == pytest.approx(want.item(), abs=1e-5, rel=1e-5)
    # training: view-1 keys enter the first queue, view-0 keys the second; EMA with cosine momentum
    keys = copy.deepcopy(method)
    k0, k1 = (F.normalize(keys.target(x), dim=1) for x in (x0, x1))
    for step, steps in [(0, 4), (2, 4)]:
        _, t0, o, t1 = _one_step(method, two_views, step, steps)
        tau = 1 - (1 - base) * (math.cos(math.pi * step / steps) + 1) / 2
        assert method.target.momentum == pytest.approx(tau)
        for a, b, c in zip(t0, o, t1):
            torch.testing.assert_close(c, tau * a + (1 - tau) * b, rtol=0, atol=1e-6)
        if step == 0:
            torch.testing.assert_close(method.criterion.memory_bank.bank[:8], k1, rtol=0, atol=1e-5)
            torch.testing.assert_close(method.criterion_reverse.memory_bank.bank[:8], k0, rtol=0, atol=1e-5)
    assert int(method.criterion.memory_bank.ptr) == int(method.criterion_reverse.memory_bank.ptr) == 16


# ----------------------------------------------------------------------------- MoCo v3


def test_mocov3_heads_loss_and_cosine_momentum(tiny_backbone, two_views) -> None:
    base = 0.9
    method = make("mocov3", tiny_backbone, base_momentum=base, **small("mocov3"))
    # defaults: the official ResNet heads (2-layer projector with a last BN, no predictor output BN)
    linears = [m for m in method.projector if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and all(m.bias is None for m in linears)
    assert isinstance(method.projector[-1], torch.nn.BatchNorm1d) and not method.projector[-1].affine
    assert len([m for m in method.predictor if isinstance(m, torch.nn.Linear)]) == 2
    assert isinstance(method.predictor[-1], torch.nn.Linear)
    assert method.criterion.temperature == 1.0
    vit_style = make("mocov3", tiny_backbone, proj_num_layers=3, pred_last_batch_norm=True, **small("mocov3"))
    assert isinstance(vit_style.predictor[-1], torch.nn.BatchNorm1d) and not vit_style.predictor[-1].affine
    assert len([m for m in vit_style.projector if isinstance(m, torch.nn.Linear)]) == 3

    probe = copy.deepcopy(method).eval()
    out = probe.training_step(batch_of(two_views))
    x0, x1 = two_views
    q0, q1 = (probe.predictor(probe.projector(probe.backbone(x))) for x in (x0, x1))
    want = ref_mocov3(q0, probe.target(x1), 1.0) + ref_mocov3(q1, probe.target(x0), 1.0)
    assert out.loss.item() == pytest.approx(want.item(), abs=1e-5, rel=1e-5)

    predictor_before = [p.detach().clone() for p in method.predictor.parameters()]
    for step, steps in [(0, 4), (3, 4)]:
        _, t0, o, t1 = _one_step(method, two_views, step, steps)
        tau = 1 - (1 - base) * (math.cos(math.pi * step / steps) + 1) / 2
        assert method.target.momentum == pytest.approx(tau)
        for a, b, c in zip(t0, o, t1):
            torch.testing.assert_close(c, tau * a + (1 - tau) * b, rtol=0, atol=1e-6)
    assert len(list(method.target.parameters())) == len(list(method.target.online().parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(predictor_before, method.predictor.parameters()))


# ----------------------------------------------------------------------------- NNCLR


def test_nnclr_loss_uses_support_set_neighbours_and_updates_after_the_step(tiny_backbone, two_views) -> None:
    method = make("nnclr", tiny_backbone, temperature=0.1, **small("nnclr"))
    assert method.support_set.queue.size == small("nnclr")["queue_size"] and default_of("nnclr", "queue_size") == 98304
    queue = method.support_set.queue
    # loss on a frozen copy in eval mode, against brute-force neighbours
    probe = copy.deepcopy(method).eval()
    support = probe.support_set.queue.bank.clone()
    out = probe.training_step(batch_of(two_views))
    z = probe.projector(probe.backbone(torch.cat(two_views)))
    p0, p1 = probe.predictor(z).chunk(2)
    z0, z1 = z.chunk(2)
    nn0, nn1 = ref_nearest(z0.detach(), support), ref_nearest(z1.detach(), support)
    want = (ref_nnclr(nn0, p1, 0.1) + ref_nnclr(nn1, p0, 0.1)) / 2
    assert out.loss.item() == pytest.approx(want.item(), abs=1e-5, rel=1e-5)
    probe.end_step()  # eval-mode batches do not enter the support set
    torch.testing.assert_close(probe.support_set.queue.bank, support)

    before = queue.bank.clone()
    expected = F.normalize(copy.deepcopy(method).projector(
        copy.deepcopy(method).backbone(torch.cat(two_views)))[:8], dim=1)
    out = method.training_step(batch_of(two_views))
    torch.testing.assert_close(queue.bank, before)  # nothing enqueued before the step ends
    out.loss.backward()
    method.end_step()
    torch.testing.assert_close(queue.bank[:8], expected.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(queue.bank[8:], before[8:])
    assert int(queue.ptr) == 8
