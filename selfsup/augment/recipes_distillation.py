"""View recipe of distillation from a frozen teacher (one view seen by teacher and student)."""
from __future__ import annotations

from collections.abc import Sequence

from selfsup.augment.recipes import RECIPES
from selfsup.augment.views import MultiView, ViewSpec

__all__ = ["distillation"]


@RECIPES.register("distillation", "distillation: one view, crop 0.14-1, jitter 0.4/0.4/0.2/0.1 (p 0.8), grayscale 0.2")
def distillation(
    size: int = 224,
    scale: tuple[float, float] = (0.14, 1.0),
    hflip_p: float = 0.5,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """One strongly augmented view, given to the teacher and the student alike.

    The "consistent teaching" of Beyer et al. 2022, "Knowledge distillation: A good teacher is patient
    and consistent", arXiv 2106.05237 (teacher and student see the same crop), with the transform of
    LightlyTrain's distillation (github.com/lightly-ai/lightly-train, ``distillationv2_transform.py``):
    random resized crop with scale (0.14, 1.0), horizontal flip, colour jitter of strength 0.5 over
    (0.8, 0.8, 0.4, 0.2), i.e. (0.4, 0.4, 0.2, 0.1), with probability 0.8, grayscale with probability
    0.2. LightlyTrain also blurs every image with sigma at most 0.1 pixel, which changes almost
    nothing and is left out.

    Example:
        >>> distillation(size=32).num_views
        1
    """
    spec = ViewSpec(size=size, scale=scale, hflip_p=hflip_p, jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8,
                    gray_p=0.2, blur_p=0.0, solarize_p=0.0, mean=mean, std=std)
    return MultiView([spec], counts=[1], seed=seed)
