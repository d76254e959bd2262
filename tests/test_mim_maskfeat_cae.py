"""MaskFeat and CAE: HOG and losses vs float64 loop references written from the papers, block-wise
masking, what the encoder and the losses may read, stop-gradient targets and two-step smoke runs."""
from __future__ import annotations

import math

import pytest
import torch

import selfsup.backbones
import selfsup.methods as methods
from selfsup.losses.cae import CAELoss
from selfsup.losses.maskfeat import MaskedFeatureLoss
from selfsup.methods import ViewBatch
from selfsup.nn.hog import HOG
from method_sizes import small


def tiny_vit():
    torch.manual_seed(0)
    return selfsup.backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2)


def images(batch: int = 4, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def batch_of(x: torch.Tensor) -> ViewBatch:
    return ViewBatch(views=[x], labels=torch.zeros(len(x), dtype=torch.long), indices=torch.arange(len(x)))


def patch_slice(index: int, grid: int = 4, p: int = 4) -> tuple[slice, slice]:
    r, c = divmod(index, grid)
    return slice(r * p, (r + 1) * p), slice(c * p, (c + 1) * p)


# ---------------------------------------------------------------- HOG


def hog_reference(img: torch.Tensor, nbins: int, cell: int, patch: int, normalize: str) -> torch.Tensor:
    """Slow float64 HOG of one (C, H, W) image, written from the description: reflect-padded Sobel
    gradients, unsigned orientation bins, cell sums, L2 norm; returns (N, C * nbins * u * u)."""
    c_n, h, w = img.shape
    x = img.double().tolist()

    def px(ch, i, j):  # reflect padding by one pixel
        i = -i if i < 0 else (2 * (h - 1) - i if i >= h else i)
        j = -j if j < 0 else (2 * (w - 1) - j if j >= w else j)
        return x[ch][i][j]

    sobel = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    hc, wc = h // cell, w // cell
    hist = [[[[0.0] * nbins for _ in range(wc)] for _ in range(hc)] for _ in range(c_n)]
    for ch in range(c_n):
        for i in range(h):
            for j in range(w):
                gx = sum(sobel[a][b] * px(ch, i + a - 1, j + b - 1) for a in range(3) for b in range(3))
                gy = sum(sobel[b][a] * px(ch, i + a - 1, j + b - 1) for a in range(3) for b in range(3))
                k = math.floor(math.atan2(gx, gy) / math.pi * nbins) % nbins
                hist[ch][i // cell][j // cell][k] += math.hypot(gx, gy)
    if normalize == "cell":
        for ch in range(c_n):
            for r in range(hc):
                for q in range(wc):
                    n = math.sqrt(sum(v * v for v in hist[ch][r][q]))
                    hist[ch][r][q] = [v / max(n, 1e-12) for v in hist[ch][r][q]]
    u = patch // cell
    rows = []
    for pr in range(h // patch):
        for pc in range(w // patch):
            vec = [hist[ch][pr * u + a][pc * u + b][k] for ch in range(c_n) for k in range(nbins)
                   for a in range(u) for b in range(u)]
            if normalize == "patch":
                n = math.sqrt(sum(v * v for v in vec))
                vec = [v / max(n, 1e-12) for v in vec]
            rows.append(vec)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("normalize", ["cell", "patch", "none"])
def test_hog_matches_loop_reference(normalize):
    x = images(2, seed=3, dtype=torch.float64)[:, :, :8, :8]
    got = HOG(nbins=9, cell_size=2, normalize=normalize).patch_features(x, patch_size=4)
    assert got.shape == (2, 4, 3 * 9 * 4)
    for b in range(2):
        torch.testing.assert_close(got[b], hog_reference(x[b], 9, 2, 4, normalize), atol=1e-5, rtol=1e-5)


def test_hog_vertical_edge_votes_one_bin_and_is_unit_norm_per_cell():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:] = 1.0  # a vertical edge: horizontal gradient only
    hist = HOG(nbins=9, cell_size=4).cell_histograms(x)  # (1, 1, 9, 2, 2)
    assert hist.shape == (1, 1, 9, 2, 2)
    assert torch.count_nonzero(hist.sum(dim=(0, 1, 3, 4))) == 1
    norms = hist.norm(dim=2)
    torch.testing.assert_close(norms, torch.ones_like(norms))


# ---------------------------------------------------------------- MaskFeat


def test_maskfeat_loss_matches_loop_reference_and_reads_only_masked_positions():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 5, 7, generator=g, dtype=torch.float64), torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 5, generator=g) < 0.5
    mask[0, 0] = True
    mask[0, 1] = False
    total, count = 0.0, 0
    for b in range(3):
        for n in range(5):
            if mask[b, n]:
                total += sum((pred[b, n, k].item() - target[b, n, k].item()) ** 2 for k in range(7))
                count += 7
    loss = MaskedFeatureLoss()(pred, target, mask)
    assert abs(loss.item() - total / count) < 1e-5
    changed = pred.clone()
    changed[0, 1] += 100.0  # an unmasked position
    assert torch.equal(MaskedFeatureLoss()(changed, target, mask), loss)
    changed[0, 0] += 1.0  # a masked one
    assert not torch.equal(MaskedFeatureLoss()(changed, target, mask), loss)


def test_maskfeat_masked_patches_never_reach_the_encoder_and_ratio():
    method = methods.get("maskfeat", backbone=tiny_vit(), **small("maskfeat")).eval()
    x = images()
    torch.manual_seed(3)
    mask = method.sample_mask(x)
    assert mask.shape == (4, 16) and bool((mask.sum(1) <= round(0.4 * 16)).all()) and bool((mask.sum(1) > 0).all())
    masked = int(mask[0].nonzero()[0])
    y = x.clone()
    y[0, :, patch_slice(masked)[0], patch_slice(masked)[1]] = 50.0
    with torch.no_grad():
        torch.testing.assert_close(method.predict(y, mask), method.predict(x, mask), rtol=0, atol=0)
        visible = int((~mask[0]).nonzero()[0])
        y[0, :, patch_slice(visible)[0], patch_slice(visible)[1]] = 50.0
        assert not torch.equal(method.predict(y, mask), method.predict(x, mask))


def test_maskfeat_step_is_the_masked_mse_to_the_hog_of_each_patch():
    method = methods.get("maskfeat", backbone=tiny_vit(), **small("maskfeat"))
    assert method.head.out_features == 3 * 9 * 2 * 2  # channels x bins x (4 px patch / 2 px cell)^2
    x = images()
    torch.manual_seed(7)
    loss = method.training_step(batch_of(x)).loss
    torch.manual_seed(7)
    mask = method.sample_mask(x)
    target = hog_reference_batch(x)
    expected = ((method.predict(x, mask) - target.float()) ** 2)[mask].mean()
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="cell size"):
        methods.get("maskfeat", backbone=tiny_vit(), cell_size=8)
    with pytest.raises(TypeError, match="VisionTransformer"):
        methods.get("maskfeat", backbone=selfsup.backbones.get("resnet_tiny", width=4))


def hog_reference_batch(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([hog_reference(img, 9, 2, 4, "cell") for img in x])


# ---------------------------------------------------------------- CAE


def test_cae_loss_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    pp, tp = torch.randn(2, 3, 6, generator=g, dtype=torch.float64), torch.randn(2, 3, 6, generator=g, dtype=torch.float64)
    pl, tl = torch.randn(2, 3, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    recon, align = 0.0, 0.0
    for b in range(2):
        for m in range(3):
            vals = tp[b, m].tolist()
            mu = sum(vals) / 6
            var = sum((v - mu) ** 2 for v in vals) / 5  # unbiased, as MAE's norm_pix_loss
            recon += sum((pp[b, m, k].item() - (vals[k] - mu) / math.sqrt(var + 1e-6)) ** 2 for k in range(6))
            align += sum((pl[b, m, k].item() - tl[b, m, k].item()) ** 2 for k in range(4))
    recon, align = recon / 36, align / 24
    total, r, a = CAELoss(align_weight=2.0)(pp, tp, pl, tl)
    assert abs(r.item() - recon) < 1e-5 and abs(a.item() - align) < 1e-5
    assert abs(total.item() - (recon + 2.0 * align)) < 1e-5
    raw_total, raw_r, _ = CAELoss(norm_pix=False)(pp, tp, pl, tl)
    assert abs(raw_r.item() - ((pp - tp) ** 2).mean().item()) < 1e-5


def test_cae_masking_partition_and_what_each_branch_reads():
    method = methods.get("cae", backbone=tiny_vit(), **small("cae")).eval()
    x = images()
    torch.manual_seed(4)
    mask = method.sample_mask(x)
    assert bool((mask.sum(1) == 8).all())  # exactly round(0.5 * 16) per image
    with torch.no_grad():
        ref = method.forward_parts(x, mask)
        both = torch.cat([ref["visible_index"], ref["masked_index"]], 1).sort(1).values
        assert torch.equal(both, torch.arange(16).expand(4, -1))
        assert bool(mask.gather(1, ref["masked_index"]).all()) and not bool(mask.gather(1, ref["visible_index"]).any())
        masked, visible = int(ref["masked_index"][0, 0]), int(ref["visible_index"][0, 0])
        y = x.clone()
        y[0, :, patch_slice(masked)[0], patch_slice(masked)[1]] = 50.0
        out = method.forward_parts(y, mask)  # the encoder never sees masked pixels
        torch.testing.assert_close(out["visible"], ref["visible"], rtol=0, atol=0)
        torch.testing.assert_close(out["pred_latents"], ref["pred_latents"], rtol=0, atol=0)
        assert not torch.equal(out["target_latents"], ref["target_latents"])
        z = x.clone()
        z[0, :, patch_slice(visible)[0], patch_slice(visible)[1]] = 50.0
        out = method.forward_parts(z, mask)  # targets come from the masked patches only
        torch.testing.assert_close(out["target_latents"], ref["target_latents"], rtol=0, atol=0)
        torch.testing.assert_close(out["target_pixels"], ref["target_pixels"], rtol=0, atol=0)
        assert not torch.equal(out["visible"], ref["visible"])


def test_cae_alignment_target_is_the_encoder_without_gradient():
    method = methods.get("cae", backbone=tiny_vit(), **small("cae")).eval()
    x = images()
    torch.manual_seed(4)
    mask = method.sample_mask(x)
    parts = method.forward_parts(x, mask)
    assert not parts["target_latents"].requires_grad and parts["pred_latents"].requires_grad
    vit = method.backbone
    with torch.no_grad():
        expected = vit.forward_tokens(x, keep=parts["masked_index"])[:, vit.num_prefix:]
    torch.testing.assert_close(parts["target_latents"], expected)
    # no frozen copy of the encoder: the parameters are the encoder's, the regressor's and the decoder's
    assert {name.split(".")[0] for name, _ in method.named_parameters()} == {"backbone", "regressor", "decoder"}
    with pytest.raises(TypeError, match="VisionTransformer"):
        methods.get("cae", backbone=selfsup.backbones.get("resnet_tiny", width=4))


# ---------------------------------------------------------------- smoke runs in the engine's hook order


@pytest.mark.parametrize("name", ["maskfeat", "cae"])
def test_two_steps_in_engine_order_change_parameters(name):
    method = methods.get(name, backbone=tiny_vit(), **small(name))
    before = {k: v.detach().clone() for k, v in method.backbone.named_parameters()}
    heads = {k: v.detach().clone() for k, v in method.named_parameters() if not k.startswith("backbone.")}
    method.configure_training(1, 2)
    groups = [g for g in method.parameter_groups(0.05) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    x = images(8)
    for step in range(2):
        if step == 0:
            method.on_epoch_start(0, lambda: torch.zeros(0))
        progress = method.begin_step(step)
        out = method.training_step(batch_of(x))
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        method.on_after_backward(progress)
        opt.step()
        method.end_step()
    assert any(not torch.equal(before[k], v) for k, v in method.backbone.named_parameters() if v.requires_grad)
    assert heads and all(not torch.equal(heads[k], v) for k, v in method.named_parameters() if k.endswith("head.weight"))
    assert method.embed(x).shape == (8, method.feature_dim)
