"""MAE and SimMIM: losses vs float64 loop references written from the papers, the masking
generators, what the encoder and the loss may see, the decoder's unshuffling, smoke runs."""
from __future__ import annotations

import math

import pytest
import torch

import selfsup.augment as augment
import selfsup.backbones as backbones
import selfsup.config as config
import selfsup.methods as methods
from selfsup.losses.mae import MAELoss
from selfsup.losses.simmim import SimMIMLoss
from selfsup.methods import ViewBatch
from selfsup.nn.mae_decoder import MAEDecoder
from selfsup.nn.masking import block_random_mask, random_masking
from selfsup.nn.patches import patchify, sincos_position_embedding
from method_sizes import small


def tiny_vit(channels: int = 3):
    torch.manual_seed(0)
    return backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2, in_channels=channels)


def build(name: str, **options):
    return methods.get(name, backbone=tiny_vit(), **small(name, **options))


def batch_of(images: torch.Tensor) -> ViewBatch:
    n = len(images)
    return ViewBatch(views=[images], labels=torch.arange(n) % 3, indices=torch.arange(n))


def images_of(batch: int = 4, seed: int = 1, channels: int = 3, size: int = 16) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def set_patch(images: torch.Tensor, sample: int, index: int, p: int, value: float) -> torch.Tensor:
    """Copy of ``images`` with raster patch ``index`` of ``sample`` set to ``value``."""
    out = images.clone()
    grid_w = images.shape[-1] // p
    r, c = divmod(index, grid_w)
    out[sample, :, r * p:(r + 1) * p, c * p:(c + 1) * p] = value
    return out


# ------------------------------------------------------------------------------------ masking


@pytest.mark.parametrize(  # count = ceil(cells * ratio), as the official MaskGenerator
    "grid, block, ratio, count", [((4, 4), 2, 0.6, 3), ((8, 8), 2, 0.6, 10), ((4, 10), 2, 0.7, 7), ((4, 4), 1, 0.6, 10)]
)
def test_block_random_mask_masks_ceil_of_the_cells_in_whole_blocks(grid, block, ratio, count):
    gh, gw = grid
    mask = block_random_mask(5, gh, gw, block, ratio, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (5, gh * gw) and mask.sum(dim=1).tolist() == [count * block * block] * 5
    blocks = mask.reshape(5, gh // block, block, gw // block, block).permute(0, 1, 3, 2, 4).flatten(3)
    assert torch.all(blocks.all(dim=-1) | ~blocks.any(dim=-1))  # each block all or nothing
    with pytest.raises(ValueError):
        block_random_mask(1, 5, 4, 2, 0.6)


# ------------------------------------------------------------------------------------ losses


def mae_loss_reference(pred, patches, mask, norm_pix, eps=1e-6):
    """He et al. 2021, Sec. 3: per-patch MSE to (normalised) pixels, mean over masked patches."""
    pred, patches = pred.double(), patches.double()
    total, count = 0.0, 0
    b_n, n_n, p_n = pred.shape
    for b in range(b_n):
        for i in range(n_n):
            if not mask[b, i]:
                continue
            t = [float(v) for v in patches[b, i]]
            if norm_pix:
                mean = sum(t) / p_n
                var = sum((v - mean) ** 2 for v in t) / (p_n - 1)  # unbiased, as torch.var
                t = [(v - mean) / math.sqrt(var + eps) for v in t]
            total += sum((float(pred[b, i, j]) - t[j]) ** 2 for j in range(p_n)) / p_n
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_loss_matches_float64_loop_reference(norm_pix):
    g = torch.Generator().manual_seed(0)
    pred, patches = torch.randn(3, 9, 12, generator=g), torch.randn(3, 9, 12, generator=g) * 2 + 1
    mask = torch.rand(3, 9, generator=g) < 0.6
    got = MAELoss(norm_pix_loss=norm_pix)(pred, patches, mask)
    assert got.item() == pytest.approx(mae_loss_reference(pred, patches, mask, norm_pix), abs=1e-5, rel=1e-5)


def simmim_loss_reference(rec, images, mask, eps=1e-5):
    """Xie et al. 2021, Eq. 1 / official code: L1 over masked pixels / (#masked pixels + eps) / C."""
    b_n, c_n, h_n, w_n = images.shape
    total, masked = 0.0, 0.0
    for b in range(b_n):
        for h in range(h_n):
            for w in range(w_n):
                if mask[b, h, w]:
                    masked += 1
                    for c in range(c_n):
                        total += abs(float(rec[b, c, h, w]) - float(images[b, c, h, w]))
    return total / (masked + eps) / c_n


@pytest.mark.parametrize("channels", [1, 3])
def test_simmim_loss_matches_float64_loop_reference(channels):
    g = torch.Generator().manual_seed(1)
    rec, images = torch.randn(2, channels, 8, 8, generator=g), torch.randn(2, channels, 8, 8, generator=g)
    mask = torch.rand(2, 8, 8, generator=g) < 0.6
    got = SimMIMLoss()(rec, images, mask)
    assert got.item() == pytest.approx(simmim_loss_reference(rec, images, mask), abs=1e-5, rel=1e-5)


def test_losses_read_only_masked_positions():
    g = torch.Generator().manual_seed(2)
    pred, patches = torch.randn(2, 16, 48, generator=g), torch.randn(2, 16, 48, generator=g)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, ::3] = True
    loss = MAELoss()(pred, patches, mask)
    changed = pred.clone()
    changed[~mask] += 5.0
    assert torch.equal(MAELoss()(changed, patches, mask), loss)
    changed[0, 0] += 1.0  # a masked patch
    assert not torch.equal(MAELoss()(changed, patches, mask), loss)

    rec, images = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    pixel_mask = torch.rand(2, 8, 8, generator=g) < 0.5
    loss = SimMIMLoss()(rec, images, pixel_mask)
    changed = rec.clone()
    changed.permute(0, 2, 3, 1)[~pixel_mask] += 5.0
    assert torch.equal(SimMIMLoss()(changed, images, pixel_mask), loss)
    changed.permute(0, 2, 3, 1)[pixel_mask] += 1.0
    assert not torch.equal(SimMIMLoss()(changed, images, pixel_mask), loss)


# ------------------------------------------------------------------------------------ MAE


def test_mae_decoder_unshuffles_visible_tokens_and_fills_mask_tokens():
    torch.manual_seed(0)
    decoder = MAEDecoder(encoder_dim=8, patch_dim=5, embed_dim=8, depth=1, num_heads=2)
    keep, mask, restore = random_masking(3, 16, 0.75, generator=torch.Generator().manual_seed(1))
    tokens = torch.randn(3, 1 + 4, 8)
    seen = {}
    decoder.blocks[0].register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    out = decoder(tokens, restore, 1, 4, 4)
    assert out.shape == (3, 16, 5)
    x = seen["x"]
    embedded = decoder.embed(tokens)
    assert torch.allclose(x[:, 0], embedded[:, 0])  # the class token gets no position
    full = x[:, 1:] - sincos_position_embedding(4, 4, 8)
    for b in range(3):
        for slot, index in enumerate(keep[b].tolist()):
            assert torch.allclose(full[b, index], embedded[b, 1 + slot], atol=1e-6)
        assert torch.allclose(full[b, mask[b]], decoder.mask_token[0].expand(12, -1), atol=1e-6)


def test_mae_encoder_never_sees_masked_patches_and_loss_ignores_visible_predictions():
    method = build("mae")
    images, p = images_of(), 4
    torch.manual_seed(5)
    _, mask, _ = random_masking(4, 16, 0.75)
    assert mask.sum().item() == 4 * 12
    latents, outputs = [], []
    method.decoder.register_forward_pre_hook(lambda module, args: latents.append(args[0].detach()))

    def run(x):
        torch.manual_seed(5)  # the same mask as above
        outputs.append(method.training_step(batch_of(x)).loss.detach())

    masked_index = int(torch.nonzero(mask[0])[0])
    visible_index = int(torch.nonzero(~mask[0])[0])
    run(images)
    run(set_patch(images, 0, masked_index, p, 7.0))
    run(set_patch(images, 0, visible_index, p, 7.0))
    assert latents[0].shape == (4, 1 + 4, 192)  # only the 4 kept patches enter the encoder
    assert torch.equal(latents[0], latents[1])  # a dropped patch's pixels never reach it
    assert not torch.allclose(latents[0], latents[2])  # a kept patch's do
    assert not torch.equal(outputs[0], outputs[1])  # the masked patch is a target

    def perturb_visible(module, args, out):
        changed = out.clone()
        changed[~mask] += 3.0
        return changed

    handle = method.decoder.register_forward_hook(perturb_visible)
    run(images)
    handle.remove()
    assert torch.allclose(outputs[3], outputs[0], rtol=0, atol=1e-6)


def test_mae_needs_a_vit_and_freezes_the_unused_encoder_mask_token():
    with pytest.raises(TypeError, match="VisionTransformer"):
        methods.get("mae", backbone=backbones.get("resnet_tiny", width=4))
    method = build("mae")
    assert not method.backbone.mask_token.requires_grad
    assert method.decoder.mask_token.requires_grad
    assert (method.mask_ratio, method.criterion.norm_pix_loss) == (0.75, True)
    defaults = methods.get("mae", backbone=tiny_vit())
    assert (defaults.decoder.embed_dim, len(defaults.decoder.blocks), defaults.decoder.blocks[0].heads) == (512, 8, 16)


# ------------------------------------------------------------------------------------ SimMIM


def test_simmim_masked_pixels_never_reach_the_encoder_and_loss_reads_only_masked_pixels():
    method = build("simmim")
    images, p = images_of(), 4
    torch.manual_seed(7)
    mask = method.sample_mask(4, 16, 16, torch.device("cpu"))
    # 16 px / 8 px mask patches: 4 cells, ceil(4 * 0.6) = 3 masked, 2x2 tokens each
    assert mask.sum(dim=1).tolist() == [12] * 4
    tokens, outputs = [], []
    method.head.register_forward_pre_hook(lambda module, args: tokens.append(args[0].detach()))

    def run(x):
        torch.manual_seed(7)
        outputs.append(method.training_step(batch_of(x)).loss.detach())

    masked_index = int(torch.nonzero(mask[0])[0])
    visible_index = int(torch.nonzero(~mask[0])[0])
    run(images)
    run(set_patch(images, 0, masked_index, p, 7.0))
    run(set_patch(images, 0, visible_index, p, 7.0))
    assert tokens[0].shape == (4, 16, 192)  # every patch token goes through the encoder
    assert torch.equal(tokens[0], tokens[1])  # a masked patch is replaced by the mask token
    assert not torch.allclose(tokens[0], tokens[2])
    assert not torch.equal(outputs[0], outputs[1])  # ... and is a target

    def perturb_visible(module, args, out):
        changed = out.clone()
        changed[~mask] += 3.0
        return changed

    handle = method.head.register_forward_hook(perturb_visible)
    run(images)
    handle.remove()
    assert torch.equal(outputs[3], outputs[0])


def test_simmim_loss_equals_the_reference_on_the_method_outputs():
    method = build("simmim")
    images = images_of(2)
    torch.manual_seed(3)
    mask = method.sample_mask(2, 16, 16, torch.device("cpu"))
    recs = []
    method.head.register_forward_hook(lambda module, args, out: recs.append(out.detach()))
    torch.manual_seed(3)
    loss = method.training_step(batch_of(images)).loss
    # the head's (B, N, p*p*C) output laid out as pixels; the token mask as a pixel mask
    rec = recs[0].reshape(2, 4, 4, 4, 4, 3).permute(0, 5, 1, 3, 2, 4).reshape(2, 3, 16, 16)
    pixel_mask = mask.reshape(2, 4, 1, 4, 1).expand(2, 4, 4, 4, 4).reshape(2, 16, 16)
    assert loss.item() == pytest.approx(simmim_loss_reference(rec, images, pixel_mask), abs=1e-5)
    assert torch.equal(patchify(rec, 4), recs[0])


def test_simmim_checks_backbone_and_mask_patch_size():
    with pytest.raises(TypeError, match="VisionTransformer"):
        methods.get("simmim", backbone=backbones.get("resnet_tiny", width=4))
    with pytest.raises(ValueError, match="multiple of the ViT patch"):
        methods.get("simmim", backbone=tiny_vit(), mask_patch_size=6)
    method = build("simmim", mask_patch_size=12)
    with pytest.raises(ValueError, match="mask_patch_size"):
        method.training_step(batch_of(images_of()))
    defaults = methods.get("simmim", backbone=tiny_vit())
    assert (defaults.mask_ratio, defaults.mask_patch_size, defaults.default_views) == (0.6, 32, "simmim")
    spec = augment.get("simmim", size=16).specs[0]
    assert (spec.scale, spec.hflip_p, spec.jitter_p) == ((0.67, 1.0), 0.5, 0.0)


# ------------------------------------------------------------------------------------ smoke


def engine_steps(method, images, steps=2, lr=0.05):
    """The engine's hook order: configure_training, on_epoch_start, then per step begin_step,
    training_step, backward, on_after_backward, optimizer step, end_step."""
    method.configure_training(1, steps)
    method.on_epoch_start(0, lambda: torch.zeros(0))
    groups = [g for g in method.parameter_groups(0.05) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr)
    outs = []
    for step in range(steps):
        progress = method.begin_step(step)
        out = method.training_step(batch_of(images))
        opt.zero_grad()
        out.loss.backward()
        if step == 0:  # every trainable parameter is used (DistributedDataParallel needs it)
            unused = [n for n, q in method.named_parameters() if q.requires_grad and q.grad is None]
            assert unused == []
        method.on_after_backward(progress)
        opt.step()
        method.end_step()
        outs.append(out)
    return outs


@pytest.mark.parametrize("name, channels", [("mae", 3), ("simmim", 3), ("mae", 1), ("simmim", 1)])
def test_two_engine_steps_train_the_backbone(name, channels):
    torch.manual_seed(0)
    vit = backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2, in_channels=channels)
    method = methods.get(name, backbone=vit, **small(name))
    before = [q.detach().clone() for q in method.backbone.parameters() if q.requires_grad]
    outs = engine_steps(method, images_of(6, channels=channels))
    assert all(torch.isfinite(o.loss) for o in outs)
    assert outs[0].features.shape == (6, 192)
    after = [q for q in method.backbone.parameters() if q.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert method.default_views in augment.RECIPES.names()


@pytest.mark.parametrize("name", ["mae", "simmim"])
def test_recipes_load(name):
    for dataset in ("cifar10", "fashion_mnist"):
        cfg = config.load(f"{dataset}/{name}")
        assert cfg.method["name"] == name and cfg.backbone["name"].startswith("vit")


def test_simmim_keeps_weight_decay_off_the_class_token_and_norms():
    method = methods.get("simmim", backbone=backbones.get(
        "vit_tiny", image_size=16, patch_size=4, depth=2, pos_embed="learned"), mask_patch_size=8)
    decay, no_decay = method.parameter_groups(0.05)
    ids = lambda group: {id(q) for q in group["params"]}  # noqa: E731
    vit = method.backbone
    assert {id(vit.cls_token), id(vit.pos_embed), id(vit.norm.weight)} <= ids(no_decay)
    assert {id(vit.mask_token), id(method.head.weight), id(vit.patch_embed.weight)} <= ids(decay)
    trainable = {id(q) for q in method.parameters() if q.requires_grad}
    assert ids(decay) | ids(no_decay) == trainable and not ids(decay) & ids(no_decay)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
