"""The backbone registry: ``selfsup.backbones.get("resnet18", cifar_stem=True)``."""
from __future__ import annotations

from collections.abc import Sequence

from selfsup._registry import Registry
from selfsup.backbones.base import Backbone
from selfsup.backbones.resnet import resnet_factory
from selfsup.backbones.small_resnet import SmallResNet
from selfsup.backbones.swin import SwinTransformer
from selfsup.backbones.timm_backbone import PREFIX, TimmBackbone
from selfsup.backbones.vit import VisionTransformer

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


# (embed_dim, depth, num_heads); vit_nano is not a published size: a 96-d ViT for CPU benchmarks and tests
_VIT_SIZES = {"vit_nano": (96, 12, 3), "vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6),
              "vit_base": (768, 12, 12)}


def _vit_factory(name: str, dim: int, depth: int, heads: int):
    def build(
        image_size: int = 224, patch_size: int = 16, in_channels: int = 3, num_registers: int = 0,
        pos_embed: str = "sincos", drop_path_rate: float = 0.0, depth: int = depth, pool: str | None = None,
        activation_checkpointing: bool = False,
    ) -> VisionTransformer:
        vit = VisionTransformer(image_size=image_size, patch_size=patch_size, embed_dim=dim, depth=depth,
                                num_heads=heads, in_channels=in_channels, num_registers=num_registers,
                                pos_embed=pos_embed, drop_path_rate=drop_path_rate, pool=pool,
                                activation_checkpointing=activation_checkpointing)
        vit.config = {"image_size": image_size, "patch_size": patch_size, "in_channels": in_channels,
                      "num_registers": num_registers, "pos_embed": pos_embed, "depth": depth, "pool": pool}
        return vit

    build.__name__ = name
    return build


for _name, (_dim, _depth, _heads) in _VIT_SIZES.items():
    BACKBONES.register(
        _name, f"ViT ({_dim}-d, {_depth} blocks, {_heads} heads): masking, registers, resizable position embedding; "
        "patch_size / image_size options; pool: cls / avg (set by the method)",
    )(_vit_factory(_name, _dim, _depth, _heads))


@BACKBONES.register(
    "swin_tiny", "Swin-T (Liu et al. 2021; 96-d, depths (2,2,6,2)): shifted-window attention, mask token for "
    "SimMIM, 768-d pooled features; image_size / patch_size / window_size / depths options",
)
def swin_tiny(
    image_size: int = 224, patch_size: int = 4, window_size: int = 7, embed_dim: int = 96,
    depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (3, 6, 12, 24), in_channels: int = 3,
    drop_path_rate: float = 0.0,
) -> SwinTransformer:
    depths, num_heads = tuple(int(d) for d in depths), tuple(int(h) for h in num_heads)
    swin = SwinTransformer(image_size=image_size, patch_size=patch_size, window_size=window_size,
                           embed_dim=embed_dim, depths=depths, num_heads=num_heads, in_channels=in_channels,
                           drop_path_rate=drop_path_rate)
    swin.config = {"image_size": image_size, "patch_size": patch_size, "window_size": window_size,
                   "embed_dim": embed_dim, "depths": depths, "num_heads": num_heads, "in_channels": in_channels,
                   "drop_path_rate": drop_path_rate}
    return swin


def get(name: str, **kwargs: object) -> Backbone:
    """Build a registered backbone, or a timm model named ``"timm:<model>"``; unknown names and
    options get a clear error.

    Example:
        >>> net = get("resnet_small", in_channels=1)
        >>> net.feature_dim
        256
    """
    if name.startswith(PREFIX):
        return TimmBackbone(name[len(PREFIX):], **kwargs)
    net = BACKBONES.get(name, **kwargs)
    net.name = name
    return net


def names() -> list[str]:
    """The registered backbone names."""
    return BACKBONES.names()
