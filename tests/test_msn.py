"""MSN, PMSN and MoCo v3's frozen ViT patch projection: the loss vs a float64 loop reference
written from the papers (official-code style sharpening and Sinkhorn), patch dropping, the EMA
target, prototype groups, two-step smoke runs in the engine's hook order, the view recipe."""
from __future__ import annotations

import math

import pytest
import torch

import selfsup.augment as augment
import selfsup.backbones as backbones
import selfsup.methods as methods
from selfsup.losses.msn import MSNLoss, power_law_prior
from selfsup.methods import ViewBatch
from selfsup.nn.masking import random_masking
from selfsup.nn.prototypes import CosinePrototypes
from method_sizes import small


def tiny_vit() -> backbones.Backbone:
    torch.manual_seed(0)
    return backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2)


def msn_views(batch: int = 4, num_random: int = 1, num_focal: int = 2, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(1 + num_random)] + [
        torch.randn(batch, 3, 8, 8, generator=g) for _ in range(num_focal)
    ]


def batch_of(views: list[torch.Tensor]) -> ViewBatch:
    n = len(views[0])
    return ViewBatch(views=views, labels=torch.arange(n) % 3, indices=torch.arange(n))


def engine_steps(method: methods.Method, views: list[torch.Tensor], steps: int = 2, lr: float = 0.1) -> list:
    """The engine's hook order: configure_training, on_epoch_start, then per step begin_step,
    training_step, backward, on_after_backward, optimizer step, end_step."""
    method.configure_training(1, steps)
    method.on_epoch_start(0, lambda: torch.zeros(0))
    opt = torch.optim.SGD([g for g in method.parameter_groups(0.0) if g["params"]], lr=lr)
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


# ----------------------------------------------------------------------------- loss reference


def reference_msn_loss(anchors, targets, prototypes, tau, sharpen_t, sinkhorn_iters, weight, prior):
    """Slow float64 loops over the MSN paper's Eq. 1-2 and the official code's target steps:
    p = softmax(cos / tau); p+ = p^(1/T) / sum (then Sinkhorn from p+); CE over every anchor view
    and image; + weight * sum_k p_bar_k log(p_bar_k / prior_k)."""
    anchors, targets, prototypes = anchors.double(), targets.double(), prototypes.double()
    num_views, batch, _ = anchors.shape
    k_count = prototypes.shape[0]

    def unit(v):
        return [float(x) / math.sqrt(sum(float(y) ** 2 for y in v)) for x in v]

    protos = [unit(q) for q in prototypes]

    def probs(z):
        zu = unit(z)
        logits = [sum(a * b for a, b in zip(zu, q)) / tau for q in protos]
        top = max(logits)
        e = [math.exp(x - top) for x in logits]
        return [x / sum(e) for x in e]

    tgt = []
    for i in range(batch):
        p = probs(targets[i])
        sharp = [x ** (1.0 / sharpen_t) for x in p]
        tgt.append([x / sum(sharp) for x in sharp])
    if sinkhorn_iters:
        q = [[tgt[i][k] for i in range(batch)] for k in range(k_count)]  # (K, B)
        total = sum(sum(row) for row in q)
        q = [[x / total for x in row] for row in q]
        for _ in range(sinkhorn_iters):
            q = [[x / sum(row) / k_count for x in row] for row in q]
            cols = [sum(q[k][i] for k in range(k_count)) for i in range(batch)]
            q = [[q[k][i] / cols[i] / batch for i in range(batch)] for k in range(k_count)]
        tgt = [[q[k][i] * batch for k in range(k_count)] for i in range(batch)]
    ce, mean_p = 0.0, [0.0] * k_count
    for a in range(num_views):
        for i in range(batch):
            p = probs(anchors[a, i])
            ce -= sum(t * math.log(x) for t, x in zip(tgt[i], p))
            mean_p = [m + x for m, x in zip(mean_p, p)]
    rows = num_views * batch
    ce /= rows
    mean_p = [m / rows for m in mean_p]
    reg = sum(m * math.log(m / pk) for m, pk in zip(mean_p, prior))
    return ce + weight * reg


@pytest.mark.parametrize("prior_name,sinkhorn_iters", [("uniform", 3), ("uniform", 0), ("power_law", 0), ("power_law", 3)])
def test_msn_loss_matches_loop_reference(prior_name, sinkhorn_iters):
    g = torch.Generator().manual_seed(0)
    anchors, targets = torch.randn(3, 5, 6, generator=g), torch.randn(5, 6, generator=g)
    prototypes = CosinePrototypes(7, 6).double()
    with torch.no_grad():
        prototypes.weight.copy_(torch.randn(7, 6, generator=g))
    loss_fn = MSNLoss(0.1, 0.25, sinkhorn_iters, 0.7, prior_name, power_law_exponent=0.25)
    got = loss_fn(prototypes(anchors.double().reshape(15, 6)).reshape(3, 5, 7), prototypes(targets.double()))
    k = torch.arange(1, 8, dtype=torch.float64)
    prior = (k ** -0.25 / (k ** -0.25).sum()).tolist() if prior_name == "power_law" else [1 / 7] * 7
    want = reference_msn_loss(anchors, targets, prototypes.weight.detach(), 0.1, 0.25, sinkhorn_iters, 0.7, prior)
    assert got.dtype == torch.float64
    assert abs(got.item() - want) < 1e-5


def test_me_max_is_log_k_minus_mean_entropy():
    g = torch.Generator().manual_seed(3)
    anchor_scores, target_scores = torch.rand(2, 6, 5, generator=g) * 2 - 1, torch.rand(6, 5, generator=g) * 2 - 1
    terms = MSNLoss(temperature=0.1, sinkhorn_iterations=0)(anchor_scores, target_scores), \
        MSNLoss(temperature=0.1, sinkhorn_iterations=0).terms(anchor_scores, target_scores)
    mean_p = torch.softmax(anchor_scores / 0.1, dim=-1).mean(dim=(0, 1))
    entropy = -(mean_p * mean_p.log()).sum()
    assert torch.allclose(terms[1]["regularizer"], math.log(5) - entropy, atol=1e-6)
    assert torch.allclose(terms[0], terms[1]["cross_entropy"] + terms[1]["regularizer"])


def test_msn_targets_carry_no_gradient_and_are_sharpened():
    g = torch.Generator().manual_seed(4)
    anchor_scores = (torch.rand(1, 4, 6, generator=g) * 2 - 1).requires_grad_(True)
    target_scores = (torch.rand(4, 6, generator=g) * 2 - 1).requires_grad_(True)
    loss_fn = MSNLoss(sinkhorn_iterations=0)
    loss_fn(anchor_scores, target_scores).backward()
    assert target_scores.grad is None and anchor_scores.grad.abs().sum() > 0
    # sharpening p^(1/T) of softmax(s / tau) equals softmax(s / (tau T))
    p = torch.softmax(target_scores.detach() / 0.1, dim=-1) ** 4
    assert torch.allclose(loss_fn.targets(target_scores.detach()), p / p.sum(-1, keepdim=True), atol=1e-6)


def test_power_law_prior_values():
    got = power_law_prior(3, 0.25, dtype=torch.float64)
    raw = torch.tensor([1.0, 2.0 ** -0.25, 3.0 ** -0.25], dtype=torch.float64)
    assert torch.allclose(got, raw / raw.sum())
    assert torch.allclose(power_law_prior(4, 0.0), torch.full((4,), 0.25))
    with pytest.raises(ValueError):
        power_law_prior(3, -1.0)


def test_pmsn_regularizer_is_zero_at_the_prior_and_positive_elsewhere():
    loss_fn = MSNLoss(sinkhorn_iterations=0, prior="power_law", temperature=1.0)
    prior = power_law_prior(5, 0.25, dtype=torch.float64)
    # anchor scores whose softmax (temperature 1) is exactly the prior
    at_prior = loss_fn.terms(prior.log().expand(1, 3, 5), torch.zeros(3, 5, dtype=torch.float64))
    uniform = loss_fn.terms(torch.zeros(1, 3, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64))
    assert abs(at_prior["regularizer"].item()) < 1e-12 and uniform["regularizer"].item() > 1e-3


# ----------------------------------------------------------------------------- masking


def test_dropped_patches_never_reach_the_encoder_and_kept_ones_do():
    method = methods.get("msn", backbone=tiny_vit(), mask_ratio=0.5, **small("msn"))
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(7)
    keep, _, _ = random_masking(2, 16, 0.5)
    assert keep.shape == (2, 8)  # exactly half the patches of each sample enter the encoder
    dropped = sorted(set(range(16)) - set(keep[0].tolist()))
    torch.manual_seed(7)
    base = method.masked_anchor_features(x)

    def with_patch_changed(patch: int) -> torch.Tensor:
        y = x.clone()
        r, c = divmod(patch, 4)
        y[0, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 5.0
        torch.manual_seed(7)
        return method.masked_anchor_features(y)

    assert torch.equal(with_patch_changed(dropped[0]), base)
    assert not torch.allclose(with_patch_changed(int(keep[0, 0])), base)


def test_training_loss_ignores_dropped_patches_of_the_masked_anchor():
    method = methods.get("msn", backbone=tiny_vit(), mask_ratio=0.5, **small("msn"))
    views = msn_views(batch=4, num_focal=1)
    torch.manual_seed(11)
    keep, _, _ = random_masking(4, 16, 0.5)  # the first random draw of a training step
    dropped = sorted(set(range(16)) - set(keep[1].tolist()))

    def loss_with(views_: list[torch.Tensor]) -> torch.Tensor:
        torch.manual_seed(11)
        return method.training_step(batch_of(views_)).loss.detach()

    base = loss_with(views)
    changed = [v.clone() for v in views]
    r, c = divmod(dropped[0], 4)
    changed[1][1, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 9.0  # view 1 is the masked anchor
    assert torch.equal(loss_with(changed), base)
    kept = int(keep[1, 0])
    r, c = divmod(kept, 4)
    changed[1][1, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 9.0
    assert not torch.equal(loss_with(changed), base)


def test_only_the_random_anchors_are_masked_focal_views_are_not():
    method = methods.get("msn", backbone=tiny_vit(), **small("msn"))
    assert method.num_masked_views(msn_views(num_random=1, num_focal=3)) == 1
    assert method.num_masked_views(msn_views(num_random=2, num_focal=1)) == 2
    assert method.num_masked_views(msn_views(num_random=1, num_focal=0)) == 1
    calls = []
    original = method.backbone.forward_tokens

    def spy(images, *, keep=None, mask=None):
        calls.append((tuple(images.shape), None if keep is None else tuple(keep.shape)))
        return original(images, keep=keep, mask=mask)

    method.backbone.forward_tokens = spy  # the online encoder only; the target has its own copy
    method.training_step(batch_of(msn_views(batch=4, num_random=1, num_focal=2)))
    # one masked call for the random anchor (floor(16 * 0.85) = 13 patches), focal views unmasked
    assert calls == [((4, 3, 16, 16), (4, 13)), ((8, 3, 8, 8), None)]


def test_msn_needs_a_vit_and_patch_multiple_views():
    with pytest.raises(TypeError, match="VisionTransformer"):
        methods.get("msn", backbone=backbones.get("resnet_tiny", width=4), **small("msn"))
    method = methods.get("pmsn", backbone=tiny_vit(), **small("pmsn"))
    bad = msn_views(num_focal=0) + [torch.randn(4, 3, 6, 6)]
    with pytest.raises(ValueError, match="multiples of the patch size"):
        method.training_step(batch_of(bad))


# ----------------------------------------------------------------------------- state and smoke


@pytest.mark.parametrize("name", ["msn", "pmsn"])
def test_two_engine_steps_train_backbone_prototypes_and_ema_target(name):
    method = methods.get(name, backbone=tiny_vit(), **small(name))
    before = {k: v.detach().clone() for k, v in method.state_dict().items()}
    method.configure_training(1, 2)
    method.on_epoch_start(0, lambda: torch.zeros(0))
    opt = torch.optim.SGD([g for g in method.parameter_groups(0.0) if g["params"]], lr=0.1)
    views = msn_views()
    for step in range(2):
        progress = method.begin_step(step)
        out = method.training_step(batch_of(views))
        assert torch.isfinite(out.loss) and out.features.shape == (4, 192)
        opt.zero_grad()
        out.loss.backward()
        assert all(p.grad is None for p in method.teacher.parameters())
        method.on_after_backward(progress)
        opt.step()
        online = {k: v.detach().clone() for k, v in method.named_parameters()}
        target_before = {k: v.detach().clone() for k, v in method.teacher.named_parameters()}
        method.end_step()
        m = 0.996 + 0.004 * (step / 2) / 1.25
        assert method.teacher.momentum == pytest.approx(m) and method.state_logs() == {"momentum": method.teacher.momentum}
        for key, value in method.teacher.named_parameters():  # exact EMA of the online networks
            want = m * target_before[key] + (1 - m) * online[key]
            assert torch.allclose(value, want, atol=1e-7), key
    after = method.state_dict()
    assert not torch.equal(after["backbone.blocks.0.qkv.weight"], before["backbone.blocks.0.qkv.weight"])
    assert not torch.equal(after["prototypes.weight"], before["prototypes.weight"])
    assert not torch.equal(after["teacher.backbone.blocks.0.qkv.weight"], before["teacher.backbone.blocks.0.qkv.weight"])


def test_momentum_schedule_is_linear_over_one_and_a_quarter_runs():
    method = methods.get("msn", backbone=tiny_vit(), **small("msn"))
    assert method.teacher.momentum_at(0.0) == pytest.approx(0.996)
    assert method.teacher.momentum_at(0.5) == pytest.approx(0.996 + 0.004 * 0.4)
    assert method.teacher.momentum_at(1.0) == pytest.approx(0.9992)


def test_prototypes_have_their_own_group_without_weight_decay():
    method = methods.get("msn", backbone=tiny_vit(), **small("msn"))
    groups = {g["name"]: g for g in method.parameter_groups(0.04)}
    assert groups["prototypes"]["params"] == [method.prototypes.weight]
    assert groups["prototypes"]["weight_decay"] == 0.0 and groups["prototypes"]["lars_exclude"]
    assert groups["decay"]["weight_decay"] == 0.04
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert set(grouped) == trainable  # every trainable parameter once, the frozen target nowhere
    sizes = small("msn")
    bound = 1 / math.sqrt(sizes["output_dim"])
    fresh = methods.get("msn", backbone=tiny_vit(), **sizes).prototypes.weight
    assert fresh.abs().max() <= bound and fresh.shape == (sizes["num_prototypes"], sizes["output_dim"])


def test_pmsn_defaults_and_msn_defaults_are_the_papers():
    msn = methods.get("msn", backbone=tiny_vit())
    pmsn = methods.get("pmsn", backbone=tiny_vit())
    assert msn.prototypes.weight.shape == (1024, 256) and msn.criterion.prior == "uniform"
    assert msn.criterion.sinkhorn_iterations == 3 and msn.mask_ratio == 0.15
    assert (msn.criterion.temperature, msn.criterion.sharpen_temperature) == (0.1, 0.25)
    assert pmsn.criterion.prior == "power_law" and pmsn.criterion.power_law_exponent == 0.25
    assert pmsn.default_views == "msn"


def test_msn_recipe_views():
    views = augment.RECIPES.get("msn", size=32, focal_size=16, num_focal=4)
    assert [s.size for s in views.specs] == [32, 16] and list(views.counts) == [2, 4]
    assert views.specs[0].scale == (0.3, 1.0) and views.specs[1].scale == (0.05, 0.3)
    assert views.specs[0].jitter == pytest.approx((0.4, 0.4, 0.4, 0.1)) and views.specs[1].blur_p == 0.5
    for size, focal in [(224, 96), (32, 16), (28, 12), (16, 8)]:  # 96/224 of size, up to a multiple of 4
        assert [s.size for s in augment.RECIPES.get("msn", size=size).specs] == [size, focal]
    assert list(augment.RECIPES.get("msn", size=32, num_focal=0).counts) == [2]


# ----------------------------------------------------------------------------- MoCo v3 on a ViT


def test_mocov3_freezes_the_vit_patch_projection():
    small = dict(proj_hidden_dim=16, proj_output_dim=8, pred_hidden_dim=16, proj_num_layers=3,
                 pred_last_batch_norm=True, temperature=0.2)
    method = methods.get("mocov3", backbone=tiny_vit(), freeze_patch_embed=True, **small)
    patch_before = [p.detach().clone() for p in method.backbone.patch_embed.parameters()]
    block_before = method.backbone.blocks[0].qkv.weight.detach().clone()
    grouped = {id(p) for g in method.parameter_groups(0.0) for p in g["params"]}
    assert not any(id(p) in grouped for p in method.backbone.patch_embed.parameters())
    g = torch.Generator().manual_seed(2)
    views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)]
    outs = engine_steps(method, views)
    assert all(torch.isfinite(o.loss) for o in outs)
    for before, after in zip(patch_before, method.backbone.patch_embed.parameters()):
        assert torch.equal(before, after)
    for before, after in zip(patch_before, method.target["backbone"].patch_embed.parameters()):
        assert torch.allclose(before, after, atol=1e-7)  # an EMA of equal values, up to rounding
    assert not torch.equal(block_before, method.backbone.blocks[0].qkv.weight)
    # without the option the projection trains
    free = methods.get("mocov3", backbone=tiny_vit(), **small)
    free_before = free.backbone.patch_embed.weight.detach().clone()
    engine_steps(free, views)
    assert not torch.equal(free_before, free.backbone.patch_embed.weight)
    with pytest.raises(TypeError, match="VisionTransformer"):
        methods.get("mocov3", backbone=backbones.get("resnet_tiny", width=4), freeze_patch_embed=True)
