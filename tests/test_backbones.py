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
