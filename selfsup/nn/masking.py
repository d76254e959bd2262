"""Random patch masking: MAE's and MSN's per-sample shuffle (:func:`random_masking`) and SimMIM's blocks."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["block_random_mask", "num_kept", "random_masking"]


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Patches kept at ``mask_ratio``: ``floor(N * (1 - mask_ratio))``, as the official code of MAE
    (``int(L * (1 - mask_ratio))``, https://github.com/facebookresearch/mae) and of MSN
    (``floor((1 - patch_drop) N)``, https://github.com/facebookresearch/msn ``src/deit.py``). A
    tiny tolerance keeps float round-off such as ``0.7 * 10 = 6.9999...`` from dropping a patch.

    Example:
        >>> num_kept(64, 0.75), num_kept(196, 0.15)
        (16, 166)
    """
    if num_patches < 1 or not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"num_kept needs num_patches >= 1 and mask_ratio in [0, 1), got {num_patches}, {mask_ratio}")
    return int(num_patches * (1.0 - mask_ratio) + 1e-6)


def random_masking(
    batch_size: int, num_patches: int, mask_ratio: float, device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample uniform random masking by sorting uniform noise, as in MAE (and MSN's patch drop).

    He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", arXiv 2111.06377
    (https://arxiv.org/abs/2111.06377), Sec. 3 ("random sampling ... without replacement"), and
    the official ``random_masking`` (https://github.com/facebookresearch/mae, ``models_mae.py``):
    each sample draws ``noise ~ U(0, 1)`` per patch; the :func:`num_kept` patches with the
    smallest noise are kept, the others masked. ``restore`` puts a sequence laid out as ``[kept
    patches in keep order, masked patches]`` back into raster order: ``full = seq.gather(1,
    restore)``. MSN's random masking (Assran et al. 2022, arXiv 2204.07141, Sec. 3) is the same
    draw: pass ``keep`` to :meth:`~selfsup.backbones.vit.VisionTransformer.forward_tokens` so the
    dropped patches never enter the encoder (its official code draws one permutation for the whole
    batch; here each sample gets its own). The noise is drawn on the generator's device when a
    generator is given, then moved to ``device``.

    Args:
        batch_size: ``B``.
        num_patches: ``N``, patches per image.
        mask_ratio: fraction of patches to mask, in ``[0, 1)``.
        device: where the indices live.
        generator: optional random generator (the global one otherwise).

    Returns:
        ``keep`` ``(B, N_keep)`` long indices of the kept patches, ``mask`` ``(B, N)`` bool (True =
        masked, exactly ``N - N_keep`` per row) and ``restore`` ``(B, N)`` long.

    Example:
        >>> keep, mask, restore = random_masking(2, 16, 0.75)
        >>> keep.shape, int(mask.sum())
        (torch.Size([2, 4]), 24)
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"random_masking needs mask_ratio in [0, 1), got {mask_ratio}")
    kept = num_kept(num_patches, mask_ratio)
    if kept < 1:
        raise ValueError(f"random_masking keeps no patch of {num_patches} at mask_ratio={mask_ratio}")
    noise = torch.rand(batch_size, num_patches, generator=generator,
                       device=generator.device if generator is not None else device).to(device)
    shuffle = torch.argsort(noise, dim=1)
    restore = torch.argsort(shuffle, dim=1)
    mask = restore >= kept  # a patch is masked when its rank in the shuffle is past the kept ones
    return shuffle[:, :kept], mask, restore


def block_random_mask(
    batch_size: int, grid_h: int, grid_w: int, block: int, mask_ratio: float,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> Tensor:
    """SimMIM's random masking of square blocks of patches (a "mask patch" of ``block x block``
    tokens).

    Xie et al. 2021, "SimMIM: A Simple Framework for Masked Image Modeling", arXiv 2111.09886
    (https://arxiv.org/abs/2111.09886), Sec. 3.1, and the official ``MaskGenerator``
    (https://github.com/microsoft/SimMIM, ``data/data_simmim.py``): the token grid is cut into
    ``(grid_h / block) x (grid_w / block)`` cells; each sample masks ``ceil(cells * mask_ratio)``
    cells chosen uniformly without replacement, and every token of a masked cell is masked.

    Args:
        batch_size: ``B``.
        grid_h, grid_w: token grid; both multiples of ``block``.
        block: mask patch side in tokens (mask patch size / model patch size).
        mask_ratio: fraction of cells to mask, in ``[0, 1]``.
        device: where the mask lives.
        generator: optional random generator.

    Returns:
        ``(B, grid_h * grid_w)`` bool in raster order, True = masked.

    Example:
        >>> mask = block_random_mask(2, 8, 8, block=2, mask_ratio=0.6)
        >>> mask.sum(dim=1).tolist()  # ceil(16 * 0.6) = 10 cells of 4 tokens
        [40, 40]
    """
    if block < 1 or grid_h % block or grid_w % block:
        raise ValueError(f"block_random_mask needs the grid {grid_h}x{grid_w} to be a multiple of block={block}")
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"block_random_mask needs mask_ratio in [0, 1], got {mask_ratio}")
    rows, cols = grid_h // block, grid_w // block
    cells = rows * cols
    count = math.ceil(round(cells * mask_ratio, 6))  # round: 0.7 * 10 is 7.000000000000001
    ranks = torch.argsort(torch.argsort(torch.rand(batch_size, cells, device=device, generator=generator), dim=1), dim=1)
    coarse = (ranks < count).reshape(batch_size, rows, cols)
    return coarse.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2).reshape(batch_size, -1)
