"""A narrow, shallow ResNet for CPUs, tests and small images.

Same building block as ResNet-18 (torchvision's ``BasicBlock``) with a CIFAR-style stem
(3x3 convolution, stride 1, no max-pool), four stages of widths ``w, 2w, 4w, 8w`` and a chosen
number of blocks per stage (He et al. 2016, "Deep Residual Learning for Image Recognition",
arXiv 1512.03385). With ``width=64, blocks=(2, 2, 2, 2)`` it is the CIFAR ResNet-18.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from selfsup.backbones.base import Backbone


class SmallResNet(Backbone):
    """A width- and depth-configurable CIFAR-style ResNet returning pooled features.

    Args:
        width: channels of the first stage; stages have ``width * (1, 2, 4, 8)``.
        blocks: residual blocks per stage (four numbers).
        in_channels: 1 for grayscale, 3 for colour.

    Example:
        >>> net = SmallResNet(width=16, blocks=(1, 1, 1, 1))
        >>> net(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self, width: int = 32, blocks: Sequence[int] = (1, 1, 1, 1), in_channels: int = 3
    ) -> None:
        super().__init__()
        if width < 1 or len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(
                f"SmallResNet needs width >= 1 and four block counts >= 1, got width={width}, "
                f"blocks={tuple(blocks)}"
            )
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], width
        for i, count in enumerate(blocks):
            out, stride = width * 2**i, 1 if i == 0 else 2
            layers = []
            for j in range(count):
                downsample = None
                if j == 0 and (stride != 1 or channels != out):
                    downsample = nn.Sequential(
                        nn.Conv2d(channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
                    )
                layers.append(BasicBlock(channels, out, stride if j == 0 else 1, downsample))
                channels = out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.config = {"width": width, "blocks": list(blocks), "in_channels": in_channels}

    def forward(self, images: Tensor) -> Tensor:
        return self.pool(self.feature_map(images)).flatten(1)

    def feature_map(self, images: Tensor) -> Tensor:
        return self.stages(self.stem(images))
