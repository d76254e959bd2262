"""Smoke and state tests for every registered method: two optimizer steps on a tiny backbone.

The smoke test runs over ``methods.names()`` (as timm's tests run over ``list_models``), each
method on the tiny backbone and with the sizes of its card (:mod:`method_sizes`); the state tests
check the foundation methods' EMA targets, queues and losses against their formulas.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import selfsup.methods as methods
from method_sizes import MEAN, STD, small, small_views, tiny_backbone
from selfsup.augment import EvalTransform
from selfsup.methods import ViewBatch

FOUNDATION = ["simclr", "mocov2", "byol", "simsiam"]


def batch_of(views):
    n = len(views[0])
    return ViewBatch(views=views, labels=torch.arange(n) % 3, indices=torch.arange(n))


def train_steps(method, views, steps=2, lr=0.1):
    groups = method.parameter_groups(weight_decay=0.0)
    opt = torch.optim.SGD([g for g in groups if g["params"]], lr=lr)
    method.configure_training(epochs=1, steps_per_epoch=steps)
    losses = []
    for step in range(steps):
        method.begin_step(step)
        out = method.training_step(batch_of(views))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        method.end_step()
        losses.append(out.loss.detach())
    return losses, out


def test_foundation_methods_are_registered():
    assert set(FOUNDATION) <= set(methods.names())


@pytest.mark.parametrize("name", methods.names())
def test_two_steps_in_engine_order_train_the_backbone(name):
    """Every registered method: its own view recipe at 16 px, its card's tiny backbone and sizes,
    two optimizer steps in the engine's hook order; the loss and logs stay finite, and the backbone
    and a head train."""
    torch.manual_seed(0)
    n = 16
    method = methods.get(name, backbone=tiny_backbone(name), **small(name, num_samples=n))
    make_views = small_views(name)
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    plain = EvalTransform(16, MEAN, STD)(images)
    opt = torch.optim.SGD([g for g in method.parameter_groups(0.0) if g["params"]], lr=0.05)
    before = {k: v.detach().clone() for k, v in method.named_parameters() if v.requires_grad}
    method.configure_training(epochs=1, steps_per_epoch=2)
    method.on_epoch_start(0, lambda: torch.no_grad()(method.backbone)(plain))
    for step in range(2):
        progress = method.begin_step(step)
        out = method.training_step(ViewBatch(make_views(images), torch.arange(n) % 4, torch.arange(n)))
        assert torch.isfinite(out.loss), f"{name}: step {step} loss {out.loss}"
        assert all(math.isfinite(float(value)) for value in out.logs.values()), out.logs
        opt.zero_grad()
        out.loss.backward()
        method.on_after_backward(progress)
        opt.step()
        method.end_step()
    changed = {k for k, v in method.named_parameters() if k in before and not torch.equal(v, before[k])}
    assert any(k.startswith("backbone.") for k in changed), f"{name}: the backbone did not train"
    assert any(not k.startswith("backbone.") for k in changed), f"{name}: no head trained"
    assert out.features is None or out.features.shape == (n, method.feature_dim)
    assert method.embed(plain).shape == (n, method.feature_dim)


@pytest.mark.parametrize("name", ["byol", "mocov2"])
def test_target_network_is_frozen_and_out_of_the_optimizer(name, tiny_backbone):
    method = methods.get(name, backbone=tiny_backbone, **small(name))
    assert all(not p.requires_grad for p in method.target.parameters())
    in_groups = {id(p) for g in method.parameter_groups(0.0) for p in g["params"]}
    assert not in_groups & {id(p) for p in method.target.parameters()}


def _ema_expectation(method, online, views, step, steps):
    """Run one step and return (target params after the hook, expected from the EMA formula)."""
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    target_before = [p.detach().clone() for p in method.target.parameters()]
    method.configure_training(epochs=1, steps_per_epoch=steps)
    method.begin_step(step)
    out = method.training_step(batch_of(views))
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    online_after = [p.detach().clone() for p in online()]
    method.end_step()
    return target_before, online_after, [p.detach() for p in method.target.parameters()]


def test_byol_target_follows_cosine_momentum(tiny_backbone, two_views):
    base = 0.9
    method = methods.get("byol", backbone=tiny_backbone, base_momentum=base, **small("byol"))
    online = lambda: list(method.backbone.parameters()) + list(method.projector.parameters())  # noqa: E731
    for step, steps in [(0, 4), (2, 4)]:
        before, online_after, target_after = _ema_expectation(method, online, two_views, step, steps)
        tau = 1 - (1 - base) * (math.cos(math.pi * step / steps) + 1) / 2  # BYOL Sec. 3.2
        assert method.target.momentum == pytest.approx(tau)
        for t0, o, t1 in zip(before, online_after, target_after):
            torch.testing.assert_close(t1, tau * t0 + (1 - tau) * o, rtol=0, atol=1e-6)
        assert any(not torch.equal(t0, t1) for t0, t1 in zip(before, target_after))


def test_byol_loss_is_two_minus_two_cosine(tiny_backbone, two_views):
    method = methods.get("byol", backbone=tiny_backbone, **small("byol")).eval()
    out = method.training_step(batch_of(two_views))
    x0, x1 = two_views
    p = [method.predictor(method.projector(method.backbone(x))) for x in (x0, x1)]
    t = [method.target["projector"](method.target["backbone"](x)) for x in (x0, x1)]
    terms = [2 - 2 * F.cosine_similarity(p[0], t[1]).mean(), 2 - 2 * F.cosine_similarity(p[1], t[0]).mean()]
    torch.testing.assert_close(out.loss, (terms[0] + terms[1]) / 2)


def test_moco_key_encoder_and_queue_update(tiny_backbone, two_views):
    m = 0.99
    method = methods.get("mocov2", backbone=tiny_backbone, momentum=m, **small("mocov2"))
    bank = method.criterion.memory_bank
    queue_before = bank.bank.clone()
    online = lambda: list(method.backbone.parameters()) + list(method.projector.parameters())  # noqa: E731
    target_copy = copy.deepcopy(method.target)
    keys = F.normalize(target_copy["projector"](target_copy["backbone"](two_views[1])), dim=1)
    before, online_after, target_after = _ema_expectation(method, online, two_views, 0, 2)
    for t0, o, t1 in zip(before, online_after, target_after):
        torch.testing.assert_close(t1, m * t0 + (1 - m) * o, rtol=0, atol=1e-6)
    n = len(two_views[0])
    torch.testing.assert_close(bank.bank[:n], keys.detach(), rtol=0, atol=1e-5)  # newest keys at the pointer
    torch.testing.assert_close(bank.bank[n:], queue_before[n:])  # the rest untouched
    assert int(bank.ptr) == n


def test_moco_loss_is_infonce_against_the_queue(tiny_backbone, two_views):
    method = methods.get("mocov2", backbone=tiny_backbone, temperature=0.2, **small("mocov2")).eval()
    queue = method.criterion.memory_bank.bank.clone()
    out = method.training_step(batch_of(two_views))
    q = F.normalize(method.projector(method.backbone(two_views[0])), dim=1)
    k = F.normalize(method.target["projector"](method.target["backbone"](two_views[1])), dim=1)
    expected = 0.0
    for i in range(len(q)):
        pos = torch.exp(q[i] @ k[i] / 0.2)
        neg = torch.exp(queue @ q[i] / 0.2).sum()
        expected += -torch.log(pos / (pos + neg))
    torch.testing.assert_close(out.loss, expected / len(q), rtol=1e-5, atol=1e-5)


def test_simsiam_stop_gradient_and_fixed_predictor_lr(tiny_backbone, two_views):
    method = methods.get("simsiam", backbone=tiny_backbone, **small("simsiam"))
    groups = method.parameter_groups(weight_decay=1e-4)
    fixed = {id(p) for g in groups if g.get("fixed_lr") for p in g["params"]}
    assert fixed == {id(p) for p in method.predictor.parameters()}
    # the loss is D(p0, sg(z1))/2 + D(p1, sg(z0))/2: gradients reach z only through p
    method.eval()
    out = method.training_step(batch_of(two_views))
    z = method.projector(method.backbone(torch.cat(two_views)))
    p0, p1 = method.predictor(z).chunk(2)
    z0, z1 = z.detach().chunk(2)
    expected = -(F.cosine_similarity(p0, z1).mean() + F.cosine_similarity(p1, z0).mean()) / 2
    torch.testing.assert_close(out.loss, expected)
    assert method.projector[-1].affine is False  # output BN without affine, as the official code


def test_simclr_loss_matches_ntxent_on_projections(tiny_backbone, two_views):
    method = methods.get("simclr", backbone=tiny_backbone, temperature=0.5, **small("simclr")).eval()
    out = method.training_step(batch_of(two_views))
    z = F.normalize(method.projector(method.backbone(torch.cat(two_views))), dim=1)
    n2 = len(z)
    sim = torch.exp(z @ z.T / 0.5)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        total += -torch.log(sim[i, j] / (sim[i].sum() - sim[i, i]))
    torch.testing.assert_close(out.loss, total / n2, rtol=1e-5, atol=1e-5)


def test_unknown_method_and_option_errors(tiny_backbone):
    from selfsup.errors import ConfigError, UnknownNameError

    with pytest.raises(UnknownNameError, match="Did you mean: simclr"):
        methods.get("simclrr", backbone=tiny_backbone)
    with pytest.raises(ConfigError, match="temperature"):
        methods.get("simclr", backbone=tiny_backbone, temprature=0.1)
