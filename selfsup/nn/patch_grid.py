"""A 3x3 grid of jittered patches cut from every image in a batch (context prediction)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["NEIGHBOURS", "crop_patches", "paper_patch_layout", "sample_patch_grid"]

#: Grid cells (row-major ``3 * row + col``) of the 8 neighbours of the centre cell 4; neighbour
#: ``NEIGHBOURS[i]`` has class label ``i`` (0 = top-left, 1 = top, ..., 7 = bottom-right).
NEIGHBOURS: tuple[int, ...] = (0, 1, 2, 3, 5, 6, 7, 8)


def paper_patch_layout(size: int) -> tuple[int, int, int]:
    """Patch size, gap and jitter with the proportions of Doersch et al. scaled to ``size`` px.

    The paper (Doersch, Gupta, Efros, "Unsupervised Visual Representation Learning by Context
    Prediction", 2015, https://arxiv.org/abs/1505.05192, Sec. 3; official code
    https://github.com/cdoersch/deepcontext) uses 96 px patches, a 48 px gap (half a patch) and
    up to 7 px of jitter per patch. Here the patch is the largest that keeps those proportions
    inside the image (``3 p + 2 g + 2 j <= size``), the gap is half of it and the jitter is
    ``7 / 96`` of it, rounded but at least 1 px (so that small images keep some jitter), and
    never more than the space left.

    Args:
        size: Side of the (square) image the grid is cut from.

    Returns:
        ``(patch_size, gap, jitter)`` in pixels.

    Raises:
        ValueError: ``size`` is too small for a 3x3 grid of patches of at least 1 px.

    Example:
        >>> paper_patch_layout(32), paper_patch_layout(224)
        ((7, 3, 1), (54, 27, 4))
    """
    patch = (size * 96) // (4 * 96 + 2 * 7)
    if patch < 1:
        raise ValueError(f"paper_patch_layout: a {size} px image is too small for a 3x3 patch grid")
    gap = patch // 2
    jitter = min(max(1, round(7 * patch / 96)), (size - 3 * patch - 2 * gap) // 2)
    return patch, gap, max(jitter, 0)


def sample_patch_grid(
    batch: int,
    height: int,
    width: int,
    patch_size: int,
    gap: int,
    jitter: int,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random top-left corners of a 3x3 grid of patches for every image of a batch.

    Doersch et al. 2015 ("Unsupervised Visual Representation Learning by Context Prediction",
    https://arxiv.org/abs/1505.05192, Sec. 3 and Fig. 2; official code
    https://github.com/cdoersch/deepcontext) cut patches on a regular grid separated by a gap and
    move each one by a random jitter, so that the network cannot solve the task by continuing
    lines or textures across patch borders. Cell ``(r, c)`` of sample ``b`` has its corner at
    ``origin_b + (r, c) * (patch_size + gap) + jitter_bc``, with the grid origin uniform among
    positions keeping every jittered patch inside the image and each jitter coordinate uniform in
    ``[-jitter, jitter]``. All samples are drawn at once on ``device``.

    Args:
        batch: Number of images ``B``.
        height: Image height.
        width: Image width.
        patch_size: Side ``p`` of a square patch.
        gap: Pixels between neighbouring patches before jitter.
        jitter: Largest shift of a patch along each axis.
        device: Where the result lives.
        generator: Random generator (on ``device``); the global one when None.

    Returns:
        ``(B, 9, 2)`` long tensor of ``(row, col)`` corners, cells in row-major order (4 = centre).

    Raises:
        ValueError: a size is negative / zero, or ``3 p + 2 gap + 2 jitter`` exceeds the image.

    Example:
        >>> corners = sample_patch_grid(4, 32, 32, patch_size=7, gap=3, jitter=1)
        >>> corners.shape
        torch.Size([4, 9, 2])
    """
    if patch_size < 1 or gap < 0 or jitter < 0:
        raise ValueError(
            f"sample_patch_grid needs patch_size >= 1, gap >= 0, jitter >= 0; got {patch_size}, "
            f"{gap}, {jitter}"
        )
    extent = 3 * patch_size + 2 * gap
    if extent + 2 * jitter > min(height, width):
        raise ValueError(
            f"A 3x3 grid of {patch_size} px patches with gap {gap} and jitter {jitter} needs "
            f"{extent + 2 * jitter} px but the images are {height}x{width}; use smaller "
            "patch_size / gap / jitter (relativeloc's defaults scale them to the image)"
        )
    limits = torch.tensor([height - extent - 2 * jitter, width - extent - 2 * jitter], device=device)
    origin = (torch.rand(batch, 1, 2, device=device, generator=generator) * (limits + 1)).long()
    origin = origin.minimum(limits) + jitter
    cells = torch.arange(9, device=device)
    offsets = torch.stack([cells // 3, cells % 3], dim=1) * (patch_size + gap)  # (9, 2)
    shifts = torch.randint(-jitter, jitter + 1, (batch, 9, 2), device=device, generator=generator)
    return origin + offsets + shifts


def crop_patches(images: Tensor, corners: Tensor, patch_size: int) -> Tensor:
    """Cut ``patch_size`` squares at the given corners from every image, by batched indexing.

    Args:
        images: ``(B, C, H, W)`` images.
        corners: ``(B, n, 2)`` long ``(row, col)`` top-left corners (e.g. from
            :func:`sample_patch_grid`), each patch inside its image.
        patch_size: Side of the patches.

    Returns:
        ``(B, n, C, patch_size, patch_size)`` patches; patch ``[b, i]`` is
        ``images[b, :, r:r + p, c:c + p]`` with ``(r, c) = corners[b, i]``.

    Example:
        >>> patches = crop_patches(torch.zeros(2, 3, 16, 16), torch.zeros(2, 9, 2, dtype=torch.long), 4)
        >>> patches.shape
        torch.Size([2, 9, 3, 4, 4])
    """
    steps = torch.arange(patch_size, device=images.device)
    rows = corners[..., 0, None] + steps  # (B, n, p)
    cols = corners[..., 1, None] + steps
    b = torch.arange(images.shape[0], device=images.device)[:, None, None, None]
    # The advanced indices broadcast to (B, n, p, p) and, being split by the channel slice, move
    # to the front: the result is (B, n, p, p, C).
    patches = images[b, :, rows[:, :, :, None], cols[:, :, None, :]]
    return patches.permute(0, 1, 4, 2, 3)
