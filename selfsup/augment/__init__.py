"""Batched, device-side view making for self-supervised learning.

Images travel to the accelerator as a uint8 batch ``(B, C, H, W)`` and every augmentation runs
there on the whole batch at once: crop, resize and flip are one ``grid_sample``, the colour ops
and blur are tensor ops over the batch, and each sample still gets its own random parameters
(drawn as per-sample tensors, with ops applied to the selected subset of the batch) instead of a
Python loop over images. All randomness comes from an explicit ``torch.Generator``, so a seed (or
a saved generator state) reproduces the views exactly. A :class:`ViewSpec` describes one view,
:class:`MultiView` makes several, and ``RECIPES`` names the published pipelines.
"""
import importlib as _importlib
import pkgutil as _pkgutil

from selfsup.augment import functional
from selfsup.augment.recipes import RECIPES, byol, crop_flip, get, mocov2, names, simclr
from selfsup.augment.views import EvalTransform, MultiView, ViewParams, ViewSpec, apply_view, render_view, sample_view

__all__ = [
    "RECIPES",
    "EvalTransform",
    "MultiView",
    "ViewParams",
    "ViewSpec",
    "apply_view",
    "byol",
    "crop_flip",
    "functional",
    "get",
    "mocov2",
    "names",
    "render_view",
    "sample_view",
    "simclr",
]

# further recipe modules (recipes_<family>.py) register themselves on import
for _module in _pkgutil.iter_modules(__path__):
    if _module.name.startswith("recipes_"):
        _importlib.import_module(f"{__name__}.{_module.name}")
