"""I-JEPA's view recipe: one random resized crop, nothing else."""
from __future__ import annotations

from collections.abc import Sequence

from selfsup.augment.recipes import RECIPES, crop_flip
from selfsup.augment.views import MultiView

__all__ = ["ijepa"]


@RECIPES.register("ijepa", "I-JEPA: one random resized crop (scale 0.3-1), no flip, no colour changes")
def ijepa(
    size: int = 224,
    scale: tuple[float, float] = (0.3, 1.0),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """One view: random resized crop with scale (0.3, 1.0), without flips or colour jitter.

    Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
    Architecture", arXiv 2301.08243 (https://arxiv.org/abs/2301.08243); official configs
    https://github.com/facebookresearch/ijepa (``configs/in1k_vith14_ep300.yaml``: ``crop_scale
    [0.3, 1.0]``, flip, colour distortion and blur off).

    Example:
        >>> ijepa(size=32).num_views
        1
    """
    return crop_flip(size=size, scale=scale, hflip_p=0.0, num_views=1, mean=mean, std=std, seed=seed)
