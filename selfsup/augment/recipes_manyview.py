"""View recipes with more than two identically distributed views (FastSiam, MMCR, LeJEPA)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfsup.augment.recipes import RECIPES
from selfsup.augment.views import MultiView, ViewSpec

__all__ = ["fastsiam", "lejepa", "mmcr"]


def _identical_views(recipe: str, num_views: int, seed: int, **spec: Any) -> MultiView:
    """``num_views`` views drawn alike from one :class:`ViewSpec` (at least two: these methods compare views)."""
    if num_views < 2:
        raise ValueError(f"view recipe {recipe!r} needs num_views >= 2, got {num_views}")
    return MultiView([ViewSpec(**spec)], counts=[num_views], seed=seed)


@RECIPES.register("fastsiam", "FastSiam: SimSiam's views, four of them (three targets per prediction)")
def fastsiam(
    size: int = 224,
    num_views: int = 4,
    scale: tuple[float, float] = (0.2, 1.0),
    hflip_p: float = 0.5,
    blur_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """``num_views`` views drawn like SimSiam's (MoCo v2's): the FastSiam recipe.

    Pototzky et al. 2022, "FastSiam: Resource-Efficient Self-supervised Learning on a Single GPU",
    GCPR 2022 (https://doi.org/10.1007/978-3-031-16788-1_4): ``k + 1 = 4`` views, each predicted
    from the mean of the other three. The transform of each view is SimSiam's (Chen & He 2021,
    arXiv 2011.10566): random resized crop with scale (0.2, 1.0), colour jitter (0.4, 0.4, 0.4,
    0.1) with probability 0.8, grayscale with probability 0.2, Gaussian blur with probability 0.5,
    horizontal flip; lightly's ``FastSiamTransform`` draws the same. CIFAR recipes drop the blur.

    Example:
        >>> fastsiam(size=32, blur_p=0.0).num_views
        4
    """
    return _identical_views("fastsiam", num_views, seed, size=size, scale=scale, hflip_p=hflip_p,
                            jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, gray_p=0.2, blur_p=blur_p, mean=mean, std=std)


@RECIPES.register("mmcr", "MMCR: k views, crop, flip, jitter 0.4 (p 0.8), grayscale 0.2, no blur")
def mmcr(
    size: int = 224,
    num_views: int = 4,
    scale: tuple[float, float] = (0.08, 1.0),
    hflip_p: float = 0.5,
    blur_p: float = 0.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """``num_views`` identically distributed views, as MMCR's official CIFAR/STL pipeline draws them.

    Yerxa et al. 2023, "Learning Efficient Coding of Natural Images with Maximum Manifold Capacity
    Representations", arXiv 2303.03307; official code https://github.com/ThomasYerxa/mmcr
    (``mmcr/cifar_stl/data.py``): random resized crop with torchvision's default scale (0.08, 1.0),
    horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8, grayscale with
    probability 0.2, no blur. The official CIFAR runs use 40 views of 32 images per batch, the
    ImageNet run 8 views. The default here, 4, is this library's choice (a step costs twice a
    two-view method's); the paper reports that more views help, and ``num_views`` sets any count.

    Example:
        >>> mmcr(size=32, num_views=8).num_views
        8
    """
    return _identical_views("mmcr", num_views, seed, size=size, scale=scale, hflip_p=hflip_p,
                            jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, gray_p=0.2, blur_p=blur_p, mean=mean, std=std)


@RECIPES.register("lejepa", "LeJEPA: k views, crop 0.08-1, jitter 0.8 (p 0.8), grayscale 0.2, blur 0.5, solarize 0.2")
def lejepa(
    size: int = 224,
    num_views: int = 4,
    scale: tuple[float, float] = (0.08, 1.0),
    hflip_p: float = 0.5,
    blur_p: float = 0.5,
    solarize_p: float = 0.2,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """``num_views`` identically distributed views, as LeJEPA's official minimal example draws them.

    Balestriero & LeCun 2025, arXiv 2511.08544; official code https://github.com/rbalestr-lab/lejepa
    (``MINIMAL.md``, 4 views): random resized crop with scale (0.08, 1.0), colour jitter (0.8, 0.8,
    0.8, 0.2) with probability 0.8, grayscale with probability 0.2, Gaussian blur with probability
    0.5, solarisation with probability 0.2, horizontal flip. For the paper's global and local crops
    use the ``multicrop`` recipe with the method's ``num_global_views``.

    Example:
        >>> lejepa(size=32).num_views
        4
    """
    return _identical_views("lejepa", num_views, seed, size=size, scale=scale, hflip_p=hflip_p,
                            jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, gray_p=0.2, blur_p=blur_p,
                            solarize_p=solarize_p, mean=mean, std=std)
