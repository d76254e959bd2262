"""View recipes of distillation methods with a weakly augmented teacher view (ReSSL)."""
from __future__ import annotations

from collections.abc import Sequence

from selfsup.augment.recipes import RECIPES
from selfsup.augment.views import MultiView, ViewSpec

__all__ = ["ressl"]


@RECIPES.register("ressl", "ReSSL: a strong MoCo v2 view (student) and a weak crop + flip view (teacher)")
def ressl(
    size: int = 224,
    scale: tuple[float, float] = (0.2, 1.0),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    blur_p: float = 0.5,
    hflip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """ReSSL's pair: view 0 strongly augmented (student), view 1 weakly augmented (teacher).

    Zheng et al. 2021, "ReSSL: Relational Self-Supervised Learning with Weak Augmentation", arXiv
    2107.09282 (https://arxiv.org/abs/2107.09282), Sec. 3.3, and the official code
    (https://github.com/KyleZheng1997/ReSSL, ``data/augmentation.py``): the strong view is MoCo
    v2's (crop scale (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8, grayscale 0.2,
    blur 0.5, flip); the weak view is only a random resized crop with the same scale and a flip.
    solo-learn's CIFAR recipe uses scale (0.08, 1) and jitter (0.4, 0.4, 0.2, 0.1).

    Example:
        >>> views = ressl(size=32)
        >>> [s.jitter_p for s in views.specs]
        [0.8, 0.0]
    """
    strong = ViewSpec(size=size, scale=scale, hflip_p=hflip_p, jitter=jitter, jitter_p=0.8, gray_p=0.2,
                      blur_p=blur_p, mean=mean, std=std)
    weak = ViewSpec(size=size, scale=scale, hflip_p=hflip_p, jitter_p=0.0, gray_p=0.0, blur_p=0.0,
                    solarize_p=0.0, mean=mean, std=std)
    return MultiView([strong, weak], seed=seed)
