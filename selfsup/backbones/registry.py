"""The backbone registry: ``selfsup.backbones.get("resnet18", cifar_stem=True)``."""
from __future__ import annotations

from collections.abc import Sequence

from selfsup._registry import Registry
from selfsup.backbones.base import Backbone
from selfsup.backbones.resnet import resnet_factory
from selfsup.backbones.small_resnet import SmallResNet

BACKBONES: Registry[Backbone] = Registry("backbone")

for _depth in (18, 34, 50):
    BACKBONES.register(
        f"resnet{_depth}",
        f"torchvision ResNet-{_depth} (cifar_stem=True for 32 px inputs), "
        f"{512 if _depth < 50 else 2048}-d features",
    )(resnet_factory(f"resnet{_depth}"))


@BACKBONES.register("resnet_small", "CIFAR-style ResNet, 4 stages of 1 block, width 32: 256-d, fast on CPU")
def resnet_small(width: int = 32, blocks: Sequence[int] = (1, 1, 1, 1), in_channels: int = 3) -> SmallResNet:
    return SmallResNet(width=width, blocks=blocks, in_channels=in_channels)


@BACKBONES.register("resnet_tiny", "CIFAR-style ResNet, 4 stages of 1 block, width 8: 64-d, for tests")
def resnet_tiny(width: int = 8, blocks: Sequence[int] = (1, 1, 1, 1), in_channels: int = 3) -> SmallResNet:
    return SmallResNet(width=width, blocks=blocks, in_channels=in_channels)


def get(name: str, **kwargs: object) -> Backbone:
    """Build a registered backbone; unknown names and options get a clear error.

    Example:
        >>> net = get("resnet_small", in_channels=1)
        >>> net.feature_dim  # 256
    """
    net = BACKBONES.get(name, **kwargs)
    net.name = name
    return net


def names() -> list[str]:
    """The registered backbone names."""
    return BACKBONES.names()
