"""A2MIM and AIM: losses against float64 loop references, masking, prefix causal attention, smoke.

References are written from the papers' formulas: A2MIM (arXiv 2205.13943, Sec. 4.2, with the
focal frequency loss of arXiv 2012.12821) and AIM (arXiv 2401.08541, Sec. 3, Eq. 2).
"""
from __future__ import annotations

import cmath
import math

import pytest
import torch

import selfsup.backbones
import selfsup.methods as methods
from selfsup.losses.a2mim import A2MIMLoss, focal_frequency_loss
from selfsup.losses.aim import AIMLoss
from selfsup.methods import ViewBatch
from selfsup.nn.a2mim_masking import fill_with_mean_colour, random_block_mask
from selfsup.nn.prefix_causal_mask import prefix_causal_mask, sample_prefix_lengths
from method_sizes import small



def _vit() -> selfsup.backbones.Backbone:
    torch.manual_seed(0)
    return selfsup.backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2)


def _batch(n: int = 4, seed: int = 1) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    return ViewBatch(views=[torch.randn(n, 3, 16, 16, generator=g)], labels=torch.zeros(n, dtype=torch.long),
                     indices=torch.arange(n))


# ----------------------------------------------------------------------------- AIM
def test_prefix_causal_mask_matches_definition() -> None:
    lengths = torch.tensor([1, 3, 5])
    mask = prefix_causal_mask(lengths, 5)
    assert mask.shape == (3, 1, 5, 5)
    for b, k in enumerate(lengths.tolist()):
        for i in range(5):
            for j in range(5):
                assert bool(mask[b, 0, i, j]) == (j <= i or j < k), (b, i, j)


def test_sample_prefix_lengths_uniform_on_1_to_n_minus_1() -> None:
    k = sample_prefix_lengths(4000, 6, generator=torch.Generator().manual_seed(0))
    assert set(k.tolist()) == {1, 2, 3, 4, 5}
    counts = torch.bincount(k, minlength=6)[1:].double() / 4000
    assert torch.allclose(counts, torch.full((5,), 0.2, dtype=torch.float64), atol=0.03)
    with pytest.raises(ValueError):
        sample_prefix_lengths(2, 1)


def _ref_aim_loss(pred: torch.Tensor, target: torch.Tensor, loss_mask: torch.Tensor) -> float:
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for k in range(pred.shape[1]):
            if not loss_mask[b, k]:
                continue
            x = [float(v) for v in target[b, k]]
            mean = sum(x) / len(x)
            var = sum((v - mean) ** 2 for v in x) / (len(x) - 1)
            norm = [(v - mean) / math.sqrt(var + 1e-6) for v in x]
            total += sum((float(p) - t) ** 2 for p, t in zip(pred[b, k], norm)) / len(x)
            count += 1
    return total / count


def test_aim_loss_matches_reference_and_ignores_prefix() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 5, 12, generator=g), torch.rand(3, 5, 12, generator=g)
    loss_mask = torch.arange(5).view(1, -1) >= torch.tensor([1, 3, 4]).view(-1, 1)
    loss = AIMLoss()(pred, target, loss_mask)
    assert loss.item() == pytest.approx(_ref_aim_loss(pred.double(), target.double(), loss_mask), abs=1e-5)
    changed = pred.clone()
    changed[1, :3] += 10.0  # prefix positions of sample 1
    assert torch.equal(AIMLoss()(changed, target, loss_mask), loss)
    changed[1, 3] += 1.0  # a target position
    assert not torch.allclose(AIMLoss()(changed, target, loss_mask), loss)


def test_aim_trunk_is_causal_after_the_prefix() -> None:
    method = methods.get("aim", backbone=_vit(), **small("aim")).eval()
    images = _batch(2).views[0]
    prefix = torch.tensor([5, 5])
    out = method.trunk(images, prefix)
    later = images.clone()
    later[:, :, 8:12, 8:12] += 1.0  # patch 10 (row 2, column 2), after the prefix
    out2 = method.trunk(later, prefix)
    assert torch.allclose(out[:, :10], out2[:, :10], atol=1e-6)  # earlier positions cannot see it
    assert not torch.allclose(out[:, 10:], out2[:, 10:], atol=1e-4)
    inside = images.clone()
    inside[:, :, 0:4, 12:16] += 1.0  # patch 3, inside the prefix: seen by patch 0 (bidirectional)
    assert not torch.allclose(method.trunk(inside, prefix)[:, 0], out[:, 0], atol=1e-4)


def test_aim_loss_reads_only_non_prefix_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    method = methods.get("aim", backbone=_vit(), **small("aim"))
    monkeypatch.setattr("selfsup.methods.aim.sample_prefix_lengths", lambda b, n, device=None: torch.full((b,), 6))
    images = _batch(2).views[0]
    loss = method.training_step(ViewBatch([images], torch.zeros(2), torch.arange(2))).loss
    changed = images.clone()
    changed[:, :, 4:8, 0:4] = 5.0  # patch 4: in the prefix (K = 6), context for every target
    changed_loss = method.training_step(ViewBatch([changed], torch.zeros(2), torch.arange(2))).loss
    assert not torch.allclose(changed_loss, loss)
    # prefix patches are never regressed: the loss equals the reference over targets k >= 6 only
    feats = method.predict(method.trunk(images, torch.full((2,), 6)), (4, 4))[:, :-1]
    from selfsup.nn.patches import patchify
    target = patchify(images, 4)[:, 1:]
    mask = torch.arange(1, 16).view(1, -1) >= 6
    ref = _ref_aim_loss(feats.detach().double(), target.double(), mask.expand(2, -1))
    assert loss.item() == pytest.approx(ref, abs=1e-5)


def test_aim_rejects_cnn() -> None:
    with pytest.raises(TypeError, match="VisionTransformer"):
        methods.get("aim", backbone=selfsup.backbones.get("resnet_tiny", width=4))


# ----------------------------------------------------------------------------- A2MIM
def _ref_dft2(x: list[list[float]]) -> list[list[complex]]:
    h, w = len(x), len(x[0])
    return [[sum(x[m][n] * cmath.exp(-2j * math.pi * (u * m / h + v * n / w)) for m in range(h) for n in range(w))
             / math.sqrt(h * w) for v in range(w)] for u in range(h)]


def _ref_ffl(pred: torch.Tensor, target: torch.Tensor) -> float:
    b, c, h, w = pred.shape
    dist = []
    for ch in range(c):
        fp = [_ref_dft2(pred[i, ch].tolist()) for i in range(b)]
        ft = [_ref_dft2(target[i, ch].tolist()) for i in range(b)]
        for u in range(h):
            for v in range(w):
                mp = sum(fp[i][u][v] for i in range(b)) / b
                mt = sum(ft[i][u][v] for i in range(b)) / b
                dist.append(abs(mp - mt))
    weights = [math.log(1 + d) for d in dist]
    top = max(weights)
    return sum(wt / top * d * d for wt, d in zip(weights, dist)) / len(dist)


def _ref_a2mim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, fft_weight: float) -> float:
    b, c, h, w = pred.shape
    l1, count = 0.0, 0
    for i in range(b):
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    if mask[i, 0, y, x] > 0:
                        l1 += abs(float(pred[i, ch, y, x]) - float(target[i, ch, y, x]))
                        count += 1
    mixed = torch.where(mask > 0, pred, 0.5 * pred + 0.5 * target)
    return l1 / count + fft_weight * _ref_ffl(mixed, target)


def test_a2mim_loss_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mask = random_block_mask(2, 8, 8, 4, 0.5, generator=g)
    assert focal_frequency_loss(pred, target).item() == pytest.approx(_ref_ffl(pred.double(), target.double()), rel=1e-5)
    loss = A2MIMLoss(fft_weight=0.1)(pred, target, mask)
    assert loss.item() == pytest.approx(_ref_a2mim(pred.double(), target.double(), mask, 0.1), rel=1e-5)


def test_a2mim_loss_reads_only_masked_pixels() -> None:
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mask = random_block_mask(2, 8, 8, 4, 0.5, generator=g)
    criterion = A2MIMLoss()
    y, x = (mask[0, 0] == 0).nonzero()[0].tolist()
    changed = pred.clone()
    changed[0, :, y, x] += 3.0
    assert criterion.spatial(changed, target, mask) == criterion.spatial(pred, target, mask)
    pred.requires_grad_(True)
    criterion(pred, target, mask).backward()
    assert pred.grad is not None
    assert torch.all(pred.grad * (1 - mask) == 0)  # the frequency term uses sg(prediction) there
    assert (pred.grad * mask).abs().sum() > 0


def test_block_mask_ratio_and_mean_fill() -> None:
    mask = random_block_mask(16, 32, 32, 8, 0.6, generator=torch.Generator().manual_seed(0))
    cells = mask[:, 0, ::8, ::8]
    assert torch.all(cells.flatten(1).sum(1) == math.ceil(0.6 * 16))
    assert torch.equal(mask, cells.repeat_interleave(8, 1).repeat_interleave(8, 2).unsqueeze(1))
    images = torch.rand(16, 3, 32, 32)
    filled = fill_with_mean_colour(images, mask)
    visible_mean = (images * (1 - mask)).sum((2, 3)) / (1 - mask).sum((2, 3))
    assert torch.equal(filled * (1 - mask), images * (1 - mask))
    expected = visible_mean.view(16, 3, 1, 1).expand_as(images)
    assert torch.allclose(filled * mask, expected * mask, atol=1e-6)


def test_a2mim_masked_pixels_never_reach_the_encoder() -> None:
    method = methods.get("a2mim", backbone=_vit(), **small("a2mim")).eval()
    images = _batch(2).views[0]
    mask = method.sample_mask(images)
    out = method.encode(fill_with_mean_colour(images, mask), mask)
    changed = images + 5.0 * mask * torch.randn_like(images)
    assert torch.equal(out, method.encode(fill_with_mean_colour(changed, mask), mask))
    visible = images + 5.0 * (1 - mask) * torch.randn_like(images)
    assert not torch.allclose(out, method.encode(fill_with_mean_colour(visible, mask), mask))


def test_a2mim_mask_token_only_on_masked_patches() -> None:
    method = methods.get("a2mim", backbone=_vit(), **small("a2mim")).eval()
    images = _batch(2).views[0]
    empty = torch.zeros(2, 1, 16, 16)
    assert torch.allclose(method.encode(images, empty), method.backbone.forward_tokens(images), atol=1e-6)
    full = method.sample_mask(images)
    assert not torch.allclose(method.encode(images, full), method.backbone.forward_tokens(images), atol=1e-4)


def test_a2mim_rejects_other_backbones_and_bad_sizes() -> None:
    class Other(torch.nn.Module):
        feature_dim = 8

    with pytest.raises(TypeError, match="A2MIM accepts only these backbone kinds: resnet .*; vit = VisionTransformer"):
        methods.get("a2mim", backbone=Other())
    with pytest.raises(ValueError):
        methods.get("a2mim", backbone=_vit(), mask_patch_size=6)
    with pytest.raises(ValueError, match="mask_layer"):
        methods.get("a2mim", backbone=selfsup.backbones.get("resnet_tiny", width=4), mask_layer=5)


def _resnet_a2mim():
    torch.manual_seed(0)
    return methods.get("a2mim", backbone=selfsup.backbones.get("resnet_tiny", width=4), mask_patch_size=8).eval()


def test_a2mim_resnet_mask_token_enters_at_the_chosen_stage_only_where_masked() -> None:
    method = _resnet_a2mim()
    assert method.mask_layer == 3 and method.mask_token.shape == (1, 16, 1, 1)  # stage 3 of width 4: 4 * 2**2
    images = torch.rand(2, 3, 16, 16)
    empty = torch.zeros(2, 1, 16, 16)
    torch.testing.assert_close(method.encode_resnet(images, empty), method.backbone.feature_map(images))
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :8, :8] = 1.0
    with torch.no_grad():
        method.mask_token.fill_(5.0)
    stages = [method.backbone.stem, *method.backbone.stages]
    x = images
    for index, stage in enumerate(stages):  # reference: stage by stage, adding the token by hand
        x = stage(x)
        if index == 3:
            x = x + 5.0 * torch.nn.functional.interpolate(mask, size=x.shape[-2:], mode="nearest")
    torch.testing.assert_close(method.encode_resnet(images, mask), x)


def test_a2mim_resnet_masked_pixels_never_reach_the_network() -> None:
    method = _resnet_a2mim()
    images = torch.rand(2, 3, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 8:, 8:] = 1.0
    changed = images.clone()
    changed[:, :, 8:, 8:] = torch.rand(2, 3, 8, 8)
    a = method.encode_resnet(fill_with_mean_colour(images, mask), mask)
    b = method.encode_resnet(fill_with_mean_colour(changed, mask), mask)
    torch.testing.assert_close(a, b)
    reconstruction = torch.nn.functional.pixel_shuffle(method.decoder(a), method.stride)
    assert reconstruction.shape == images.shape and method.stride == 8


# ----------------------------------------------------------------------------- smoke
@pytest.mark.parametrize("name", ["aim", "a2mim"])
def test_two_steps_in_engine_order(name: str) -> None:
    method = methods.get(name, backbone=_vit(), **small(name))
    before = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    optimizer = torch.optim.AdamW([p for g in method.parameter_groups(0.05) for p in g["params"]], lr=1e-3)
    method.configure_training(epochs=1, steps_per_epoch=2)
    method.on_epoch_start(0, lambda: torch.zeros(0))
    for step in range(2):
        progress = method.begin_step(step)
        out = method.training_step(_batch(seed=step))
        assert torch.isfinite(out.loss)
        optimizer.zero_grad()
        out.loss.backward()
        method.on_after_backward(progress)
        optimizer.step()
        method.end_step()
    changed = [k for k, v in method.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert "blocks.0.qkv.weight" in changed and "patch_embed.weight" in changed
    assert method.embed(torch.randn(2, 3, 16, 16)).shape == (2, method.feature_dim)
