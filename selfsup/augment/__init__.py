"""Batched, device-side view making for self-supervised learning.

Images travel to the accelerator as a uint8 batch ``(B, C, H, W)`` and every augmentation runs
there on the whole batch at once, each sample with its own random parameters (drawn as
per-sample tensors, with ops applied to the selected subset of the batch) instead of a Python
loop over images. A :class:`View` is an ordered list of ops (:class:`Op`: ``sample`` draws the
parameters from a ``torch.Generator``, ``apply`` applies them); users add their own with
:func:`register_op`. :class:`MultiView` makes several views with a seeded, checkpointable
generator, each op drawing from its own stream. ``RECIPES`` names the published pipelines
(written with :class:`ViewSpec`) and ``custom`` builds views from op lists written as data.

Example:
    >>> import torch
    >>> from selfsup.augment import MultiView, View, ops
    >>> view = View([ops.RandomResizedCrop(size=16), ops.VerticalFlip(), ops.Rotate90()], mean=(0.5,), std=(0.2,))
    >>> [v.shape for v in MultiView([view], counts=[2])(torch.zeros(4, 1, 32, 32, dtype=torch.uint8))][0]
    torch.Size([4, 1, 16, 16])
"""
import importlib as _importlib
import pkgutil as _pkgutil

from selfsup.augment import functional, ops
from selfsup.augment.framed import FramedImages
from selfsup.augment.geometry import Views, cell_centres, view_geometry
from selfsup.augment.multiview import MultiView
from selfsup.augment.op import OPS, Op, Params, RandomOp, make_op, register_op
from selfsup.augment.ops import (
    ColorJitter,
    GaussianBlur,
    Grayscale,
    HorizontalFlip,
    RandomErasing,
    RandomResizedCrop,
    Rotate90,
    Solarize,
    VerticalFlip,
)
from selfsup.augment.pipeline import View, ViewParams
from selfsup.augment.recipes import RECIPES, byol, crop_flip, get, mocov2, names, simclr
from selfsup.augment.views import EvalTransform, ViewSpec, apply_view, render_view, sample_view

__all__ = [
    "OPS",
    "RECIPES",
    "ColorJitter",
    "EvalTransform",
    "FramedImages",
    "GaussianBlur",
    "Grayscale",
    "HorizontalFlip",
    "MultiView",
    "Op",
    "Params",
    "RandomErasing",
    "RandomOp",
    "RandomResizedCrop",
    "Rotate90",
    "Solarize",
    "VerticalFlip",
    "View",
    "ViewParams",
    "ViewSpec",
    "Views",
    "apply_view",
    "byol",
    "cell_centres",
    "crop_flip",
    "functional",
    "get",
    "make_op",
    "mocov2",
    "names",
    "ops",
    "register_op",
    "render_view",
    "sample_view",
    "simclr",
    "view_geometry",
]

# further recipe modules (recipes_<family>.py) register themselves on import
for _module in _pkgutil.iter_modules(__path__):
    if _module.name.startswith("recipes_"):
        _importlib.import_module(f"{__name__}.{_module.name}")
