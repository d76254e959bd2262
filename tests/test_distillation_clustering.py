"""DINO, ReSSL, SwAV and the multi-crop recipes: losses vs float64 loop references written from the
papers, Sinkhorn-Knopp, state updates (teacher EMA, centre, queues, prototypes), smoke runs and
two-process equivalence."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from distributed import run_distributed
from method_sizes import small

import selfsup.augment as augment
import selfsup.methods as methods
from selfsup.losses.dino import DINOLoss
from selfsup.losses.ressl import ReSSLLoss
from selfsup.losses.swav import SwAVLoss
from selfsup.methods import ViewBatch
from selfsup.nn import cosine_momentum
from selfsup.nn.dino_head import DINOHead
from selfsup.nn.sinkhorn import sinkhorn

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def views_of(n_global: int = 2, n_local: int = 0, batch: int = 8, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(n_global)] + [
        torch.randn(batch, 3, 8, 8, generator=g) for _ in range(n_local)
    ]


def batch_of(views: list[torch.Tensor]) -> ViewBatch:
    n = len(views[0])
    return ViewBatch(views=views, labels=torch.arange(n) % 3, indices=torch.arange(n))


def engine_steps(method, views, steps=2, lr=0.1, epochs=1, steps_per_epoch=None, weight_decay=0.0, first_step=0):
    """The engine's hook order: configure_training, then per step on_epoch_start (at epoch starts),
    begin_step, training_step, backward, on_after_backward, optimizer step, end_step. The steps
    are ``first_step, first_step + 1, ...`` of the run (a later call continues a run)."""
    steps_per_epoch = steps_per_epoch or steps
    method.configure_training(epochs, steps_per_epoch)
    groups = [g for g in method.parameter_groups(weight_decay) if g["params"]]
    opt = torch.optim.SGD(groups, lr=lr)
    outs = []
    for step in range(first_step, first_step + steps):
        if step % steps_per_epoch == 0:
            method.on_epoch_start(step // steps_per_epoch, lambda: torch.zeros(0))
        progress = method.begin_step(step)
        out = method.training_step(batch_of(views))
        opt.zero_grad()
        out.loss.backward()
        method.on_after_backward(progress)
        opt.step()
        method.end_step()
        outs.append(out)
    return outs


# ------------------------------------------------------------------------------------ recipes


def test_multicrop_recipe_counts_sizes_order_and_probabilities():
    views = augment.get("multicrop", size=32, local_size=16, num_local=3, mean=MEAN, std=STD)
    assert list(views.counts) == [2, 3] and views.num_views == 5
    glob, loc = views.specs
    assert (glob.size, glob.scale, loc.size, loc.scale) == (32, (0.14, 1.0), 16, (0.05, 0.14))
    for spec in views.specs:  # SwAV: colour distortion of strength 1, blur 0.5, flip 0.5
        assert spec.jitter == (0.8, 0.8, 0.8, 0.2)
        probabilities = (spec.jitter_p, spec.gray_p, spec.blur_p, spec.hflip_p, spec.solarize_p)
        assert probabilities == (0.8, 0.2, 0.5, 0.5, 0.0)
    out = views(torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8))
    assert [tuple(v.shape[-2:]) for v in out] == [(32, 32)] * 2 + [(16, 16)] * 3  # global first
    assert augment.get("multicrop", size=224).specs[1].size == 96  # the paper's 224 / 96
    assert augment.get("multicrop", size=32, num_local=0).num_views == 2


def test_dino_recipe_follows_data_augmentation_dino():
    views = augment.get("dino", size=32, mean=MEAN, std=STD)
    assert list(views.counts) == [1, 1, 6]
    g1, g2, loc = views.specs
    assert [s.blur_p for s in views.specs] == [1.0, 0.1, 0.5]
    assert [s.solarize_p for s in views.specs] == [0.0, 0.2, 0.0]
    assert g1.scale == g2.scale == (0.4, 1.0) and loc.scale == (0.05, 0.4)
    for spec in views.specs:
        assert spec.jitter == (0.4, 0.4, 0.2, 0.1)
        assert (spec.jitter_p, spec.gray_p, spec.hflip_p) == (0.8, 0.2, 0.5)
    out = views(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert [v.shape[-1] for v in out] == [32, 32] + [14] * 6


def test_ressl_recipe_strong_then_weak():
    strong, weak = augment.get("ressl", size=32).specs
    assert (strong.jitter_p, strong.gray_p, strong.blur_p, strong.scale) == (0.8, 0.2, 0.5, (0.2, 1.0))
    assert (weak.jitter_p, weak.gray_p, weak.blur_p, weak.solarize_p) == (0.0, 0.0, 0.0, 0.0)
    assert weak.hflip_p == 0.5
    # the weak view of a uniform image is unchanged: crop + flip only
    views = augment.get("ressl", size=8, mean=(0.0,) * 3, std=(1.0,) * 3)
    image = torch.full((3, 3, 16, 16), 0.25)
    image[:, 1] = 0.5
    weak_view = views(image)[1]
    torch.testing.assert_close(weak_view, F.interpolate(image, size=8), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ DINO


def ref_dino(student, teacher, center, t_s, t_t):
    """DINO Alg. 1 with loops: mean over pairs (g, v != g) and samples of -sum P_t log P_s."""
    s, t, c = student.double(), teacher.double(), center.double().reshape(-1)
    total, pairs = 0.0, 0
    for g in range(t.shape[0]):
        for v in range(s.shape[0]):
            if v == g:
                continue
            term = 0.0
            for b in range(s.shape[1]):
                pt = torch.exp((t[g, b] - c) / t_t)
                pt = pt / pt.sum()
                ps = torch.exp(s[v, b] / t_s)
                log_ps = torch.log(ps / ps.sum())
                term += -(pt * log_ps).sum()
            total += term / s.shape[1]
            pairs += 1
    return total / pairs


def test_dino_loss_matches_reference_and_updates_centre():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 4, 7, generator=g), torch.randn(2, 4, 7, generator=g)
    loss_fn = DINOLoss(7, student_temp=0.1, center_momentum=0.9)
    centre0 = 0.3 * torch.randn(1, 7, generator=g)
    loss_fn.center.copy_(centre0)
    got = loss_fn(student, teacher, teacher_temp=0.04)
    want = ref_dino(student, teacher, centre0, 0.1, 0.04)
    assert float(got) == pytest.approx(float(want), abs=1e-5, rel=1e-5)
    mean_teacher = sum(teacher[i, b] for i in range(2) for b in range(4)) / 8
    torch.testing.assert_close(loss_fn.center, 0.9 * centre0 + 0.1 * mean_teacher.unsqueeze(0))
    loss_fn.eval()  # no centre update outside training
    before = loss_fn.center.clone()
    loss_fn(student, teacher, teacher_temp=0.04)
    torch.testing.assert_close(loss_fn.center, before)


def test_dino_head_normalised_bottleneck_and_unit_last_layer():
    head = DINOHead(12, out_dim=20, hidden_dim=16, bottleneck_dim=6)
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(20))
    assert not head.last_layer.weight_g.requires_grad
    x = torch.randn(3, 12)
    bottleneck = F.normalize(head.mlp(x), dim=1)
    torch.testing.assert_close(head(x), bottleneck @ head.last_layer.weight.T)
    assert DINOHead(12, out_dim=20, norm_last_layer=False).last_layer.weight_g.requires_grad


def test_dino_teacher_temperature_schedule(tiny_backbone):
    method = methods.get("dino", backbone=tiny_backbone, **small("dino"))
    assert method.teacher_temperature(0) == pytest.approx(0.04)
    assert method.teacher_temperature(15) == pytest.approx(0.04 + 0.03 * 15 / 29)  # linspace(.04, .07, 30)
    assert method.teacher_temperature(29) == pytest.approx(0.07)
    assert method.teacher_temperature(500) == pytest.approx(0.07)
    short = methods.get("dino", backbone=tiny_backbone, warmup_teacher_temp_epochs=3, **small("dino"))
    outs = engine_steps(short, views_of(batch=4), steps=4, epochs=4, steps_per_epoch=1)
    assert [o.logs["teacher_temp"] for o in outs] == pytest.approx([0.04, 0.055, 0.07, 0.07])


def test_dino_smoke_multicrop_and_teacher_sees_only_globals(tiny_backbone):
    method = methods.get("dino", backbone=tiny_backbone, **small("dino"))
    views = views_of(n_global=2, n_local=2)
    before = {k: v.detach().clone() for k, v in method.named_parameters() if v.requires_grad}
    seen = []
    method.teacher["backbone"].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    outs = engine_steps(method, views, steps=2)
    assert all(torch.isfinite(o.loss) for o in outs)
    changed = [k for k, v in method.named_parameters() if v.requires_grad and not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in changed)
    assert seen == [torch.Size([16, 3, 16, 16])] * 2  # the two global crops only
    assert outs[-1].features.shape == (8, method.feature_dim)


def test_dino_step_matches_formula_ema_and_centre(tiny_backbone):
    method = methods.get("dino", backbone=tiny_backbone, base_momentum=0.9, **small("dino"))
    method.configure_training(epochs=1, steps_per_epoch=4)
    views = views_of(n_global=2, n_local=1)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    teacher_before = [p.detach().clone() for p in method.teacher.parameters()]
    reference = copy.deepcopy(method)
    method.begin_step(1)  # the second of 4 steps: momentum for progress 0.25, still epoch 0
    out = method.training_step(batch_of(views))
    # the loss from the networks' outputs with the reference loop
    with torch.no_grad():
        globals_out = reference.head(reference.backbone(torch.cat(views[:2]))).reshape(2, 8, -1)
        s = torch.cat([globals_out, reference.head(reference.backbone(views[2])).unsqueeze(0)])
        t = reference.teacher["head"](reference.teacher["backbone"](torch.cat(views[:2]))).reshape(2, 8, -1)
    want = ref_dino(s, t, torch.zeros(1, 32), 0.1, 0.04)
    assert out.loss.item() == pytest.approx(float(want), abs=1e-5)
    torch.testing.assert_close(method.criterion.center, 0.1 * t.reshape(16, -1).mean(0, keepdim=True))
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    student = list(method.backbone.parameters()) + list(method.head.parameters())
    student_after = [p.detach().clone() for p in student]
    method.end_step()
    m = cosine_momentum(0.25, 0.9, 1.0)
    assert method.teacher.momentum == pytest.approx(m) and method.state_logs() == {"momentum": method.teacher.momentum}
    for t0, o, t1 in zip(teacher_before, student_after, method.teacher.parameters()):
        torch.testing.assert_close(t1, m * t0 + (1 - m) * o, rtol=0, atol=1e-6)


def test_dino_last_layer_frozen_during_first_epoch(tiny_backbone):
    method = methods.get("dino", backbone=tiny_backbone, **small("dino"))
    last, mlp_out = method.head.last_layer.weight_v, method.head.mlp[-1].weight
    start, mlp_start = last.detach().clone(), mlp_out.detach().clone()
    engine_steps(method, views_of(batch=4), steps=2, epochs=2, steps_per_epoch=2, weight_decay=1e-2)
    torch.testing.assert_close(last, start, rtol=0, atol=0)  # epoch 0: no gradient, so no update at all
    assert not torch.equal(mlp_out, mlp_start)  # while the rest of the head trains
    engine_steps(method, views_of(batch=4), steps=1, epochs=2, steps_per_epoch=2, first_step=2)  # epoch 1 starts
    assert method.progress.epoch == 1
    assert not torch.equal(last, start)
    assert torch.equal(method.head.last_layer.weight_g, torch.ones_like(method.head.last_layer.weight_g))


def _two_process_worker(rank: int, world: int) -> dict:
    """Rank ``rank``'s share of the DINO loss (with its centre update) and of Sinkhorn-Knopp."""
    return {**_dino_share(rank, world), **_sinkhorn_share(rank, world)}


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> list[dict]:
    """One 2-process run (gloo) shared by the DINO and Sinkhorn tests, to spawn only once."""
    return run_distributed(_two_process_worker, tmp_path_factory.mktemp("dist"), world=2)


def _dino_share(rank: int, world: int) -> dict:
    g = torch.Generator().manual_seed(5)
    student = torch.randn(3, 2 * world, 6, generator=g, dtype=torch.float64)
    teacher = torch.randn(2, 2 * world, 6, generator=g, dtype=torch.float64)
    rows = slice(2 * rank, 2 * rank + 2)
    s = student[:, rows].clone().requires_grad_(True)
    loss_fn = DINOLoss(6).double()
    loss = loss_fn(s, teacher[:, rows], teacher_temp=0.05)
    loss.backward()
    return {"loss": loss.detach(), "grad": s.grad, "center": loss_fn.center.clone()}


def test_dino_loss_two_processes_equals_one_process_on_the_whole_batch(two_process_results):
    # Each rank's loss is the mean over its own B samples, so the mean of the W per-rank losses is the
    # single-process mean over W*B samples; the loss has no cross-sample term, so rank r's input
    # gradient is W times the single-process gradient of its rows (DDP's averaging of parameter
    # gradients then gives the single-process gradient). The centre uses the all-reduced teacher
    # mean, so every rank holds the single-process centre.
    results = two_process_results
    g = torch.Generator().manual_seed(5)
    student = torch.randn(3, 4, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    teacher = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    loss_fn = DINOLoss(6).double()
    loss = loss_fn(student, teacher, teacher_temp=0.05)
    loss.backward()
    torch.testing.assert_close((results[0]["loss"] + results[1]["loss"]) / 2, loss.detach())
    for r, res in enumerate(results):
        torch.testing.assert_close(res["grad"] / 2, student.grad[:, 2 * r: 2 * r + 2])
        torch.testing.assert_close(res["center"], loss_fn.center)
    assert loss_fn.center.abs().sum() > 0


# ------------------------------------------------------------------------------------ SwAV


def ref_sinkhorn(scores, epsilon, iterations):
    """SwAV Alg. 1 (Sinkhorn-Knopp) with explicit loops in float64; returns codes (B, K)."""
    s = scores.double()
    b, k = s.shape
    q = [[math.exp(float(s[i, j]) / epsilon) for i in range(b)] for j in range(k)]  # K x B
    total = sum(sum(row) for row in q)
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        for j in range(k):
            row_sum = sum(q[j])
            q[j] = [x / row_sum / k for x in q[j]]
        for i in range(b):
            col_sum = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / col_sum / b
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=torch.float64)


def test_sinkhorn_matches_reference_and_marginals():
    g = torch.Generator().manual_seed(2)
    z = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    prototypes = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    scores = z @ prototypes.T
    codes = sinkhorn(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(codes.double(), ref_sinkhorn(scores, 0.05, 3), atol=1e-5, rtol=1e-5)
    # after the last (column) normalisation every sample's code sums to 1 (= B * 1/B)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(6))
    # converged: every prototype gets B / K of the batch (rows of Q sum to 1/K)
    converged = sinkhorn(scores, epsilon=0.5, iterations=500)
    torch.testing.assert_close(converged.sum(dim=0), torch.full((4,), 6 / 4), atol=1e-4, rtol=0)
    assert not torch.allclose(codes.sum(dim=0), torch.full((4,), 6 / 4), atol=1e-3)  # 3 iterations: not yet


def ref_swav(scores, codes, t):
    """SwAV Eq. 3 averaged as the official code: per assignment view a, mean over v != a."""
    s, q = scores.double(), codes.double()
    total = 0.0
    for a in range(q.shape[0]):
        sub = 0.0
        for v in range(s.shape[0]):
            if v == a:
                continue
            for b in range(s.shape[1]):
                p = torch.exp(s[v, b] / t)
                sub += -(q[a, b] * torch.log(p / p.sum())).sum() / s.shape[1]
        total += sub / (s.shape[0] - 1)
    return total / q.shape[0]


def test_swav_loss_matches_reference_given_codes():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(5, 4, 6, generator=g, requires_grad=True)
    codes = torch.softmax(torch.randn(2, 4, 6, generator=g), dim=-1)
    got = SwAVLoss(0.1)(scores, codes)
    assert got.item() == pytest.approx(float(ref_swav(scores.detach(), codes, 0.1)), abs=1e-5, rel=1e-5)
    got.backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


def test_swav_smoke_multicrop_prototypes_normalised(tiny_backbone):
    method = methods.get("swav", backbone=tiny_backbone, **small("swav"))
    before = {k: v.detach().clone() for k, v in method.named_parameters() if v.requires_grad}
    outs = engine_steps(method, views_of(n_global=2, n_local=2), steps=2)
    assert all(torch.isfinite(o.loss) for o in outs)
    changed = [k for k, v in method.named_parameters() if v.requires_grad and not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in changed) and "prototypes.weight" in changed
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(10))
    assert outs[-1].features.shape == (8, method.feature_dim)


def test_swav_step_loss_is_swapped_prediction_of_sinkhorn_codes(tiny_backbone):
    method = methods.get("swav", backbone=tiny_backbone, **small("swav")).eval()
    views = views_of(n_global=2, n_local=1)
    out = method.training_step(batch_of(views))
    with torch.no_grad():
        z = torch.cat([
            F.normalize(method.projector(method.backbone(torch.cat(views[:2]))), dim=1),
            F.normalize(method.projector(method.backbone(views[2])), dim=1),
        ]).reshape(3, 8, -1)
        scores = z @ method.prototypes.weight.T
        codes = torch.stack([ref_sinkhorn(scores[a], 0.05, 3) for a in range(2)])
    assert out.loss.item() == pytest.approx(float(ref_swav(scores, codes, 0.1)), abs=1e-5, rel=1e-5)


def test_swav_prototypes_frozen_for_the_first_iterations(tiny_backbone):
    options = small("swav", freeze_prototypes_iters=2)
    method = methods.get("swav", backbone=tiny_backbone, **options)
    start = method.prototypes.weight.detach().clone()
    engine_steps(method, views_of(batch=4), steps=2, epochs=1, steps_per_epoch=3)
    # untouched by the optimizer; only renormalised (unit rows stay unit up to rounding)
    torch.testing.assert_close(method.prototypes.weight, start, rtol=0, atol=1e-6)
    method.configure_training(1, 3)
    opt = torch.optim.SGD([method.prototypes.weight], lr=0.5)
    progress = method.begin_step(2)  # third step: no longer frozen
    method.training_step(batch_of(views_of(batch=4))).loss.backward()
    method.on_after_backward(progress)
    opt.step()
    assert not torch.allclose(method.prototypes.weight, start)
    assert not torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(10))
    method.end_step()
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(10))


def test_swav_queue_starts_at_its_epoch_fills_and_is_used_once_full(tiny_backbone):
    method = methods.get("swav", backbone=tiny_backbone, **small("swav", queue_size=8, epoch_queue_starts=1))
    views = views_of(batch=4)
    engine_steps(method, views, steps=1, epochs=3, steps_per_epoch=1)
    assert torch.count_nonzero(method.queue) == 0  # nothing queued during epoch 0
    assert not method.queue_active
    method.begin_step(1)
    assert method.progress.epoch == 1 and method.queue_active
    reference = copy.deepcopy(method)
    method.train()
    method.training_step(batch_of(views))  # epoch 1: the queue takes the assignment views' projections
    with torch.no_grad():
        z = F.normalize(reference.projector(reference.backbone(torch.cat(views))), dim=1).reshape(2, 4, -1)
    torch.testing.assert_close(method.queue[:, :4], z, atol=1e-6, rtol=0)
    assert torch.count_nonzero(method.queue[:, 4:]) == 0
    # once full, the codes come from Sinkhorn over [queue; batch], and the newest rows go first
    full = F.normalize(torch.randn(2, 8, 8), dim=-1)
    method.queue.copy_(full)
    new = F.normalize(torch.randn(2, 4, 8), dim=-1)
    codes = method.codes(new)
    w = method.prototypes.weight.detach()
    for a in range(2):
        want = ref_sinkhorn(torch.cat([full[a] @ w.T, new[a] @ w.T]), 0.05, 3)[-4:]
        torch.testing.assert_close(codes[a].double(), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(method.queue[a], torch.cat([new[a], full[a, :4]]))


def _sinkhorn_share(rank: int, world: int) -> dict:
    g = torch.Generator().manual_seed(9)
    scores = torch.randn(4 * world, 5, generator=g, dtype=torch.float64)
    return {"codes": sinkhorn(scores[4 * rank: 4 * rank + 4], epsilon=0.05, iterations=3)}


def test_sinkhorn_two_processes_equals_one_process_on_the_whole_batch(two_process_results):
    # All sums over samples are all-reduced, so each rank gets its rows of the whole-batch result.
    results = two_process_results
    g = torch.Generator().manual_seed(9)
    scores = torch.randn(8, 5, generator=g, dtype=torch.float64)
    whole = sinkhorn(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(torch.cat([r["codes"] for r in results]), whole)
    # the halves alone would give other codes: the all-reduce matters
    assert not torch.allclose(results[0]["codes"], sinkhorn(scores[:4], epsilon=0.05, iterations=3))


# ------------------------------------------------------------------------------------ ReSSL


def ref_ressl(student, teacher, queue, t_s, t_t):
    """ReSSL Eq. 5 with loops: mean over samples of -sum_j q_j log p_j over the queue."""
    z, t, a = F.normalize(student.double(), dim=1), F.normalize(teacher.double(), dim=1), queue.double()
    total = 0.0
    for i in range(z.shape[0]):
        p = torch.stack([torch.exp(z[i] @ a[j] / t_s) for j in range(a.shape[0])])
        q = torch.stack([torch.exp(t[i] @ a[j] / t_t) for j in range(a.shape[0])])
        total += -(q / q.sum() * torch.log(p / p.sum())).sum()
    return total / z.shape[0]


def test_ressl_loss_matches_reference():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(5, 6, generator=g, requires_grad=True), torch.randn(5, 6, generator=g)
    queue = F.normalize(torch.randn(9, 6, generator=g), dim=1)
    got = ReSSLLoss(0.1, 0.04)(s, t, queue)
    assert got.item() == pytest.approx(float(ref_ressl(s.detach(), t, queue, 0.1, 0.04)), abs=1e-5, rel=1e-5)
    got.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_ressl_smoke(tiny_backbone, two_views):
    method = methods.get("ressl", backbone=tiny_backbone, **small("ressl"))
    before = {k: v.detach().clone() for k, v in method.named_parameters() if v.requires_grad}
    outs = engine_steps(method, two_views, steps=2)
    assert all(torch.isfinite(o.loss) for o in outs)
    changed = [k for k, v in method.named_parameters() if v.requires_grad and not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in changed)
    assert not any(p.requires_grad for p in method.teacher.parameters())


def test_ressl_queue_and_ema_update(tiny_backbone, two_views):
    options = small("ressl", queue_size=32, base_momentum=0.9, final_momentum=1.0)  # 32: the wrap below
    method = methods.get("ressl", backbone=tiny_backbone, **options)
    method.queue.ptr.fill_(30)  # 8 keys from 30 wrap around: rows 30, 31, 0..5
    queue0 = method.queue.bank.clone()
    reference = copy.deepcopy(method)
    teacher_before = [p.detach().clone() for p in method.teacher.parameters()]
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    out = method.training_step(batch_of(two_views))
    loss_value = out.loss.item()
    with torch.no_grad():
        keys = F.normalize(reference.teacher["projector"](reference.teacher["backbone"](two_views[1])), dim=1)
        student = reference.projector(reference.backbone(two_views[0]))
    assert loss_value == pytest.approx(float(ref_ressl(student, keys, queue0, 0.1, 0.04)), abs=1e-5)
    expected = queue0.clone()
    expected[[30, 31, 0, 1, 2, 3, 4, 5]] = keys
    torch.testing.assert_close(method.queue.bank, expected, atol=1e-6, rtol=0)
    assert int(method.queue.ptr) == 6
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    online = list(method.backbone.parameters()) + list(method.projector.parameters())
    online_after = [p.detach().clone() for p in online]
    method.configure_training(epochs=1, steps_per_epoch=2)
    method.begin_step(1)  # progress 0.5
    method.end_step()
    m = cosine_momentum(0.5, 0.9, 1.0)
    assert method.teacher.momentum == pytest.approx(m)
    for t0, o, t1 in zip(teacher_before, online_after, method.teacher.parameters()):
        torch.testing.assert_close(t1, m * t0 + (1 - m) * o, rtol=0, atol=1e-6)
