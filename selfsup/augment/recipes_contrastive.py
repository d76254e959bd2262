"""View recipes of the contrastive methods with momentum encoders (MoCo v1)."""
from __future__ import annotations

from collections.abc import Sequence

from selfsup.augment.recipes import RECIPES
from selfsup.augment.views import MultiView, ViewSpec

__all__ = ["mocov1"]


@RECIPES.register("mocov1", "MoCo v1: two views, crop scale 0.2-1, jitter 0.4 always, grayscale 0.2, flip")
def mocov1(
    size: int = 224,
    scale: tuple[float, float] = (0.2, 1.0),
    hflip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """The two identically distributed views of MoCo v1.

    He et al. 2019, "Momentum Contrast for Unsupervised Visual Representation Learning", arXiv
    1911.05722 (https://arxiv.org/abs/1911.05722), Sec. 4 "Implementation", and the official code
    (https://github.com/facebookresearch/moco, ``main_moco.py`` without ``--aug-plus``): random
    resized crop with scale (0.2, 1.0), random grayscale with probability 0.2, colour jitter
    (brightness, contrast, saturation and hue all 0.4) applied to every image, horizontal flip; no
    blur. The official pipeline converts to grayscale before the jitter; here, as in every recipe
    of this library, the jitter comes first. This only matters for the 20% grayscale views:
    brightness, contrast and saturation commute with the conversion (up to clipping), the hue
    shift does not (here it may change such a view's gray levels; there it has no effect).

    Example:
        >>> mocov1(size=32).specs[0].jitter
        (0.4, 0.4, 0.4, 0.4)
    """
    spec = ViewSpec(
        size=size, scale=scale, hflip_p=hflip_p, jitter=(0.4, 0.4, 0.4, 0.4), jitter_p=1.0,
        gray_p=0.2, blur_p=0.0, solarize_p=0.0, mean=mean, std=std,
    )
    return MultiView([spec], counts=[2], seed=seed)
