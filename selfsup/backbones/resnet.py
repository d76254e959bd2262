"""torchvision ResNets as backbones, with an optional CIFAR stem and any input channel count.

The CIFAR stem (3x3 convolution, stride 1, no max-pool) is the variant used for 32 px inputs in
SimCLR (Chen et al. 2020, arXiv 2002.05709, Appendix B.9) and most CIFAR recipes since.

The module *is* a ``torchvision.models.ResNet`` with ``fc`` replaced by an identity, so its state
dict has exactly torchvision's parameter names: an exported backbone loads into
``torchvision.models.resnet18()`` with ``strict=False`` (only ``fc.weight`` / ``fc.bias`` are
missing), after the same stem change when ``cifar_stem`` or ``in_channels != 3`` was used.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import ResNet
from torchvision.models.resnet import BasicBlock, Bottleneck

from selfsup.backbones.base import Backbone

_LAYOUTS: dict[str, tuple[type[nn.Module], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


def adapt_stem(model: ResNet, *, in_channels: int = 3, cifar_stem: bool = False) -> ResNet:
    """Replace a torchvision ResNet's first convolution (and max-pool) in place.

    Apply the same call to a fresh ``torchvision.models.resnet18()`` before loading an exported
    backbone that was trained with ``cifar_stem=True`` or ``in_channels=1``.

    Example:
        >>> import torchvision
        >>> model = adapt_stem(torchvision.models.resnet18(), in_channels=1, cifar_stem=True)
        >>> model.conv1
        Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
    """
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


class TorchvisionResNet(ResNet, Backbone):
    """A torchvision ResNet-18/34/50 returning globally pooled features.

    Args:
        depth_name: "resnet18", "resnet34" or "resnet50".
        in_channels: 1 for grayscale data, 3 for colour.
        cifar_stem: 3x3 stride-1 first convolution and no max-pool, for 32 px inputs.
        zero_init_residual: start each residual branch's last BN at zero (Goyal et al. 2017).

    Example:
        >>> net = TorchvisionResNet("resnet18", cifar_stem=True)
        >>> net(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self,
        depth_name: str = "resnet18",
        *,
        in_channels: int = 3,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        block, layers = _LAYOUTS[depth_name]
        super().__init__(block, layers, zero_init_residual=zero_init_residual)
        adapt_stem(self, in_channels=in_channels, cifar_stem=cifar_stem)
        self.feature_dim = self.fc.in_features
        self.fc = nn.Identity()
        self.name = depth_name
        self.config = {"in_channels": in_channels, "cifar_stem": cifar_stem}

    def forward(self, images: Tensor) -> Tensor:
        return super().forward(images)

    def feature_map(self, images: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet_factory(depth_name: str) -> Callable[..., TorchvisionResNet]:
    """A registry factory that builds ``depth_name`` with keyword options."""

    def build(
        in_channels: int = 3, cifar_stem: bool = False, zero_init_residual: bool = False
    ) -> TorchvisionResNet:
        return TorchvisionResNet(
            depth_name, in_channels=in_channels, cifar_stem=cifar_stem,
            zero_init_residual=zero_init_residual,
        )

    build.__name__ = depth_name
    return build

