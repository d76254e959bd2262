"""Swin Transformer backbone (Liu et al. 2021, arXiv 2103.14030): shapes, window clamping, the
shifted-window attention mask against a wrap-around reference, the mask token, export, SimMIM."""
from __future__ import annotations

import pytest
import torch

import selfsup.backbones as backbones
import selfsup.methods as methods
from selfsup.backbones.swin import SwinBlock, shifted_window_mask, window_partition, window_reverse
from selfsup.methods import ViewBatch

TINY = dict(image_size=32, window_size=4, depths=(2, 2), num_heads=(2, 4), embed_dim=16)


def tiny_swin(**options):
    torch.manual_seed(0)
    return backbones.get("swin_tiny", **{**TINY, **options})


def images_of(batch: int = 2, size: int = 32, seed: int = 1, channels: int = 3) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def batch_of(images: torch.Tensor) -> ViewBatch:
    n = len(images)
    return ViewBatch(views=[images], labels=torch.arange(n) % 3, indices=torch.arange(n))


# ------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("size", [32, 64])
def test_two_stage_shapes_at_32_and_64_px(size):
    net = tiny_swin().eval()
    assert (net.feature_dim, net.stride) == (32, 8)
    x = images_of(size=size)
    assert net.feature_map(x).shape == (2, 32, size // 8, size // 8)
    assert net(x).shape == (2, 32)
    assert torch.allclose(net(x), net.feature_map(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("size", [32, 64])
def test_four_stage_swin_t_layout_and_small_map_clamping(size):
    torch.manual_seed(0)
    net = backbones.get("swin_tiny", image_size=64, window_size=4, embed_dim=8, num_heads=(1, 2, 4, 8),
                        drop_path_rate=0.1).eval()
    assert (net.feature_dim, net.stride) == (64, 32)
    assert [len(s) for s in net.stages] == [2, 2, 6, 2]
    assert net(images_of(size=size)).shape == (2, 64)
    assert net.feature_map(images_of(size=size)).shape == (2, 64, size // 32, size // 32)
    shifted = net.stages[0][1]
    # 32 px: maps 8, 4, 2, 1; the official rule: min(H, W) <= window -> window = H, no shift
    assert [shifted.window_and_shift(s, s) for s in (8, 4, 2, 1)] == [(4, 2), (4, 0), (2, 0), (1, 0)]
    assert net.stages[0][0].window_and_shift(8, 8) == (4, 0)  # even blocks never shift


def test_swin_tiny_defaults_are_the_papers():
    net = backbones.get("swin_tiny")
    assert (net.feature_dim, net.stride, net.window_size, net.patch_size) == (768, 32, 7, 4)
    assert [len(s) for s in net.stages] == [2, 2, 6, 2]
    assert [s[0].attn.heads for s in net.stages] == [3, 6, 12, 24]
    assert net.stages[0][0].attn.relative_position_bias_table.shape == (13 * 13, 3)


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="num_heads"):
        backbones.get("swin_tiny", depths=(2, 2), num_heads=(3,))
    with pytest.raises(ValueError, match="stride"):
        backbones.get("swin_tiny", image_size=48)
    with pytest.raises(ValueError, match="window"):
        tiny_swin(window_size=3)(images_of(size=32))  # 8x8 map, window 3


# ------------------------------------------------------------------------------------ windows


def test_window_partition_round_trip():
    x = torch.randn(2, 8, 4, 3)
    windows = window_partition(x, 2)
    assert windows.shape == (2 * 8, 4, 3)
    assert torch.equal(windows[1], x[0, 0:2, 2:4].reshape(4, 3))
    assert torch.equal(window_reverse(windows, 2, 8, 4), x)


@pytest.mark.parametrize("h, w, window, shift", [(4, 4, 2, 1), (8, 8, 4, 2), (8, 4, 2, 1)])
def test_shift_mask_blocks_exactly_the_wrapped_pairs(h, w, window, shift):
    mask = shifted_window_mask(h, w, window, shift)
    # reference: token at rolled (r, c) came from ((r + shift) % h, (c + shift) % w); two tokens of a
    # window may attend iff no wrap-around separates them, i.e. original offsets == rolled offsets
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rolled = torch.stack([rows, cols], dim=-1).unsqueeze(0).float()
    original = torch.stack([(rows + shift) % h, (cols + shift) % w], dim=-1).unsqueeze(0).float()
    rw, ow = window_partition(rolled, window), window_partition(original, window)
    same = ((rw[:, :, None] - rw[:, None, :]) == (ow[:, :, None] - ow[:, None, :])).all(-1)
    assert mask.shape == (h * w // window ** 2, window ** 2, window ** 2)
    assert torch.equal(mask == 0, same) and torch.equal(mask == -100.0, ~same)
    if (h, w, window) == (4, 4, 2):  # bottom-right window: (0, 0) wrapped in among (3, 3), (3, 0), (0, 3)
        assert mask[0].eq(0).all()
        assert mask[3].tolist() == [[0, -100, -100, -100], [-100, 0, -100, -100],
                                    [-100, -100, 0, -100], [-100, -100, -100, 0]]
        assert mask[1].tolist() == [[0, -100, 0, -100], [-100, 0, -100, 0],
                                    [0, -100, 0, -100], [-100, 0, -100, 0]]


def test_shifted_block_keeps_wrapped_tokens_apart():
    torch.manual_seed(0)
    block = SwinBlock(8, 2, window_size=2, shifted=True, mlp_ratio=2.0, drop_path=0.0).eval()
    torch.nn.init.normal_(block.attn.qkv.weight)  # sharp attention so that interactions show
    x = torch.randn(1, 4, 4, 8)
    base = block(x)

    def poke(r, c):
        y = x.clone()
        y[0, r, c] += 5.0 * torch.randn(8)  # not a constant: LayerNorm would remove it
        return block(y)

    # original (3, 3) shares its shifted window with (0, 0), (3, 0), (0, 3): wrapped, masked out
    assert torch.allclose(poke(0, 0)[0, 3, 3], base[0, 3, 3], atol=1e-6)
    assert torch.allclose(poke(0, 3)[0, 3, 3], base[0, 3, 3], atol=1e-6)
    # original (1, 1) and (2, 2) share the shifted window at rolled rows/cols 0-1: they interact
    assert not torch.allclose(poke(1, 1)[0, 2, 2], base[0, 2, 2], atol=1e-3)
    # without the shift (1, 1) and (2, 2) are in different windows
    block.shifted = False
    unshifted = block(x)
    assert torch.allclose(poke(1, 1)[0, 2, 2], unshifted[0, 2, 2], atol=1e-6)


# ------------------------------------------------------------------------------------ mask token, export


def test_masked_patch_pixels_do_not_reach_the_output():
    net = tiny_swin().eval()
    x = images_of()
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, [0, 9, 27]] = True
    changed_masked, changed_visible = x.clone(), x.clone()
    changed_masked[0, :, 4:8, 4:8] = 7.0  # patch 9 (row 1, col 1)
    changed_visible[0, :, 4:8, 8:12] = 7.0  # patch 10
    with torch.no_grad():
        base = net.forward_features(x, mask=mask)
        assert torch.equal(net.forward_features(changed_masked, mask=mask), base)
        assert not torch.allclose(net.forward_features(changed_visible, mask=mask), base)
        assert not torch.allclose(net.forward_features(x), base)  # the mask token matters
    with pytest.raises(ValueError, match="mask"):
        net.forward_features(x, mask=mask[:, :10])


def test_export_and_reload_exactly(tmp_path):
    net = tiny_swin(in_channels=1, drop_path_rate=0.1)
    assert net.config == {**TINY, "patch_size": 4, "in_channels": 1, "drop_path_rate": 0.1}
    path = backbones.export_backbone(net, tmp_path / "swin.safetensors", image_size=32)
    loaded, meta = backbones.load_exported(path)
    assert meta["backbone"] == "swin_tiny" and loaded.config == net.config
    x = images_of(channels=1)
    net.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


# ------------------------------------------------------------------------------------ SimMIM


def test_simmim_with_swin_two_steps_train_and_loss_reads_only_masked_pixels():
    method = methods.get("simmim", backbone=tiny_swin(), mask_patch_size=8)
    images = images_of(4)
    before = [q.detach().clone() for q in method.backbone.parameters()]
    groups = [g for g in method.parameter_groups(0.05) if g["params"]]
    no_decay = {id(q) for q in groups[1]["params"]}
    assert id(method.backbone.mask_token) in no_decay
    assert id(method.backbone.stages[0][0].attn.relative_position_bias_table) in no_decay
    opt = torch.optim.AdamW(groups, lr=0.01)
    losses = []
    for step in range(2):
        out = method.training_step(batch_of(images))
        opt.zero_grad()
        out.loss.backward()
        if step == 0:
            assert [n for n, q in method.named_parameters() if q.grad is None] == []
        opt.step()
        losses.append(out.loss.detach())
    assert all(torch.isfinite(loss) for loss in losses) and out.features.shape == (4, 32)
    assert any(not torch.equal(a, b) for a, b in zip(method.backbone.parameters(), before))

    # the head's output is a full image; changing it outside the masked pixels leaves the loss
    masks = []
    torch.manual_seed(5)
    mask = method.sample_mask(4, 32, 32, torch.device("cpu"))
    pixel_mask = mask.reshape(4, 8, 8).repeat_interleave(4, 1).repeat_interleave(4, 2)

    def run(hook=None):
        handle = method.head.register_forward_hook(hook) if hook else None
        torch.manual_seed(5)
        with torch.no_grad():
            loss = method.training_step(batch_of(images)).loss
        if handle:
            handle.remove()
        return loss

    def perturb_visible(module, args, out):
        masks.append(out.shape)
        return out + 3.0 * (~pixel_mask).unsqueeze(1)

    def perturb_masked(module, args, out):
        return out + 3.0 * pixel_mask.unsqueeze(1)

    base = run()
    assert torch.equal(run(perturb_visible), base) and masks == [(4, 3, 32, 32)]
    assert not torch.equal(run(perturb_masked), base)


def test_simmim_with_swin_checks_sizes():
    with pytest.raises(ValueError, match="multiple of the Swin patch size"):
        methods.get("simmim", backbone=tiny_swin(), mask_patch_size=6)
    method = methods.get("simmim", backbone=tiny_swin(), mask_patch_size=4)
    with pytest.raises(ValueError, match="total stride 8"):
        method.training_step(batch_of(images_of(size=36)))
