"""Multi-crop view recipes: a few large global crops and several small local crops (SwAV, DINO)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfsup.augment.recipes import RECIPES
from selfsup.augment.views import MultiView, ViewSpec

__all__ = ["dino", "local_size_for", "multicrop"]


def local_size_for(size: int, local_size: int | None) -> int:
    """The local crops' side: ``local_size``, or ``96 / 224`` of ``size`` (SwAV's ratio) if None.

    Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
    Assignments", arXiv 2006.09882 (https://arxiv.org/abs/2006.09882), Sec. 3.2: 224 px global and
    96 px local crops on ImageNet; official code https://github.com/facebookresearch/swav.

    Example:
        >>> local_size_for(224, None), local_size_for(32, None)
        (96, 14)
    """
    return int(local_size) if local_size is not None else max(1, round(size * 96 / 224))


def _counted(specs: list[tuple[ViewSpec, int]], seed: int) -> MultiView:
    """A MultiView of the specs whose count is positive, in the given order."""
    kept = [(spec, n) for spec, n in specs if n > 0]
    return MultiView([s for s, _ in kept], counts=[n for _, n in kept], seed=seed)


@RECIPES.register("multicrop", "SwAV multi-crop: 2 global crops (scale 0.14-1) + 6 local crops (0.05-0.14)")
def multicrop(
    size: int = 224,
    local_size: int | None = None,
    num_global: int = 2,
    num_local: int = 6,
    global_scale: tuple[float, float] = (0.14, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.14),
    strength: float = 1.0,
    blur_p: float = 0.5,
    gray_p: float = 0.2,
    jitter_p: float = 0.8,
    hflip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """SwAV's multi-crop: ``num_global`` crops of ``size`` px, then ``num_local`` of ``local_size``.

    Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
    Assignments", arXiv 2006.09882 (https://arxiv.org/abs/2006.09882), Sec. 3.2 and the official
    code (https://github.com/facebookresearch/swav, ``src/multicropdataset.py``): 2 x 224 px crops
    with scale (0.14, 1) and 6 x 96 px crops with scale (0.05, 0.14); every crop is flipped with
    probability 0.5 and gets SimCLR's colour distortion of strength 1 (jitter 0.8, 0.8, 0.8, 0.2
    with probability 0.8, grayscale 0.2) and Gaussian blur with probability 0.5. ``local_size``
    defaults to 96/224 of ``size`` (96 at 224 px), so the recipe scales with the data's image size.
    Global views come first. ``num_local=0`` gives a plain two-view recipe (the CIFAR setting).

    Example:
        >>> views = multicrop(size=32, local_size=16, num_local=4)
        >>> [s.size for s in views.specs], list(views.counts)
        ([32, 16], [2, 4])
    """
    if num_global < 1 or num_local < 0:
        raise ValueError(f"multicrop needs num_global >= 1 and num_local >= 0, got {num_global}, {num_local}")
    common: dict[str, Any] = dict(
        hflip_p=hflip_p, jitter=(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength),
        jitter_p=jitter_p, gray_p=gray_p, blur_p=blur_p, mean=mean, std=std,
    )
    global_spec = ViewSpec(size=size, scale=global_scale, **common)
    local_spec = ViewSpec(size=local_size_for(size, local_size), scale=local_scale, **common)
    return _counted([(global_spec, num_global), (local_spec, num_local)], seed)


@RECIPES.register("dino", "DINO: 2 global crops (blur 1.0 / 0.1 + solarize 0.2) + 6 local crops (blur 0.5)")
def dino(
    size: int = 224,
    local_size: int | None = None,
    num_local: int = 6,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
    blur_probs: tuple[float, float, float] = (1.0, 0.1, 0.5),
    solarize_p: float = 0.2,
    hflip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """DINO's views: two different global crops, then ``num_local`` local crops.

    Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", arXiv
    2104.14294 (https://arxiv.org/abs/2104.14294), Sec. 3.1 and Appendix, and the official code
    (https://github.com/facebookresearch/dino, ``main_dino.py``, ``DataAugmentationDINO``): every
    crop is flipped with probability 0.5 and gets colour jitter (0.4, 0.4, 0.2, 0.1) with
    probability 0.8 and grayscale with probability 0.2 (BYOL's colour ops); global crops have
    scale (0.4, 1) and ``size`` px, the first always blurred, the second blurred with probability
    0.1 and solarized with probability 0.2; local crops have scale (0.05, 0.4), 96/224 of ``size``
    px by default, and blur probability 0.5 (``blur_probs`` = global 1, global 2, local).

    Example:
        >>> views = dino(size=32)
        >>> [s.blur_p for s in views.specs], list(views.counts)
        ([1.0, 0.1, 0.5], [1, 1, 6])
    """
    if num_local < 0:
        raise ValueError(f"dino needs num_local >= 0, got {num_local}")
    common: dict[str, Any] = dict(
        hflip_p=hflip_p, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, gray_p=0.2, mean=mean, std=std
    )
    global1 = ViewSpec(size=size, scale=global_scale, blur_p=blur_probs[0], **common)
    global2 = ViewSpec(size=size, scale=global_scale, blur_p=blur_probs[1], solarize_p=solarize_p, **common)
    local = ViewSpec(size=local_size_for(size, local_size), scale=local_scale, blur_p=blur_probs[2], **common)
    return _counted([(global1, 1), (global2, 1), (local, num_local)], seed)
