"""Self-supervised methods: one short file each on the shared :class:`Method` base.

Each method class declares a :class:`MethodCard` (paper, family, views, backbones, test sizes);
``card(name)`` reads it, and :func:`is_stateful` tells whether a built method keeps state outside
the gradient.

Example:
    >>> method = selfsup.methods.get("simclr", backbone=selfsup.backbones.get("resnet_tiny", width=4))
    >>> selfsup.methods.names()[:3]
    ['a2mim', 'aim', 'barlowtwins']
    >>> selfsup.methods.card("simclr").title
    'A Simple Framework for Contrastive Learning of Visual Representations'
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from selfsup.backbones.base import Backbone
from selfsup.methods.base import Method, StepOutput, ViewBatch, decay_groups
from selfsup.methods.card import ANY_BACKBONE, BACKBONE_KINDS, FAMILIES, MethodCard, backbone_kind
from selfsup.methods.registry import METHODS
from selfsup.methods.stateful import is_stateful, state_outside_gradient

# importing a method module registers it: import every module of this package
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry", "table"):  # table: run as python -m selfsup.methods.table
        importlib.import_module(f"{__name__}.{_module.name}")
from selfsup.methods.byol import BYOL  # noqa: E402
from selfsup.methods.mocov2 import MoCoV2  # noqa: E402
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


def card(name: str) -> MethodCard:
    """The card of method ``name``: paper, family, views, backbones, test and benchmark sizes.

    Example:
        >>> card("mae").backbones
        ('vit',)
    """
    return METHODS.card(name)


__all__ = ["ANY_BACKBONE", "BACKBONE_KINDS", "BYOL", "FAMILIES", "METHODS", "Method", "MethodCard", "MoCoV2",
           "SimCLR", "SimSiam", "StepOutput", "ViewBatch", "backbone_kind", "card", "decay_groups", "get",
           "is_stateful", "names", "state_outside_gradient"]
