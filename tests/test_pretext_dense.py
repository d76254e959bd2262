"""Rotation prediction, relative patch location and DenseCL: construction, losses, state (their
smoke run is the generic one over every method in tests/test_methods.py).

References are written from the papers' formulas with explicit loops in float64: RotNet
(arXiv 1803.07728), context prediction (arXiv 1505.05192), DenseCL (arXiv 2011.09157, Eq. 2-3).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import selfsup.backbones
import selfsup.methods as methods
from selfsup.losses.densecl import DenseContrastiveLoss
from selfsup.methods import ViewBatch
from selfsup.nn.dense_match import match_locations
from selfsup.nn.patch_grid import NEIGHBOURS, crop_patches, paper_patch_layout, sample_patch_grid
from selfsup.nn.rotation import rotate_batch
from method_sizes import small



def _views(count: int, n: int = 8, size: int = 16, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, size, size, generator=g) for _ in range(count)]


def _batch(views: list[torch.Tensor]) -> ViewBatch:
    n = len(views[0])
    return ViewBatch(views=views, labels=torch.arange(n) % 3, indices=torch.arange(n))


def _tiny() -> selfsup.backbones.Backbone:
    torch.manual_seed(0)
    return selfsup.backbones.get("resnet_tiny", width=4)


def _ref_cross_entropy(logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """Mean of -log softmax(logits_i)[y_i], one row at a time, in float64."""
    logits = logits.double()
    total = torch.zeros((), dtype=torch.float64)
    for row, y in zip(logits, labels):
        total = total - (row[y] - torch.log(sum(torch.exp(v) for v in row)))
    return total / len(labels)


# ----------------------------------------------------------------------------- rotation (RotNet)
def _ref_rot90_ccw(img: torch.Tensor, k: int) -> torch.Tensor:
    """k quarter turns counter-clockwise, pixel by pixel: out[i][j] = in[j][W - 1 - i]."""
    for _ in range(k):
        size = img.shape[-1]
        out = torch.empty_like(img)
        for i in range(size):
            for j in range(size):
                out[:, i, j] = img[:, j, size - 1 - i]
        img = out
    return img


def test_rotate_batch_labels_match_the_actual_rotations() -> None:
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (12, 2, 5, 5) and labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for row in range(12):
        want = _ref_rot90_ccw(x[row % 3], int(labels[row]))
        assert torch.equal(rotated[row], want), row
    # a quarter turn moves the top-right pixel to the top-left
    assert rotated[3, 0, 0, 0] == x[0, 0, 0, 4]
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.zeros(1, 3, 4, 5))


def test_rotation_loss_is_cross_entropy_over_all_four_rotations() -> None:
    method = methods.get("rotation", backbone=_tiny()).eval()
    views = _views(2, n=4, size=8)
    out = method.training_step(_batch(views))
    images, labels = [], []
    for k in range(4):  # all views, every rotation
        for x in torch.cat(views):
            images.append(_ref_rot90_ccw(x, k))
            labels.append(k)
    with torch.no_grad():
        logits = method.head(method.backbone(torch.stack(images)))
        torch.testing.assert_close(out.features, method.backbone(views[0]))
    want = _ref_cross_entropy(logits, labels)
    assert out.loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert len(labels) == 4 * 2 * 4


def test_rotation_mlp_head_variant() -> None:
    method = methods.get("rotation", backbone=_tiny(), head_hidden_dims=[16])
    assert [m.out_features for m in method.head if isinstance(m, torch.nn.Linear)] == [16, 4]


# ----------------------------------------------------------------- relative location (Doersch)
DIRECTIONS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]  # label order


def test_patch_grid_positions_and_labels() -> None:
    p, gap, jitter, size, n = 4, 2, 1, 18, 64
    torch.manual_seed(0)
    corners = sample_patch_grid(n, size, size, p, gap, jitter)
    assert corners.shape == (n, 9, 2) and corners.dtype == torch.long
    assert corners.min() >= 0 and (corners + p).max() <= size  # every patch inside the image
    step = p + gap
    for b in range(n):
        for cell in range(9):
            nominal = torch.tensor([cell // 3 - 1, cell % 3 - 1]) * step
            offset = corners[b, cell] - corners[b, 4] - nominal
            assert offset.abs().max() <= 2 * jitter  # grid position + at most two jitters
    # the class label of neighbour i is its direction from the centre (jitter < half a step)
    for label, cell in enumerate(NEIGHBOURS):
        delta = (corners[:, cell] - corners[:, 4]).double() / step
        assert (delta.round() == torch.tensor(DIRECTIONS[label]).double()).all()
    # jitter and grid origin are random per patch / per sample, within their ranges
    shifts = corners - corners[:, :1] - torch.tensor([[c // 3, c % 3] for c in range(9)]) * step
    assert shifts.abs().max() == 2 * jitter
    assert len({tuple(c) for c in corners[:, 4].tolist()}) > 1
    with pytest.raises(ValueError, match="needs"):
        sample_patch_grid(1, 15, 15, 4, 2, 1)


def test_crop_patches_equals_slicing_and_paper_layout() -> None:
    images = torch.randn(3, 2, 12, 12)
    corners = torch.randint(0, 9, (3, 5, 2))
    patches = crop_patches(images, corners, 3)
    assert patches.shape == (3, 5, 2, 3, 3)
    for b in range(3):
        for i in range(5):
            r, c = corners[b, i].tolist()
            assert torch.equal(patches[b, i], images[b, :, r : r + 3, c : c + 3])
    assert paper_patch_layout(32) == (7, 3, 1) and paper_patch_layout(28) == (6, 3, 1)
    assert methods.get("relativeloc", backbone=_tiny(), hidden_dim=8).layout(32) == (7, 3, 1)
    assert methods.get("relativeloc", backbone=_tiny(), hidden_dim=8, gap=2).layout(32) == (7, 2, 1)
    for size in (28, 32, 64, 224):
        p, g, j = paper_patch_layout(size)
        assert 3 * p + 2 * g + 2 * j <= size and g == p // 2


def test_relativeloc_loss_matches_pair_classification_reference() -> None:
    method = methods.get("relativeloc", backbone=_tiny(), **small("relativeloc")).eval()
    views = _views(1)
    torch.manual_seed(5)
    out = method.training_step(_batch(views))
    torch.manual_seed(5)  # the same corners again
    corners = sample_patch_grid(8, 16, 16, 4, 1, 1)
    logits, labels = [], []
    with torch.no_grad():
        sliced = [views[0][b, :, r : r + 4, c : c + 4] for b in range(8) for r, c in corners[b].tolist()]
        all_feats = method.backbone(torch.stack(sliced)).view(8, 9, -1)  # one call: eval-mode BN
        for b in range(8):
            feats = all_feats[b]
            for label, (dr, dc) in enumerate(DIRECTIONS):
                neighbour = 3 * (dr + 1) + (dc + 1)
                pair = torch.cat([feats[4], feats[neighbour]])
                logits.append(method.head(pair[None])[0])
                labels.append(label)
    want = _ref_cross_entropy(torch.stack(logits), labels)
    assert out.loss.item() == pytest.approx(want.item(), abs=1e-5)


# --------------------------------------------------------------------------------------- DenseCL
def test_match_locations_is_brute_force_argmax_cosine() -> None:
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(3, 6, 10, generator=g), torch.randn(3, 6, 7, generator=g)
    k[:, :, 2] *= 50.0  # a large-norm key must not win by its norm: cosine, not dot product
    got = match_locations(q, k)
    assert got.shape == (3, 10)
    for b in range(3):
        for i in range(10):
            cos = [float(q[b, :, i].double() @ k[b, :, j].double()
                         / (q[b, :, i].double().norm() * k[b, :, j].double().norm())) for j in range(7)]
            assert int(got[b, i]) == max(range(7), key=cos.__getitem__)


def _ref_dense_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> torch.Tensor:
    """DenseCL Eq. 2 for every location of every image, averaged; negatives = the queue."""
    q, k, queue = q.double(), k.double(), queue.double()
    total, count = torch.zeros((), dtype=torch.float64), 0
    for b in range(q.shape[0]):
        for s in range(q.shape[2]):
            r = q[b, :, s] / q[b, :, s].norm()
            pos_key = k[b, :, s] / k[b, :, s].norm()
            pos = torch.exp(r @ pos_key / t)
            neg = sum(torch.exp(r @ queue[j] / t) for j in range(queue.shape[0]))
            total = total - torch.log(pos / (pos + neg))
            count += 1
    return total / count


def test_dense_loss_matches_reference_and_enqueues_pooled_keys() -> None:
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    pooled = torch.randn(3, 5, generator=g)
    loss_fn = DenseContrastiveLoss(temperature=0.2, queue_size=7, dim=5)
    queue = loss_fn.queue.bank.clone()
    got = loss_fn(q, k, pooled)
    assert got.item() == pytest.approx(_ref_dense_loss(q, k, queue, 0.2).item(), abs=1e-5)
    torch.testing.assert_close(loss_fn.queue.bank[:3], pooled / pooled.norm(dim=1, keepdim=True))
    torch.testing.assert_close(loss_fn.queue.bank[3:], queue[3:])
    assert int(loss_fn.queue.ptr) == 3
    loss_fn(q, k, pooled)  # wraps around: rows 3..5, pointer 6
    assert int(loss_fn.queue.ptr) == 6
    loss_fn.eval()
    loss_fn(q, k, pooled)  # evaluation does not enqueue
    assert int(loss_fn.queue.ptr) == 6


def _densecl_reference(method, views, global_queue, dense_queue):
    """Recompute DenseCL's two losses from the definitions, with the brute-force matching."""
    x_q, x_k = views
    t = method.global_loss.temperature
    with torch.no_grad():
        fq = method.backbone.feature_map(x_q).flatten(2)
        fk = method.target["backbone"].feature_map(x_k).flatten(2)
        q = method.projector(fq.mean(2))
        k = method.target["projector"](fk.mean(2))
        dq = method.dense_projector(method.backbone.feature_map(x_q)).flatten(2)
        dk = method.target["dense_projector"](method.target["backbone"].feature_map(x_k)).flatten(2)
    matched = torch.empty_like(dk)
    for b in range(fq.shape[0]):
        for i in range(fq.shape[2]):
            cos = torch.stack(
                [F.cosine_similarity(fq[b, :, i], fk[b, :, j], dim=0) for j in range(fk.shape[2])]
            )
            matched[b, :, i] = dk[b, :, int(cos.argmax())]
    global_ref = _ref_dense_loss(q[:, :, None], k[:, :, None], global_queue, t)  # S = 1: MoCo's InfoNCE
    dense_ref = _ref_dense_loss(dq, matched, dense_queue, t)
    return global_ref, dense_ref, k, dk.mean(2)


def test_densecl_loss_queues_momentum_and_lambda_warmup() -> None:
    m = 0.9
    method = methods.get("densecl", backbone=_tiny(), momentum=m,
                         **small("densecl", lambda_warmup_steps=1))
    method.eval()  # deterministic BatchNorm, so the reference sees the same network
    method.global_loss.train()
    method.dense_loss.train()  # queues still update
    views = _views(2)
    gq, dq = method.global_loss.memory_bank.bank.clone(), method.dense_loss.queue.bank.clone()
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    method.configure_training(epochs=1, steps_per_epoch=2)
    for step in range(2):
        global_ref, dense_ref, keys, pooled = _densecl_reference(method, views, gq, dq)
        target_before = [p.clone() for p in method.target.parameters()]
        method.begin_step(step)
        out = method.training_step(_batch(views))
        lam = 0.0 if step == 0 else 0.5  # lambda = 0 during the one warm-up step
        assert float(out.logs["lambda"]) == lam
        want = (1 - lam) * global_ref + lam * dense_ref
        assert out.loss.item() == pytest.approx(want.item(), abs=1e-5)
        assert out.logs["loss_dense"].item() == pytest.approx(dense_ref.item(), abs=1e-5)
        # both queues: newest keys at rows [8 step, 8 step + 8), normalised, the rest untouched
        rows = slice(8 * step, 8 * step + 8)
        torch.testing.assert_close(method.global_loss.memory_bank.bank[rows], F.normalize(keys, dim=1))
        torch.testing.assert_close(method.dense_loss.queue.bank[rows], F.normalize(pooled, dim=1))
        torch.testing.assert_close(method.dense_loss.queue.bank[8 * step + 8 :], dq[8 * step + 8 :])
        assert int(method.global_loss.memory_bank.ptr) == int(method.dense_loss.queue.ptr) == 8 * step + 8
        gq, dq = method.global_loss.memory_bank.bank.clone(), method.dense_loss.queue.bank.clone()
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        method.end_step()
        online = [*method.backbone.parameters(), *method.projector.parameters(),
                  *method.dense_projector.parameters()]
        for t0, o, t1 in zip(target_before, online, method.target.parameters()):
            torch.testing.assert_close(t1, m * t0 + (1 - m) * o.detach(), rtol=0, atol=1e-6)
    assert method.state_logs() == {"momentum": m}  # constant
    assert "dense_loss.queue.bank" in method.state_dict()
    assert not any("steps_done" in key for key in method.state_dict())  # the step comes from the engine
    assert all(not p.requires_grad for p in method.target.parameters())
    in_groups = {id(p) for g in method.parameter_groups(0.0) for p in g["params"]}
    assert not in_groups & {id(p) for p in method.target.parameters()}
