"""I-JEPA's multi-block masking: one large context block and several target blocks per image."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["block_size", "jepa_masks"]


def block_size(
    grid_h: int, grid_w: int, scale: tuple[float, float], aspect_ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """A block's ``(h, w)`` in patches: area ``int(N * s)``, aspect ``a``, one uniform draw for both.

    Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
    Architecture", arXiv 2301.08243 (https://arxiv.org/abs/2301.08243), Sec. 3; official code
    https://github.com/facebookresearch/ijepa (``src/masks/multiblock.py``): ``s`` and ``a`` come
    from the same uniform draw, ``h = round(sqrt(area a))``, ``w = round(sqrt(area / a))``, each
    cut to at most the grid side minus 1.

    Example:
        >>> block_size(14, 14, (0.15, 0.15), (1.0, 1.0))
        (5, 5)
    """
    u = float(torch.rand((), generator=generator))
    area = int(grid_h * grid_w * (scale[0] + u * (scale[1] - scale[0])))
    aspect = aspect_ratio[0] + u * (aspect_ratio[1] - aspect_ratio[0])
    h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
    return max(1, min(h, grid_h - 1)), max(1, min(w, grid_w - 1))


def _place(grid_h: int, grid_w: int, h: int, w: int, generator: torch.Generator | None) -> Tensor:
    top = int(torch.randint(0, grid_h - h + 1, (), generator=generator))
    left = int(torch.randint(0, grid_w - w + 1, (), generator=generator))
    mask = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    mask[top:top + h, left:left + w] = True
    return mask


def jepa_masks(
    batch: int,
    grid_h: int,
    grid_w: int,
    *,
    num_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect_ratio: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    min_keep: int = 10,
    allow_overlap: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Context and target patch indices for a batch, as I-JEPA's mask collator.

    Assran et al. 2023, arXiv 2301.08243 (https://arxiv.org/abs/2301.08243), Sec. 3 and Appendix
    C; official code https://github.com/facebookresearch/ijepa (``MaskCollator``). One target
    block size (scale 0.15-0.2, aspect 0.75-1.5) and one square context block size (scale
    0.85-1.0) are drawn per batch; per image ``num_targets`` target blocks and one context block
    are placed uniformly, and the target patches are removed from the context (unless
    ``allow_overlap``). A context with at most ``min_keep`` patches is redrawn; after each 20
    failures the constraint of one more target block (the last first) is dropped, as the official
    code does. Contexts are cut to the batch's shortest, keeping raster order.

    Returns:
        ``context`` ``(B, N_ctx)`` and ``targets`` ``(B, M, N_tgt)`` patch indices in raster order.

    Example:
        >>> context, targets = jepa_masks(8, 14, 14)
        >>> targets.shape[:2]
        torch.Size([8, 4])
    """
    th, tw = block_size(grid_h, grid_w, target_scale, target_aspect_ratio, generator)
    ch, cw = block_size(grid_h, grid_w, context_scale, (1.0, 1.0), generator)
    contexts, targets = [], []
    for _ in range(batch):
        blocks = [_place(grid_h, grid_w, th, tw, generator) for _ in range(num_targets)]
        targets.append(torch.stack([b.flatten().nonzero().squeeze(1) for b in blocks]))
        failures, dropped = 0, 0
        while True:
            context = _place(grid_h, grid_w, ch, cw, generator)
            if not allow_overlap:
                for block in blocks[: max(0, num_targets - dropped)]:
                    context &= ~block
            if int(context.sum()) > min_keep or (dropped >= num_targets and context.any()):
                break
            failures += 1
            if failures == 20:
                failures, dropped = 0, dropped + 1
        contexts.append(context.flatten().nonzero().squeeze(1))
    keep = min(len(c) for c in contexts)
    return torch.stack([c[:keep] for c in contexts]), torch.stack(targets)
