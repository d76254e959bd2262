"""Block-wise patch masking of BEiT / iBOT / DINOv2: rectangles of patches until a target count."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["block_mask", "ibot_masks"]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def block_mask(
    grid_h: int,
    grid_w: int,
    num_masked: float,
    *,
    min_block: float | None = None,
    max_block: float | None = None,
    aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3),
    attempts: int = 10,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A ``(grid_h, grid_w)`` bool mask with at most ``num_masked`` patches, made of rectangles.

    The generator of BEiT (Bao et al. 2021, "BEiT: BERT Pre-Training of Image Transformers", arXiv
    2106.08254, https://arxiv.org/abs/2106.08254), as used by iBOT (Zhou et al. 2021, "iBOT: Image
    BERT Pre-Training with Online Tokenizer", arXiv 2111.07832, https://arxiv.org/abs/2111.07832,
    official code https://github.com/bytedance/ibot ``loader.py``) and DINOv2 (Oquab et al. 2023,
    arXiv 2304.07193, https://github.com/facebookresearch/dinov2 ``masking.py``): while fewer than
    ``num_masked`` patches are masked, up to ``attempts`` times draw a block area uniformly in
    ``[min_block, remaining]`` (``remaining`` capped by ``max_block``) and a log-uniform aspect
    ratio; a block that fits strictly inside the grid and adds between 1 and ``remaining`` new
    patches is masked. The loop stops when no attempt adds a patch, so the count never exceeds
    ``num_masked`` and may fall a little short of it. ``min_block`` defaults to iBOT's
    ``(min(grid_h, grid_w) // 3) ** 2`` (DINOv2 uses 4).

    Example:
        >>> mask = block_mask(14, 14, 0.3 * 196)
        >>> int(mask.sum()) <= 58
        True
    """
    low = float((min(grid_h, grid_w) // 3) ** 2) if min_block is None else float(min_block)
    log_lo, log_hi = math.log(aspect_ratio[0]), math.log(aspect_ratio[1])
    mask = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    count = 0
    while count < num_masked:
        remaining = num_masked - count
        if max_block is not None:
            remaining = min(remaining, max_block)
        added = 0
        for _ in range(attempts):
            area = _uniform(low, remaining, generator)
            aspect = math.exp(_uniform(log_lo, log_hi, generator))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if w < grid_w and h < grid_h:
                top = int(torch.randint(0, grid_h - h + 1, (), generator=generator))
                left = int(torch.randint(0, grid_w - w + 1, (), generator=generator))
                block = mask[top:top + h, left:left + w]
                new = h * w - int(block.sum())
                if 0 < new <= remaining:
                    block.fill_(True)
                    added = new
            if added > 0:
                break
        if added == 0:
            break
        count += added
    return mask


def ibot_masks(
    batch: int,
    grid_h: int,
    grid_w: int,
    *,
    ratio: tuple[float, float] = (0.1, 0.5),
    probability: float = 0.5,
    stratified: bool = False,
    min_block: float | None = None,
    max_block_fraction: float | None = None,
    aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Block masks ``(batch, grid_h * grid_w)`` for a batch, masking about half the images.

    iBOT (arXiv 2111.07832, ``--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`` of the official ViT
    commands, https://github.com/bytedance/ibot): each image independently is masked with
    probability ``probability``, with a ratio uniform in ``ratio``, else left unmasked. DINOv2
    (``stratified=True``; Oquab et al. 2023, arXiv 2304.07193, https://arxiv.org/abs/2304.07193,
    ``collate_data_and_cast`` of https://github.com/facebookresearch/dinov2): exactly
    ``int(batch * probability)`` images are masked, the i-th with a ratio uniform in the i-th of
    equal sub-intervals of ``ratio``, the masked images placed at random; the patch count is
    ``int(N * ratio)`` and each block is capped at ``max_block_fraction * N`` (0.5 there).

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
        block_mask(grid_h, grid_w, t, min_block=min_block, max_block=max_block, aspect_ratio=aspect_ratio,
                   generator=generator)
        for t in targets
    ]
    return torch.stack(masks).reshape(batch, n)
