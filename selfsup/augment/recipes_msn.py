"""MSN's views: one target view, random anchor views of the same size and small focal anchor views."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from selfsup.augment.recipes import RECIPES
from selfsup.augment.views import MultiView, ViewSpec

__all__ = ["msn"]


@RECIPES.register("msn", "MSN: 1 target + 1 random anchor (scale 0.3-1) + 10 focal anchors (0.05-0.3), SimCLR colours 0.5")
def msn(
    size: int = 224,
    focal_size: int | None = None,
    size_multiple: int = 4,
    num_random: int = 1,
    num_focal: int = 10,
    random_scale: tuple[float, float] = (0.3, 1.0),
    focal_scale: tuple[float, float] = (0.05, 0.3),
    strength: float = 0.5,
    blur_p: float = 0.5,
    gray_p: float = 0.2,
    jitter_p: float = 0.8,
    hflip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """View 0 is the target; then ``num_random`` random anchors of ``size`` px; then ``num_focal``
    focal anchors of ``focal_size`` px.

    Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning", arXiv 2204.07141
    (https://arxiv.org/abs/2204.07141), Sec. 3-4, and the official code
    (https://github.com/facebookresearch/msn, ``src/data_manager.py`` ``make_transforms`` and
    ``configs/pretrain/msn_vits16.yaml``): random views are 224 px crops of scale (0.3, 1) and
    focal views 96 px crops of scale (0.05, 0.3); every view is flipped with probability 0.5 and
    gets SimCLR's colour distortion of strength 0.5 (jitter 0.4, 0.4, 0.4, 0.1 with probability
    0.8, grayscale 0.2) and Gaussian blur with probability 0.5. The ViT-S/16 configuration uses one
    random anchor and 10 focal anchors. With a ViT every size must be a multiple of the patch size:
    ``focal_size`` defaults to 96/224 of ``size`` rounded up to a multiple of ``size_multiple``
    (96 at 224 px, 16 at 32 px, 12 at 28 px, 8 at 16 px with the default 4).

    Example:
        >>> views = msn(size=32, focal_size=16, num_focal=4)
        >>> [s.size for s in views.specs], list(views.counts)
        ([32, 16], [2, 4])
    """
    if num_random < 1 or num_focal < 0 or size_multiple < 1:
        raise ValueError(f"msn needs num_random >= 1, num_focal >= 0 and size_multiple >= 1, got {num_random}, "
                         f"{num_focal}, {size_multiple}")
    if focal_size is None:
        focal_size = size_multiple * math.ceil(size * 96 / 224 / size_multiple - 1e-9)
    common: dict[str, Any] = dict(
        hflip_p=hflip_p, jitter=(0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength),
        jitter_p=jitter_p, gray_p=gray_p, blur_p=blur_p, mean=mean, std=std,
    )
    random_spec = ViewSpec(size=size, scale=random_scale, **common)
    specs, counts = [random_spec], [1 + num_random]
    if num_focal > 0:
        specs.append(ViewSpec(size=int(focal_size), scale=focal_scale, **common))
        counts.append(num_focal)
    return MultiView(specs, counts=counts, seed=seed)
