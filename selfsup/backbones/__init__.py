"""Encoders that return pooled features and expose ``feature_dim``.

Example:
    >>> net = selfsup.backbones.get("resnet18", cifar_stem=True, in_channels=1)
    >>> net.feature_dim
    512
"""
from selfsup.backbones.base import Backbone
from selfsup.backbones.export import export_backbone, load_exported, read_metadata
from selfsup.backbones.registry import BACKBONES, get, names
from selfsup.backbones.resnet import TorchvisionResNet, adapt_stem
from selfsup.backbones.small_resnet import SmallResNet

__all__ = [
    "BACKBONES", "Backbone", "SmallResNet", "TorchvisionResNet", "adapt_stem", "export_backbone",
    "get", "load_exported", "names", "read_metadata",
]
