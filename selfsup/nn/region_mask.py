"""Context Encoders' "random region" masks: smooth blobs of arbitrary shape hiding a fixed fraction of
each image (Pathak et al. 2016, arXiv 1604.07379, Sec. 3.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_region_mask"]


def random_region_mask(
    batch: int, size: int, fraction: float = 0.25, cells: int = 8,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """``(batch, 1, size, size)`` boolean masks, True where a pixel is hidden, ``fraction`` of each image.

    Each mask is uniform noise on a ``cells x cells`` grid, upsampled bicubically to ``size`` and
    thresholded at that image's ``fraction`` quantile, so the hidden pixels form a few smooth blobs
    of arbitrary shape, in another place for every image. The official ``train_random.lua``
    (github.com/pathak22/context-encoder) thresholds one bicubically upsampled noise pattern of
    resolution 0.06 (about 8 cells across a 128 px crop, hence ``cells = 8``) at density 0.25 and
    keeps crops whose hidden area is 20-30%; here the quantile makes the area exact and each image
    of the batch gets its own mask (the official code repeats one mask over the batch). The paper
    (Sec. 3.3) finds these masks give far more general features than a central hole and uses them
    for all its feature-learning experiments.

    Example:
        >>> mask = random_region_mask(2, 28, fraction=0.25)
        >>> mask.shape, int(mask[0].sum()), int(mask[1].sum())
        (torch.Size([2, 1, 28, 28]), 196, 196)
    """
    if batch < 1 or size < 2 or not 0.0 < fraction < 1.0 or cells < 2:
        raise ValueError(f"random_region_mask needs batch >= 1, size >= 2, 0 < fraction < 1 and cells >= 2, "
                         f"got batch={batch}, size={size}, fraction={fraction}, cells={cells}")
    noise = torch.rand(batch, 1, cells, cells, generator=generator, device=generator.device if generator else device)
    smooth = F.interpolate(noise.to(device), size=(size, size), mode="bicubic", align_corners=False)
    hidden = max(1, round(fraction * size * size))
    threshold = smooth.flatten(1).kthvalue(hidden, dim=1).values.view(batch, 1, 1, 1)
    return smooth <= threshold
