"""iBOT, I-JEPA and DINOv2: losses vs float64 loop references written from the papers, masking
generators, what the encoders may see, teacher / centre state, and two-step smoke runs."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import selfsup.backbones as backbones
import selfsup.methods as methods
from selfsup.losses.ibot import SinkhornDistillationLoss, iBOTPatchLoss
from selfsup.losses.ijepa import JEPALoss
from selfsup.losses.koleo import KoLeoLoss
from selfsup.methods import ViewBatch
from selfsup.nn.jepa_blocks import block_size, jepa_masks
from method_sizes import small


def vit():
    torch.manual_seed(0)
    return backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2)


def views_of(n_global=2, n_local=1, batch=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(n_global)] + [
        torch.randn(batch, 3, 8, 8, generator=g) for _ in range(n_local)]


def batch_of(views):
    n = len(views[0])
    return ViewBatch(views=views, labels=torch.zeros(n, dtype=torch.long), indices=torch.arange(n))


def engine_steps(method, views, steps=2, lr=0.1):
    """The engine's hook order: configure_training, on_epoch_start, then per step begin_step,
    training_step, backward, on_after_backward, optimizer step, end_step."""
    method.configure_training(1, steps)
    opt = torch.optim.SGD([g for g in method.parameter_groups(0.0) if g["params"]], lr=lr)
    method.on_epoch_start(0, lambda: torch.zeros(0))
    outs = []
    for step in range(steps):
        progress = method.begin_step(step)
        out = method.training_step(batch_of(views))
        opt.zero_grad()
        out.loss.backward()
        method.on_after_backward(progress)
        opt.step()
        method.end_step()
        outs.append(out)
    return outs


# ---------------------------------------------------------------- losses vs loop references


def test_ibot_patch_loss_matches_loop_reference_and_centre_update():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 5, 7, generator=g), torch.randn(2, 3, 5, 7, generator=g)
    masks = torch.rand(2, 3, 5, generator=g) < 0.5
    masks[0, 0] = False  # an image without masked patches contributes 0
    loss_fn = iBOTPatchLoss(7, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, 7, generator=g))
    c0 = loss_fn.center.clone().double()
    loss = loss_fn(s, t, masks, teacher_temp=0.05)
    total = 0.0
    for v in range(2):
        for b in range(3):
            acc, count = 0.0, 0
            for i in range(5):
                if masks[v, b, i]:
                    e = [math.exp((t[v, b, i, k].item() - c0[0, k].item()) / 0.05) for k in range(7)]
                    z = sum(math.exp(s[v, b, i, k].item() / 0.1) for k in range(7))
                    acc += -sum(e[k] / sum(e) * math.log(math.exp(s[v, b, i, k].item() / 0.1) / z) for k in range(7))
                    count += 1
            total += acc / max(count, 1)
    assert loss.item() == pytest.approx(total / 6, abs=1e-5)
    expected_centre = 0.9 * c0 + 0.1 * t.double().reshape(-1, 7).mean(0)
    torch.testing.assert_close(loss_fn.center.double(), expected_centre, atol=1e-6, rtol=0)
    masked_only = iBOTPatchLoss(7, center_masked_only=True)
    masked_only(s, t, masks, teacher_temp=0.05)
    torch.testing.assert_close(masked_only.center, 0.1 * t[masks].mean(0, keepdim=True), atol=1e-6, rtol=0)


def test_ibot_patch_loss_reads_only_masked_student_patches():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 3, 5, 7, generator=g), torch.randn(2, 3, 5, 7, generator=g)
    masks = torch.rand(2, 3, 5, generator=g) < 0.5
    for centering in ("center", "sinkhorn_knopp"):
        loss_fn = iBOTPatchLoss(7, centering=centering).eval()
        changed = s.clone()
        changed[~masks] += 10 * torch.randn(int((~masks).sum()), 7, generator=g)
        assert loss_fn(changed, t, masks, 0.07).item() == pytest.approx(loss_fn(s, t, masks, 0.07).item(), abs=1e-6)
        changed = s.clone()
        changed[masks] += 1.0 * torch.randn(int(masks.sum()), 7, generator=g)
        assert loss_fn(changed, t, masks, 0.07).item() != pytest.approx(loss_fn(s, t, masks, 0.07).item(), abs=1e-4)


def reference_sinkhorn(scores, eps, iterations):
    q = [[math.exp(scores[b][k] / eps) for b in range(len(scores))] for k in range(len(scores[0]))]
    kk, bb = len(q), len(q[0])
    tot = sum(map(sum, q))
    q = [[x / tot for x in row] for row in q]
    for _ in range(iterations):
        q = [[x / sum(row) / kk for x in row] for row in q]
        cols = [sum(q[k][b] for k in range(kk)) for b in range(bb)]
        q = [[q[k][b] / cols[b] / bb for b in range(bb)] for k in range(kk)]
    return [[q[k][b] * bb for k in range(kk)] for b in range(bb)]


def test_sinkhorn_distillation_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(3, 4, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    loss = SinkhornDistillationLoss(student_temp=0.1)(s, t, teacher_temp=0.5)
    codes = reference_sinkhorn(t.double().reshape(8, 5).tolist(), 0.5, 3)
    terms = []
    for gv in range(2):
        for v in range(3):
            if v == gv:
                continue
            acc = 0.0
            for b in range(4):
                z = sum(math.exp(s[v, b, k].item() / 0.1) for k in range(5))
                acc += -sum(codes[gv * 4 + b][k] * math.log(math.exp(s[v, b, k].item() / 0.1) / z) for k in range(5))
            terms.append(acc / 4)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), abs=1e-5)


def test_koleo_matches_loop_reference():
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(3))
    rows = [[v / math.sqrt(sum(u * u for u in r)) for v in r] for r in x.double().tolist()]
    ref = 0.0
    for i, r in enumerate(rows):
        d = min(math.sqrt(sum((a - b) ** 2 for a, b in zip(r, o))) for j, o in enumerate(rows) if j != i)
        ref += -math.log(d + 1e-8)
    assert KoLeoLoss()(x).item() == pytest.approx(ref / 7, abs=1e-5)


def test_jepa_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(4)
    p, t = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    ref = sum((a - b) ** 2 for a, b in zip(p.double().flatten().tolist(), t.double().flatten().tolist()))
    assert JEPALoss()(p, t).item() == pytest.approx(ref / p.numel(), abs=1e-5)
    huber = sum(0.5 * d * d if abs(d) < 1 else abs(d) - 0.5 for d in (p - t).double().flatten().tolist())
    assert JEPALoss("smooth_l1")(p, t).item() == pytest.approx(huber / p.numel(), abs=1e-5)


# ---------------------------------------------------------------- masking generators


def test_jepa_masks_sizes_in_range_and_context_disjoint_from_targets():
    g = torch.Generator().manual_seed(7)
    for _ in range(20):
        context, targets = jepa_masks(8, 14, 14, generator=g)
        b, m, t = targets.shape
        assert (b, m) == (8, 4)
        assert 0.15 * 196 * 0.7 <= t <= 0.2 * 196 * 1.01  # h * w rounds int(N * s)
        assert context.shape[1] > 10
        for i in range(b):
            assert set(context[i].tolist()).isdisjoint(set(targets[i].flatten().tolist()))
            assert len(set(context[i].tolist())) == context.shape[1]
            rows = {int(k) // 14 for k in targets[i, 0]}
            cols = {int(k) % 14 for k in targets[i, 0]}
            assert len(rows) * len(cols) == t  # a rectangle
    for _ in range(50):
        h, w = block_size(14, 14, (0.15, 0.2), (0.75, 1.5), g)
        assert 0.15 * 196 - 4 <= h * w <= 0.2 * 196 + 4 and 0.5 <= h / w <= 2.0


# ---------------------------------------------------------------- what the encoders see


def test_ibot_student_never_sees_masked_patch_pixels(monkeypatch):
    method = methods.get("ibot", backbone=vit(), **small("ibot"))
    fixed = torch.zeros(6, 16, dtype=torch.bool)
    fixed[:, [0, 1, 4, 5]] = True
    monkeypatch.setattr(method, "sample_masks", lambda b, gh, gw: fixed.clone())
    views = views_of()
    out = method.training_step(batch_of(views))
    changed = [v.clone() for v in views]
    changed[0][:, :, :8, :8] += 5.0  # exactly the masked patches 0, 1, 4, 5 of a 4x4 grid
    out2 = method.training_step(batch_of(changed))
    torch.testing.assert_close(out.features, out2.features)
    changed[0][:, :, 12:, 12:] += 5.0  # an unmasked patch does change the student
    assert not torch.allclose(method.training_step(batch_of(changed)).features, out.features)


def test_ijepa_target_patches_never_reach_the_context_encoder():
    method = methods.get("ijepa", backbone=vit(), **small("ijepa"))
    seen = []
    method.predictor.register_forward_hook(lambda mod, args, out: seen.append((args[0].clone(), args[1].clone())))
    images = views_of(1, 0)[0]
    torch.manual_seed(11)
    method.training_step(batch_of([images]))
    context, idx = seen[-1]
    outside = torch.ones(6, 16, dtype=torch.bool)
    outside[torch.arange(6).unsqueeze(1), idx] = False
    changed = images.clone()
    pix = outside.reshape(6, 4, 4).repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
    changed = torch.where(pix, changed + 5.0, changed)
    torch.manual_seed(11)
    method.training_step(batch_of([changed]))
    assert torch.equal(seen[-1][1], idx)
    torch.testing.assert_close(seen[-1][0], context)


def test_methods_reject_non_vit_backbones():
    for name in ("ibot", "ijepa", "dinov2"):
        with pytest.raises(TypeError, match="VisionTransformer"):
            methods.get(name, backbone=backbones.get("resnet_tiny", width=4), **small(name))


# ---------------------------------------------------------------- state and smoke runs


@pytest.mark.parametrize("name,extra", [("ibot", {}), ("ibot", {"shared_head": False, "patch_out_dim": 24}),
                                        ("dinov2", {}), ("ijepa", {})])
def test_two_step_smoke_on_tiny_vit(name, extra):
    method = methods.get(name, backbone=vit(), **small(name, **extra))
    before = copy.deepcopy(method.backbone.state_dict())
    views = views_of(1, 0, batch=4) if name == "ijepa" else views_of(batch=4)
    outs = engine_steps(method, views)
    assert all(torch.isfinite(o.loss) for o in outs)
    assert any(not torch.equal(before[k], v) for k, v in method.backbone.state_dict().items())


def test_ibot_teacher_ema_centres_and_frozen_last_layer():
    method = methods.get("ibot", backbone=vit(), **small("ibot"))
    method.configure_training(1, 2)
    views = views_of()
    progress = method.begin_step(0)
    out = method.training_step(batch_of(views))
    assert float(method.criterion.center.abs().sum()) > 0 and float(method.patch_criterion.center.abs().sum()) > 0
    out.loss.backward()
    method.on_after_backward(progress)
    assert method.head.cls_head.last_layer.weight_v.grad is None  # frozen during the first epoch
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.01)
    teacher_before = {k: v.clone() for k, v in method.teacher["backbone"].state_dict().items()}
    method.end_step()
    for (k, t), (_, s) in zip(method.teacher["backbone"].named_parameters(), method.backbone.named_parameters()):
        torch.testing.assert_close(t, 0.996 * teacher_before[k] + 0.004 * s)


def test_dinov2_adds_koleo_on_student_class_tokens():
    method = methods.get("dinov2", backbone=vit(), **small("dinov2")).eval()  # eval: centres stay put
    views = views_of()
    torch.manual_seed(3)
    with_koleo = method.training_step(batch_of(views))
    method.koleo_weight = 0.0
    torch.manual_seed(3)
    without = method.training_step(batch_of(views))
    koleo = with_koleo.logs["loss_koleo"]
    assert koleo > 0
    assert with_koleo.loss.item() - without.loss.item() == pytest.approx(0.1 * koleo, abs=1e-4)


def test_dinov2_sinkhorn_centering_leaves_centres_and_uses_codes():
    method = methods.get("dinov2", backbone=vit(), centering="sinkhorn_knopp", **small("dinov2"))
    assert isinstance(method.criterion, SinkhornDistillationLoss)
    engine_steps(method, views_of())
    assert float(method.patch_criterion.center.abs().sum()) == 0.0


def test_ijepa_target_encoder_follows_linear_momentum():
    method = methods.get("ijepa", backbone=vit(), **small("ijepa"))
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.01)
    before = [t.clone() for t in method.target_encoder.parameters()]
    method.configure_training(epochs=1, steps_per_epoch=2)
    method.begin_step(1)  # progress 0.5
    method.end_step()
    assert method.target_encoder.momentum == pytest.approx(0.998)
    for b, t, s in zip(before, method.target_encoder.parameters(), method.backbone.parameters()):
        torch.testing.assert_close(t, 0.998 * b + 0.002 * s)
