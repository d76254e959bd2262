"""Named view recipes from the literature, each a function returning a :class:`MultiView`."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfsup._registry import Registry
from selfsup.augment.views import MultiView, ViewSpec

RECIPES: Registry[MultiView] = Registry("view recipe")


@RECIPES.register("simclr", "SimCLR: two views, crop, flip, strong colour jitter, grayscale, blur")
def simclr(
    size: int = 224,
    strength: float = 1.0,
    blur_p: float = 0.5,
    scale: tuple[float, float] = (0.08, 1.0),
    gray_p: float = 0.2,
    jitter_p: float = 0.8,
    hflip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """Two identically distributed views as in SimCLR.

    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
    arXiv 2002.05709, Appendix A, and the official code (github.com/google-research/simclr):
    random resized crop with flip, colour jitter of strength ``s`` (brightness, contrast,
    saturation ``0.8 s``, hue ``0.2 s``) with probability 0.8, grayscale with probability 0.2 and,
    on ImageNet, Gaussian blur with probability 0.5, sigma in [0.1, 2.0] and a kernel 10% of the
    image size. For CIFAR-10 the paper uses strength 0.5 and no blur: ``simclr(size=32,
    strength=0.5, blur_p=0.0)``. Colour ops follow torchvision's ``ColorJitter`` semantics, as
    PyTorch reimplementations do, rather than the TensorFlow ops of the official code.

    Example:
        >>> simclr(size=32, strength=0.5, blur_p=0.0).num_views
        2
    """
    spec = ViewSpec(
        size=size,
        scale=scale,
        hflip_p=hflip_p,
        jitter=(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength),
        jitter_p=jitter_p,
        gray_p=gray_p,
        blur_p=blur_p,
        mean=mean,
        std=std,
    )
    return MultiView([spec], counts=[2], seed=seed)


@RECIPES.register("byol", "BYOL: asymmetric pair, blur always on view 1, solarize sometimes on view 2")
def byol(
    size: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    hflip_p: float = 0.5,
    blur_probs: tuple[float, float] = (1.0, 0.1),
    solarize_probs: tuple[float, float] = (0.0, 0.2),
    strength: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """BYOL's asymmetric pair of views.

    Grill et al. 2020, "Bootstrap Your Own Latent", arXiv 2006.07733, Table 6: both views use
    random resized crop, flip with probability 0.5, colour jitter (brightness 0.4, contrast 0.4,
    saturation 0.2, hue 0.1, in a random order) with probability 0.8 and grayscale with
    probability 0.2; Gaussian blur (sigma in [0.1, 2.0], kernel 10% of the image size) has
    probability 1.0 on view 1 and 0.1 on view 2 (``blur_probs``); solarization 0.0 on view 1 and
    0.2 on view 2 (``solarize_probs``). CIFAR recipes commonly drop the blur
    (``blur_probs=(0.0, 0.0)``, as solo-learn's). ``strength`` scales the four jitter amounts
    (lightly's ``cj_strength``: its CIFAR-10 DINO benchmark uses 0.5).

    Example:
        >>> [spec.solarize_p for spec in byol(size=32).specs]
        [0.0, 0.2]
    """
    jitter = tuple(strength * amount for amount in (0.4, 0.4, 0.2, 0.1))
    common: dict[str, Any] = dict(size=size, scale=scale, hflip_p=hflip_p, jitter=jitter, mean=mean, std=std)
    view1 = ViewSpec(blur_p=blur_probs[0], solarize_p=solarize_probs[0], **common)
    view2 = ViewSpec(blur_p=blur_probs[1], solarize_p=solarize_probs[1], **common)
    return MultiView([view1, view2], seed=seed)


@RECIPES.register("mocov2", "MoCo v2 / SimSiam: two views, crop scale 0.2-1, jitter 0.4, blur 0.5")
def mocov2(
    size: int = 224,
    scale: tuple[float, float] = (0.2, 1.0),
    hflip_p: float = 0.5,
    blur_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """The two-view recipe of MoCo v2, reused by SimSiam.

    Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning", arXiv 2003.04297,
    and the official code (github.com/facebookresearch/moco, ``augmentation`` with ``--aug-plus``;
    github.com/facebookresearch/simsiam): random resized crop with scale (0.2, 1.0), colour jitter
    (0.4, 0.4, 0.4, 0.1) with probability 0.8, grayscale with probability 0.2, Gaussian blur with
    sigma in [0.1, 2.0] and probability 0.5, horizontal flip. CIFAR recipes drop the blur.

    Example:
        >>> mocov2(size=32, blur_p=0.0).specs[0].scale
        (0.2, 1.0)
    """
    spec = ViewSpec(
        size=size, scale=scale, hflip_p=hflip_p, jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8,
        gray_p=0.2, blur_p=blur_p, mean=mean, std=std,
    )
    return MultiView([spec], counts=[2], seed=seed)


@RECIPES.register("crop_flip", "crop and flip only (pretext tasks, masked image modelling)")
def crop_flip(
    size: int = 224,
    scale: tuple[float, float] = (0.2, 1.0),
    hflip_p: float = 0.5,
    num_views: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """Random resized crop and horizontal flip, no colour changes.

    The light augmentation of masked image modelling (MAE, He et al. 2021, arXiv 2111.06377:
    crop scale (0.2, 1.0) and flip) and of pretext tasks such as rotation prediction.

    Example:
        >>> crop_flip(size=32).specs[0].jitter_p
        0.0
    """
    spec = ViewSpec(size=size, scale=scale, hflip_p=hflip_p, jitter_p=0.0, gray_p=0.0, blur_p=0.0,
                    solarize_p=0.0, mean=mean, std=std)
    return MultiView([spec], counts=[num_views], seed=seed)


def get(name: str, **kwargs: Any) -> MultiView:
    """Build the recipe ``name`` with keyword options.

    Example:
        >>> get("simclr", size=32).num_views
        2
    """
    return RECIPES.get(name, **kwargs)


def names() -> list[str]:
    """Names of all registered recipes, sorted.

    Example:
        >>> "byol" in names()
        True
    """
    return RECIPES.names()
