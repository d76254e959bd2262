"""Self-supervised methods: one short file each on the shared :class:`Method` base.

Example:
    >>> method = selfsup.methods.get("simclr", backbone=selfsup.backbones.get("resnet18"))
    >>> selfsup.methods.names()  # ['byol', 'mocov2', 'simclr', 'simsiam']
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from selfsup.backbones.base import Backbone
from selfsup.methods.base import Method, StepOutput, ViewBatch, decay_groups
from selfsup.methods.registry import METHODS

# importing a method module registers it: import every module of this package
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")
from selfsup.methods.byol import BYOL  # noqa: E402
from selfsup.methods.moco import MoCoV2  # noqa: E402
from selfsup.methods.simclr import SimCLR  # noqa: E402
from selfsup.methods.simsiam import SimSiam  # noqa: E402


def get(name: str, backbone: Backbone, **hyperparameters: Any) -> Method:
    """Build method ``name`` around ``backbone``; unknown names and options get a clear error.

    Example:
        >>> method = get("byol", backbone=selfsup.backbones.get("resnet_tiny"), base_momentum=0.996)
    """
    return METHODS.get(name, backbone=backbone, **hyperparameters)


def names() -> list[str]:
    """Registered method names."""
    return METHODS.names()


__all__ = ["BYOL", "METHODS", "Method", "MoCoV2", "SimCLR", "SimSiam", "StepOutput", "ViewBatch",
           "decay_groups", "get", "names"]
