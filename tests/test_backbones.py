"""Backbones: shapes, stems, channel counts, export and reload."""
from __future__ import annotations

import pytest
import torch

import selfsup.backbones as backbones
from selfsup.errors import ConfigError, SelfSupError


@pytest.mark.parametrize("name, dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048),
                                       ("resnet_small", 256), ("resnet_tiny", 64)])
def test_feature_dim_and_pooled_output(name, dim):
    net = backbones.get(name, in_channels=1).eval()
    assert net.feature_dim == dim
    with torch.no_grad():
        assert net(torch.rand(2, 1, 32, 32)).shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    plain, cifar = backbones.get("resnet18"), backbones.get("resnet18", cifar_stem=True)
    assert plain.conv1.kernel_size == (7, 7) and plain.conv1.stride == (2, 2)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    x = torch.rand(1, 3, 32, 32)
    stem = lambda net: net.maxpool(net.relu(net.bn1(net.conv1(x))))  # noqa: E731
    assert stem(plain).shape[-1] == 8 and stem(cifar).shape[-1] == 32


def test_small_resnet_width_and_depth():
    net = backbones.get("resnet_small", width=8, blocks=(2, 1, 1, 1))
    assert net.feature_dim == 64 and len(net.stages[0]) == 2
    with pytest.raises(ValueError, match="four block counts"):
        backbones.get("resnet_small", blocks=(1, 1))


def test_export_and_reload_is_exact(tmp_path):
    torch.manual_seed(0)
    net = backbones.get("resnet_small", width=8, in_channels=1).eval()
    path = backbones.export_backbone(net, tmp_path / "b.safetensors", image_size=28)
    again, meta = backbones.load_exported(path)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(net(x), again.eval()(x), rtol=0, atol=0)
    assert meta["image_size"] == 28 and meta["backbone"] == "resnet_small"


def test_unknown_option_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cifar_stem"):
        backbones.get("resnet18", cifar_stm=True)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(SelfSupError, match="bad.safetensors"):
        backbones.load_exported(bad)


@pytest.mark.parametrize("name", ["resnet18", "resnet_tiny"])
def test_feature_map_pools_to_the_features(name):
    net = backbones.get(name, cifar_stem=True) if name == "resnet18" else backbones.get(name)
    net.eval()
    x = torch.rand(2, 3, 16, 16)
    fmap = net.feature_map(x)
    assert fmap.dim() == 4 and fmap.shape[1] == net.feature_dim
    torch.testing.assert_close(fmap.mean((2, 3)), net(x))


def tiny_vit(**options):
    torch.manual_seed(0)
    return backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2, **options).eval()


def test_patchify_layout_and_round_trip():
    from selfsup.nn.patches import patchify, unpatchify

    x = torch.rand(2, 3, 8, 12)
    patches = patchify(x, 4)
    assert patches.shape == (2, 6, 48)
    # patch 4 is row 1, column 1 of the 2x3 grid; its vector is the pixels in (h, w, c) order
    torch.testing.assert_close(patches[:, 4], x[:, :, 4:8, 4:8].permute(0, 2, 3, 1).reshape(2, -1))
    assert torch.equal(unpatchify(patches, 4, 8, 12, 3), x)


def test_vit_shapes_registers_and_feature_map():
    vit = tiny_vit(num_registers=2)
    x = torch.rand(2, 3, 16, 16)
    assert vit(x).shape == (2, 192) and vit.feature_dim == 192
    assert vit.forward_tokens(x).shape == (2, 1 + 2 + 16, 192)
    assert vit.feature_map(x).shape == (2, 192, 4, 4)
    attention = vit.last_attention(x)
    assert attention.shape == (2, 3, 19, 19)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 3, 19))


def test_dropped_patches_never_reach_the_encoder():
    vit = tiny_vit()
    x = torch.rand(2, 3, 16, 16)
    keep = torch.tensor([[0, 5, 10, 15], [1, 2, 3, 4]])
    out = vit.forward_tokens(x, keep=keep)
    assert out.shape == (2, 1 + 4, 192)
    changed = x.clone()
    changed[0, :, 4:8, 0:4] = 0.5  # patch 4 of image 0 is not kept
    torch.testing.assert_close(vit.forward_tokens(changed, keep=keep)[0], out[0])
    changed[0, :, 0:4, 0:4] = 0.5  # patch 0 of image 0 is kept
    assert not torch.allclose(vit.forward_tokens(changed, keep=keep)[0], out[0])


def test_masked_patches_are_replaced_by_the_mask_token():
    vit = tiny_vit()
    x = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 3] = True
    out = vit.forward_tokens(x, mask=mask)
    changed = x.clone()
    changed[:, :, 0:4, 12:16] = 0.0  # patch 3: masked, its pixels must not matter
    torch.testing.assert_close(vit.forward_tokens(changed, mask=mask), out)
    assert not torch.allclose(vit.forward_tokens(changed), vit.forward_tokens(x))


def test_position_embedding_for_other_image_sizes():
    from selfsup.nn.patches import resized_positions, sincos_embedding_at

    vit = tiny_vit()  # a 4x4 table; a 2x2 grid covers it (tests/test_vit_positions.py)
    spread = resized_positions(2, 4)
    torch.testing.assert_close(vit.position_embedding(2, 2)[0], sincos_embedding_at(spread, spread, 192))
    assert vit(torch.rand(2, 3, 8, 8)).shape == (2, 192)  # a local crop
    learned = tiny_vit(pos_embed="learned")
    assert learned.pos_embed.requires_grad and learned.position_embedding(6, 6).shape == (1, 36, 192)
    torch.testing.assert_close(learned.position_embedding(4, 4), learned.pos_embed)


def test_vit_export_and_drop_path(tmp_path):
    vit = tiny_vit(num_registers=1)
    path = backbones.export_backbone(vit, tmp_path / "vit.safetensors")
    again, meta = backbones.load_exported(path)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(again.eval()(x), vit(x), rtol=0, atol=0)
    deep = backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2, drop_path_rate=0.5)
    torch.testing.assert_close(deep.eval()(x), deep(x))  # no stochastic depth at evaluation
    deep.train()
    assert not torch.allclose(deep(x), deep(x))


def test_timm_backbones_need_timm_and_say_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *args, **kwargs):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    monkeypatch.delitem(__import__("sys").modules, "timm", raising=False)
    with pytest.raises(ConfigError, match=r'pip install "selfsup\[timm\]"'):
        backbones.get("timm:convnext_tiny")


def test_timm_models_are_wrapped_by_name(monkeypatch, tmp_path):
    """With a stand-in timm module: the wrapper asks for no classifier and no download, pools, exports."""
    import sys
    import types

    calls = []

    class Model(torch.nn.Module):
        num_features = 12

        def __init__(self, in_chans):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_chans, 12, 3)

        def forward_features(self, x):
            return self.conv(x)

        def forward(self, x):
            return self.forward_features(x).mean((2, 3))

    def create_model(name, pretrained, num_classes, in_chans, **options):
        calls.append((name, pretrained, num_classes, in_chans, options))
        if name == "nope":
            raise RuntimeError("Unknown model (nope)")
        return Model(in_chans)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))
    net = backbones.get("timm:convnext_tiny", in_channels=1, drop_path_rate=0.1)
    assert calls[-1] == ("convnext_tiny", False, 0, 1, {"drop_path_rate": 0.1})
    assert net.feature_dim == 12 and net(torch.rand(2, 1, 8, 8)).shape == (2, 12)
    path = backbones.export_backbone(net, tmp_path / "t.safetensors")
    again, meta = backbones.load_exported(path)
    assert meta["backbone"] == "timm:convnext_tiny"
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(again(x), net(x))
    with pytest.raises(ConfigError, match="timm has no model 'nope'"):
        backbones.get("timm:nope")


def test_activation_checkpointing_recomputes_blocks_and_keeps_the_gradients():
    """Same weights, same stochastic-depth draws: equal loss and gradients, and each block's
    input norm runs twice per step (forward, then again in the backward pass) only with checkpointing."""
    nets = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        nets.append(backbones.get("vit_nano", image_size=16, patch_size=4, depth=2, drop_path_rate=0.3,
                                  activation_checkpointing=checkpointing).train())
    calls = [0, 0]
    for i, net in enumerate(nets):
        for block in net.blocks:
            block.norm1.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    x = torch.randn(4, 3, 16, 16)
    grads = []
    for net in nets:
        torch.manual_seed(1)  # the same drop-path draws in both
        net(x).square().sum().backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None})
    assert calls == [2, 4]
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=0, atol=1e-6, msg=k)
    with torch.no_grad():  # evaluation stores nothing to recompute
        nets[1].eval()(x)
    assert calls[1] == 6
