"""Any timm model as a backbone, by name: ``selfsup.backbones.get("timm:convnext_tiny")``.

timm (github.com/huggingface/pytorch-image-models) is optional: ``pip install "selfsup[timm]"``.
Models are built without a classifier (``num_classes=0``) and without downloaded weights, so
their forward returns pooled features, as every selfsup backbone does.
"""
from __future__ import annotations

import importlib
from typing import Any

from torch import Tensor

from selfsup.backbones.base import Backbone
from selfsup.errors import ConfigError

PREFIX = "timm:"


def import_timm() -> Any:
    """The timm module, or a clear error saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError as err:
        raise ConfigError(
            'Backbones named "timm:<model>" need the timm package: pip install "selfsup[timm]" '
            '(or pip install timm).'
        ) from err


class TimmBackbone(Backbone):
    """A timm model returning pooled features; ``feature_dim`` is its ``num_features``.

    Args:
        model_name: a timm model name, e.g. ``"convnext_tiny"`` or ``"swin_tiny_patch4_window7_224"``.
        in_channels: input channels (timm's ``in_chans``).
        **options: further keyword arguments for ``timm.create_model`` (e.g. ``img_size=32``).

    Example:
        >>> net = TimmBackbone("resnet18", in_channels=1)
        >>> net(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 512])
    """

    def __init__(self, model_name: str, in_channels: int = 3, **options: Any) -> None:
        super().__init__()
        timm = import_timm()
        try:
            self.model = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_channels,
                                           **options)
        except RuntimeError as err:  # timm's "Unknown model"
            raise ConfigError(f"timm has no model {model_name!r} ({err}); list them with timm.list_models().") from err
        self.feature_dim = int(self.model.num_features)
        self.name = PREFIX + model_name
        self.config = {"in_channels": in_channels, **options}

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def feature_map(self, images: Tensor) -> Tensor:
        """timm's ``forward_features``: a map (B, C, h, w) for CNNs, tokens for transformers."""
        return self.model.forward_features(images)
