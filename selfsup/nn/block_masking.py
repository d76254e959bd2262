"""BEiT's block-wise masking of a patch grid, and the batch draws of iBOT and DINOv2 built on it.

Bao et al. 2021, "BEiT: BERT Pre-Training of Image Transformers", arXiv 2106.08254
(https://arxiv.org/abs/2106.08254), Algorithm 1; official code https://github.com/microsoft/unilm
(``beit/masking_generator.py``). Users: MaskFeat (Wei et al. 2021, arXiv 2112.09133) masks 40% of
the patches this way; CAE (Chen et al. 2022, arXiv 2202.03026, official
https://github.com/Atten4Vis/CAE, ``furnace/masking_generator.py``) masks exactly 98 of 196; iBOT
(Zhou et al. 2021, arXiv 2111.07832, official https://github.com/bytedance/ibot ``loader.py``) and
DINOv2 (Oquab et al. 2023, arXiv 2304.07193, https://github.com/facebookresearch/dinov2
``masking.py`` and ``collate.py``) mask a random share of about half the images
(:func:`ibot_masks`).

Example:
    >>> block_masks(4, 14, 14, 0.4).shape
    torch.Size([4, 196])
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["block_mask", "block_masks", "ibot_masks"]

BEIT_ASPECT_RATIO = (0.3, 1 / 0.3)
"""BEiT's range of block aspect ratios (height / width), drawn log-uniformly."""


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer in ``[low, high]`` (both ends included, as Python's ``random.randint``)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _place_block(
    mask: Tensor, limit: float, min_num_patches: float, log_aspect: tuple[float, float],
    generator: torch.Generator | None, attempts: int,
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


def default_min_block(grid_h: int, grid_w: int) -> int:
    """iBOT's smallest block, ``(min(grid_h, grid_w) // 3) ** 2``: BEiT's 16 on its 14x14 grid.

    Example:
        >>> default_min_block(14, 14), default_min_block(8, 8)
        (16, 4)
    """
    return (min(grid_h, grid_w) // 3) ** 2


def block_mask(
    grid_h: int,
    grid_w: int,
    num_masked: float,
    *,
    min_num_patches: float | None = None,
    max_num_patches: float | None = None,
    aspect_ratio: tuple[float, float] = BEIT_ASPECT_RATIO,
    exact: bool = False,
    attempts: int = 10,
    max_stalls: int = 100,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One ``(grid_h, grid_w)`` bool mask (True = masked) made of random rectangles.

    The official BEiT generator (the paper's Algorithm 1 as its code runs it): while fewer than
    ``num_masked`` patches are masked, draw up to ``attempts`` blocks of ``s ~ U(min_num_patches,
    remaining)`` patches (``remaining`` capped by ``max_num_patches``) with aspect ratio ``r``,
    ``log r ~ U(log aspect_ratio[0], log aspect_ratio[1])``, height ``round(sqrt(s r))`` and width
    ``round(sqrt(s / r))`` (both smaller than the grid), at a uniform position; the first that
    masks between 1 and ``remaining`` new patches is kept. The masked count therefore never exceeds
    ``num_masked``. With ``exact=False`` (BEiT, MaskFeat, iBOT, DINOv2) the loop stops at the first
    block that cannot be placed, so a mask may fall slightly short; with ``exact=True`` (CAE's
    generator, which loops until the count is reached) it keeps trying and, after ``max_stalls``
    failed blocks (a safeguard not in CAE's code), masks the missing patches uniformly at random,
    so exactly ``num_masked`` are masked.

    The paper's Algorithm 1 differs from the official code, which all users follow and this
    function reproduces: the paper draws ``r`` uniformly (the code: log-uniformly), does not cap a
    block at the remaining count and loops "until ``|M| > 0.4N``" (so it may overshoot; the code
    never does), and has no limit on attempts.

    Args:
        grid_h, grid_w: patch grid.
        num_masked: target number of masked patches; a float is allowed (iBOT draws
            ``ratio * N``), an integer is needed with ``exact=True``.
        min_num_patches: smallest block; default :func:`default_min_block` (16 on a 14x14 grid,
            as BEiT, MaskFeat, CAE and iBOT; DINOv2 uses 4).
        max_num_patches: largest block (default: ``num_masked``; DINOv2: half the grid).
        aspect_ratio: range of block aspect ratios, (0.3, 1/0.3) in all of them.
        exact: reach ``num_masked`` exactly (CAE).
        attempts: blocks tried before one counts as not placed (10).
        max_stalls: failed blocks tolerated with ``exact=True`` before the random fill.
        generator: torch random generator (the global one when None).

    Example:
        >>> m = block_mask(14, 14, 98, exact=True)
        >>> int(m.sum())
        98
    """
    low = float(default_min_block(grid_h, grid_w) if min_num_patches is None else min_num_patches)
    lo_aspect, hi_aspect = aspect_ratio
    if not 0 <= num_masked <= grid_h * grid_w or low < 0 or not 0 < lo_aspect <= hi_aspect or attempts < 1:
        raise ValueError(
            "block_mask needs 0 <= num_masked <= grid_h * grid_w, min_num_patches >= 0, "
            "0 < aspect_ratio[0] <= aspect_ratio[1] and attempts >= 1; got "
            f"num_masked={num_masked} on {grid_h}x{grid_w}, min_num_patches={min_num_patches}, "
            f"aspect_ratio={aspect_ratio}, attempts={attempts}"
        )
    if exact and num_masked != int(num_masked):
        raise ValueError(f"block_mask with exact=True needs a whole num_masked, got {num_masked}")
    mask = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    largest = num_masked if max_num_patches is None else max_num_patches
    log_aspect = (math.log(lo_aspect), math.log(hi_aspect))
    count, stalls = 0, 0
    while count < num_masked:
        delta = _place_block(mask, min(num_masked - count, largest), low, log_aspect, generator, attempts)
        count += delta
        if delta == 0:
            if not exact:
                break
            stalls += 1
            if stalls >= max_stalls:
                free = (~mask).flatten().nonzero().squeeze(1)
                pick = free[torch.randperm(len(free), generator=generator)[: int(num_masked) - count]]
                mask.view(-1)[pick] = True
                count = int(num_masked)
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


def ibot_masks(
    batch: int,
    grid_h: int,
    grid_w: int,
    *,
    ratio: tuple[float, float] = (0.1, 0.5),
    probability: float = 0.5,
    stratified: bool = False,
    min_num_patches: float | None = None,
    max_block_fraction: float | None = None,
    aspect_ratio: tuple[float, float] = BEIT_ASPECT_RATIO,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Block masks ``(batch, grid_h * grid_w)`` for a batch, masking about half the images.

    iBOT (arXiv 2111.07832, ``--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`` of the official ViT
    commands, https://github.com/bytedance/ibot): each image independently is masked with
    probability ``probability``, with a target of ``r * N`` patches for ``r`` uniform in
    ``ratio``, else left unmasked. DINOv2 (``stratified=True``; Oquab et al. 2023, arXiv
    2304.07193, ``collate_data_and_cast`` of https://github.com/facebookresearch/dinov2): exactly
    ``int(batch * probability)`` images are masked, the i-th with a ratio uniform in the i-th of
    equal sub-intervals of ``ratio``, the masked images placed at random; the patch count is
    ``int(N * ratio)`` and each block is capped at ``max_block_fraction * N`` (0.5 there, with
    ``min_num_patches=4``). Each mask is one :func:`block_mask`.

    Example:
        >>> ibot_masks(8, 4, 4).shape
        torch.Size([8, 16])
    """
    n = grid_h * grid_w
    lo, hi = ratio
    if stratified:
        count = int(batch * probability)
        edges = torch.linspace(lo, hi, count + 1).tolist()
        ratios = [_uniform(edges[i], edges[i + 1], generator) for i in range(count)] + [0.0] * (batch - count)
        order = torch.randperm(batch, generator=generator).tolist()
        ratios = [ratios[i] for i in order]
        targets = [float(int(n * r)) for r in ratios]
    else:
        targets = [
            _uniform(lo, hi, generator) * n if float(torch.rand((), generator=generator)) < probability else 0.0
            for _ in range(batch)
        ]
    max_block = None if max_block_fraction is None else max_block_fraction * n
    masks = [
        block_mask(grid_h, grid_w, t, min_num_patches=min_num_patches, max_num_patches=max_block,
                   aspect_ratio=aspect_ratio, generator=generator)
        for t in targets
    ]
    return torch.stack(masks).reshape(batch, n)
