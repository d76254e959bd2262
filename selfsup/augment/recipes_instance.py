"""View recipes of instance-discrimination methods (NPID), registered into ``RECIPES``."""
from __future__ import annotations

from collections.abc import Sequence

from selfsup.augment.recipes import RECIPES
from selfsup.augment.views import MultiView, ViewSpec

__all__ = ["npid"]


@RECIPES.register("npid", "NPID: one view, crop scale 0.2-1, grayscale 0.2, jitter 0.4 (hue 0.4), flip")
def npid(
    size: int = 224,
    scale: tuple[float, float] = (0.2, 1.0),
    hflip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """NPID's single augmented view.

    Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
    arXiv 1805.01978 (https://arxiv.org/abs/1805.01978), and the official ``main.py``
    (https://github.com/zhirongw/lemniscate.pytorch): random resized crop with scale (0.2, 1.0),
    grayscale with probability 0.2, colour jitter (0.4, 0.4, 0.4, 0.4) always applied, horizontal
    flip. The official CIFAR script leaves the flip out (``hflip_p=0.0``). Jitter runs before
    grayscale here (the official pipeline converts to grayscale first).

    Example:
        >>> npid(size=32).num_views
        1
    """
    spec = ViewSpec(size=size, scale=scale, hflip_p=hflip_p, jitter=(0.4, 0.4, 0.4, 0.4),
                    jitter_p=1.0, gray_p=0.2, blur_p=0.0, mean=mean, std=std)
    return MultiView([spec], counts=[1], seed=seed)
