"""View recipes of masked image modelling (SimMIM's milder crop; MAE uses ``crop_flip``)."""
from __future__ import annotations

from collections.abc import Sequence

from selfsup.augment.recipes import RECIPES
from selfsup.augment.views import MultiView, ViewSpec

__all__ = ["simmim"]


@RECIPES.register("simmim", "SimMIM: one view, random resized crop (scale 0.67-1) and flip")
def simmim(
    size: int = 192,
    scale: tuple[float, float] = (0.67, 1.0),
    hflip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """SimMIM's single view: a random resized crop with scale (0.67, 1) and a horizontal flip.

    Xie et al. 2021, "SimMIM: A Simple Framework for Masked Image Modeling", arXiv 2111.09886
    (https://arxiv.org/abs/2111.09886), Sec. 4.1, and the official ``SimMIMTransform``
    (https://github.com/microsoft/SimMIM, ``data/data_simmim.py``); no colour changes.

    Example:
        >>> simmim(size=32).specs[0].scale
        (0.67, 1.0)
    """
    spec = ViewSpec(size=size, scale=scale, hflip_p=hflip_p, jitter_p=0.0, gray_p=0.0, blur_p=0.0,
                    solarize_p=0.0, mean=mean, std=std)
    return MultiView([spec], counts=[1], seed=seed)
