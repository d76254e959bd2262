"""What the generic tests read from the method cards: tiny backbones, small options, engine flags.

Every registered method's card carries ``small`` (method options) and ``small_views`` (view-recipe
options) that fit the tests' 16 px images, tiny backbones and few images; the tests take their
sizes from here instead of keeping tables of their own.

Usage::

    method = selfsup.methods.get("byol", backbone=tiny_backbone("byol"), **small("byol"))
"""
from __future__ import annotations

from typing import Any

import torch

from selfsup import augment, backbones, methods
from selfsup._registry import accepted_kwargs
from selfsup.backbones.base import Backbone

TINY_VIT = dict(image_size=16, patch_size=4, depth=2)
"""A 2-block ``vit_nano`` (96-d, 3 heads) on 16 px images with 4 px patches (a 4 x 4 grid): a
quarter of ``vit_tiny``'s cost per step, which matters for the multi-crop teachers (iBOT, DINOv2)
in the exact-resume test."""
ENGINE_RESNET = ["--backbone", "resnet_tiny", "backbone.width=4"]
ENGINE_VIT = ["--backbone", "vit_nano", "backbone.image_size=16", "backbone.patch_size=4", "backbone.depth=2",
              "optimizer.name=adamw", "optimizer.lr=1e-3", "optimizer.lr_scaling=none"]


def uses_resnet(name: str) -> bool:
    """Whether the tests train ``name`` on ``resnet_tiny`` (it accepts ResNets) or on :func:`tiny_vit`."""
    return "resnet" in methods.card(name).backbones


def tiny_vit(**options: Any) -> Backbone:
    """The tests' ViT (:data:`TINY_VIT`)."""
    return backbones.get("vit_nano", **{**TINY_VIT, **options})


def tiny_backbone(name: str) -> Backbone:
    """``resnet_tiny`` of width 4 (32-d) when method ``name`` accepts a ResNet, else :func:`tiny_vit`."""
    return backbones.get("resnet_tiny", width=4) if uses_resnet(name) else tiny_vit()


def small(name: str, num_samples: int | None = None, **options: Any) -> dict[str, Any]:
    """``name``'s card sizes plus ``options``; ``num_samples`` only when the method takes it."""
    result = {**methods.card(name).small, **options}
    if num_samples is not None and "num_samples" in accepted_kwargs(methods.METHODS.factory(name)):
        result["num_samples"] = num_samples
    return result


MEAN, STD = (0.5,) * 3, (0.25,) * 3


def small_views(name: str, size: int = 16, seed: int = 0, **options: Any):
    """``name``'s default view recipe at ``size`` px with its card's ``small_views``, normalised
    with :data:`MEAN` and :data:`STD`."""
    card = methods.card(name)
    return augment.get(card.views, size=size, seed=seed, mean=MEAN, std=STD, **{**card.small_views, **options})


def engine_args(name: str) -> list[str]:
    """``selfsup train`` flags for ``name``: its tiny backbone and its card's small sizes."""
    return [*(ENGINE_RESNET if uses_resnet(name) else ENGINE_VIT), *methods.card(name).overrides("small")]


def stateful_methods() -> list[str]:
    """Registered methods with state outside the gradient (:func:`selfsup.methods.is_stateful`),
    found by building each on its tiny backbone."""
    found = []
    for name in methods.names():
        torch.manual_seed(0)
        if methods.is_stateful(methods.get(name, backbone=tiny_backbone(name), **small(name, num_samples=16))):
            found.append(name)
    return found
