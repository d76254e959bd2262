"""BEiT's block-wise masking of a patch grid (used by MaskFeat and CAE).

Bao et al. 2021, "BEiT: BERT Pre-Training of Image Transformers", arXiv 2106.08254
(https://arxiv.org/abs/2106.08254), Algorithm 1; official code https://github.com/microsoft/unilm
(``beit/masking_generator.py``). MaskFeat (Wei et al. 2021, arXiv 2112.09133) masks 40% of the
patches this way; CAE (Chen et al. 2022, arXiv 2202.03026, official
https://github.com/Atten4Vis/CAE, ``furnace/masking_generator.py``) masks exactly 98 of 196.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["block_mask", "block_masks"]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer in ``[low, high]`` (both ends included, as Python's ``random.randint``)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _place_block(
    mask: Tensor, limit: int, min_num_patches: int, log_aspect: tuple[float, float],
    generator: torch.Generator | None, attempts: int = 10,
) -> int:
    """Try ``attempts`` times to mask one rectangle adding between 1 and ``limit`` new patches."""
    height, width = mask.shape
    for _ in range(attempts):
        area = _uniform(min_num_patches, limit, generator)
        aspect = math.exp(_uniform(*log_aspect, generator))
        h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if w < width and h < height:
            top, left = _randint(0, height - h, generator), _randint(0, width - w, generator)
            block = mask[top:top + h, left:left + w]
            new = h * w - int(block.sum())
            if 0 < new <= limit:
                block.fill_(True)
                return new
    return 0


def block_mask(
    grid_h: int,
    grid_w: int,
    num_masked: int,
    *,
    min_num_patches: int = 16,
    max_num_patches: int | None = None,
    min_aspect: float = 0.3,
    exact: bool = False,
    generator: torch.Generator | None = None,
    max_stalls: int = 100,
) -> Tensor:
    """One ``(grid_h, grid_w)`` bool mask (True = masked) made of random rectangles.

    BEiT's Algorithm 1: repeatedly draw a block of ``s ~ U(min_num_patches, remaining)`` patches
    (capped by ``max_num_patches``) with aspect ratio ``r``, ``log r ~ U(log min_aspect,
    -log min_aspect)``, height ``round(sqrt(s r))`` and width ``round(sqrt(s / r))`` (both smaller
    than the grid), at a uniform position; keep it if it masks between 1 and ``remaining`` new
    patches (10 attempts per block). The masked count therefore never exceeds ``num_masked``.
    With ``exact=False`` (BEiT, MaskFeat) the loop stops at the first block that cannot be placed,
    so a mask may fall slightly short; with ``exact=True`` (CAE's generator, which loops until the
    count is reached) it keeps trying and, after ``max_stalls`` failed blocks (a safeguard not in
    CAE's code), masks the missing patches uniformly at random, so exactly ``num_masked`` are masked.

    Args:
        grid_h, grid_w: patch grid.
        num_masked: target number of masked patches.
        min_num_patches: smallest block (16 on a 14x14 grid in BEiT, MaskFeat and CAE).
        max_num_patches: largest block (default: ``num_masked``).
        min_aspect: smallest aspect ratio (0.3); the largest is its inverse.
        exact: reach ``num_masked`` exactly (CAE).
        generator: torch random generator (the global one when None).
        max_stalls: failed blocks tolerated with ``exact=True`` before the random fill.

    Example:
        >>> m = block_mask(14, 14, 98, exact=True)
        >>> int(m.sum())
        98
    """
    if not 0 <= num_masked <= grid_h * grid_w or min_num_patches < 1 or not 0 < min_aspect <= 1:
        raise ValueError(
            f"block_mask needs 0 <= num_masked <= grid_h * grid_w, min_num_patches >= 1 and 0 < min_aspect <= 1; "
            f"got num_masked={num_masked} on {grid_h}x{grid_w}, min_num_patches={min_num_patches}, "
            f"min_aspect={min_aspect}"
        )
    mask = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    largest = num_masked if max_num_patches is None else max_num_patches
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    count, stalls = 0, 0
    while count < num_masked:
        delta = _place_block(mask, min(num_masked - count, largest), min_num_patches, log_aspect, generator)
        count += delta
        if delta == 0:
            if not exact:
                break
            stalls += 1
            if stalls >= max_stalls:
                free = (~mask).flatten().nonzero().squeeze(1)
                pick = free[torch.randperm(len(free), generator=generator)[: num_masked - count]]
                mask.view(-1)[pick] = True
                count = num_masked
    return mask


def block_masks(
    batch_size: int,
    grid_h: int,
    grid_w: int,
    mask_ratio: float | None = None,
    *,
    num_masked: int | None = None,
    device: torch.device | str | None = None,
    **options: object,
) -> Tensor:
    """``(batch_size, grid_h * grid_w)`` bool masks in raster order, one :func:`block_mask` per sample.

    Give either ``mask_ratio`` (the count is ``round(ratio * N)``) or ``num_masked``; ``options``
    go to :func:`block_mask`.

    Example:
        >>> block_masks(4, 8, 8, 0.4, min_num_patches=4).shape
        torch.Size([4, 64])
    """
    n = grid_h * grid_w
    if (mask_ratio is None) == (num_masked is None):
        raise ValueError("block_masks needs exactly one of mask_ratio and num_masked")
    count = int(round(mask_ratio * n)) if mask_ratio is not None else int(num_masked)  # type: ignore[arg-type]
    masks = [block_mask(grid_h, grid_w, count, **options).flatten() for _ in range(batch_size)]  # type: ignore[arg-type]
    return torch.stack(masks).to(device)
