"""The engine's optimizer pieces against their formulas."""
from __future__ import annotations

import math

import pytest
import torch

from selfsup.engine.lars import LARS
from selfsup.engine.optim import OptimizerConfig, build_optimizer, clip_gradients
from selfsup.engine.schedule import scaled_lr, warmup_cosine
from selfsup.errors import ConfigError


def test_scaled_lr_rules():
    assert scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(4.8)
    assert scaled_lr(0.5, 4096, "none") == 0.5
    with pytest.raises(ConfigError, match="lr_scaling"):
        scaled_lr(0.1, 256, "quadratic")


def test_warmup_cosine_shape():
    total, warm = 110, 10
    assert warmup_cosine(0, total, warm) == pytest.approx(0.1)
    assert warmup_cosine(9, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(10, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(60, total, warm) == pytest.approx(0.5)
    assert warmup_cosine(110, total, warm) == pytest.approx(0.0)
    assert warmup_cosine(110, total, warm, final_fraction=0.1) == pytest.approx(0.1)
    mid = warmup_cosine(35, total, warm)
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 25 / 100)))


def test_lars_step_matches_formula():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.randn(4))
    grads = [torch.randn(4, 3), torch.randn(4)]
    lr, wd, eta, mom = 0.5, 1e-2, 0.001, 0.9
    opt = LARS([{"params": [w]}, {"params": [b], "lars_exclude": True, "weight_decay": 0.0}],
               lr=lr, momentum=mom, weight_decay=wd, eta=eta)
    w0, b0 = w.detach().clone(), b.detach().clone()
    bufs = [torch.zeros(4, 3), torch.zeros(4)]
    for step in range(2):
        w_ref, b_ref = w.detach().clone(), b.detach().clone()
        w.grad, b.grad = grads[0].clone(), grads[1].clone()
        opt.step()
        update = grads[0] + wd * w_ref
        trust = eta * w_ref.norm() / update.norm()
        bufs[0] = update * trust if step == 0 else mom * bufs[0] + update * trust
        bufs[1] = grads[1].clone() if step == 0 else mom * bufs[1] + grads[1]
        torch.testing.assert_close(w.detach(), w_ref - lr * bufs[0])
        torch.testing.assert_close(b.detach(), b_ref - lr * bufs[1])
    assert not torch.equal(w.detach(), w0) and not torch.equal(b.detach(), b0)


def test_build_optimizer_groups_and_peak_lr():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    decay = [model[0].weight]
    no_decay = [model[0].bias, model[1].weight, model[1].bias]
    groups = [{"params": decay, "weight_decay": 1e-4},
              {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]
    opt = build_optimizer(groups, OptimizerConfig(name="lars", lr=0.3, weight_decay=1e-4), batch_size=512)
    assert [g["peak_lr"] for g in opt.param_groups] == [pytest.approx(0.6)] * 2
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert [g["lars_exclude"] for g in opt.param_groups] == [False, True]
    sgd = build_optimizer(groups, OptimizerConfig(name="sgd", exclude_bias_and_norm=False, weight_decay=1e-4), 256)
    assert isinstance(sgd, torch.optim.SGD)
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-4, 1e-4]
    adamw = build_optimizer(groups, OptimizerConfig(name="adamw", lr=1e-3, lr_scaling="none"), 256)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 1e-3


def test_schedule_decays_all_groups_but_fixed_lr(tiny_backbone):
    import selfsup.augment as augment
    import selfsup.methods as methods
    from selfsup.engine.module import SelfSupervisedModule

    method = methods.get("simsiam", backbone=tiny_backbone, proj_dim=16, pred_hidden_dim=8)
    module = SelfSupervisedModule(method, augment.get("mocov2", size=16, mean=(0.5,) * 3, std=(0.5,) * 3),
                                  OptimizerConfig(lr=0.05, warmup_epochs=1), batch_size=512, steps_per_epoch=10,
                                  epochs=5, num_classes=3)
    optimizers = module.configure_optimizers()
    peak = 0.05 * 512 / 256
    for step, factor in [(0, 0.1), (9, 1.0), (30, 0.5), (40, 0.5 * (1 + math.cos(math.pi * 30 / 40)))]:
        assert module.set_learning_rates(optimizers, step) == pytest.approx(factor)
        for group in optimizers[0].param_groups:
            expected = peak if group["name"].startswith("predictor_") else peak * factor
            assert group["lr"] == pytest.approx(expected), group["name"]


def test_clip_gradients_scales_the_global_norm_and_returns_it_before_clipping():
    a, b, c = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])  # global norm 5; c has no gradient
    assert float(clip_gradients([a, b, c], 1.0)) == pytest.approx(5.0)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.0])) and torch.allclose(b.grad, torch.tensor([0.0, 0.8]))
    assert float(clip_gradients([a, b], 10.0)) == pytest.approx(1.0) and torch.allclose(a.grad, torch.tensor([0.6, 0.0]))
    with pytest.raises(ConfigError, match="clip_grad_norm"):
        from selfsup.config import load

        load(overrides=["optimizer.clip_grad_norm=-1"])
