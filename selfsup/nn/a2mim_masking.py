"""A2MIM's input masking: random square blocks, filled with the image's mean colour."""
from __future__ import annotations

import torch
from torch import Tensor

from selfsup.nn.masking import block_random_mask

__all__ = ["fill_with_mean_colour", "random_block_mask"]


def random_block_mask(batch_size: int, height: int, width: int, mask_patch_size: int, ratio: float,
                      device: torch.device | str | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Pixel mask ``(B, 1, H, W)`` (float, 1 = masked) of random ``mask_patch_size`` blocks.

    The image is cut into a grid of ``mask_patch_size`` squares and exactly
    ``ceil(ratio * cells)`` of them are masked in every image, as SimMIM's and A2MIM's
    ``BlockwiseMaskGenerator`` (Li et al. 2022, "Architecture-Agnostic Masked Image Modeling --
    From ViT back to CNN", arXiv 2205.13943; official code github.com/Westlake-AI/openmixup:
    32 px blocks, ratio 0.6 at 224 px).

    Example:
        >>> m = random_block_mask(2, 16, 16, 8, 0.6)
        >>> m.shape, m.sum().item() / 2 / 64   # 3 of 4 blocks of 64 pixels
        (torch.Size([2, 1, 16, 16]), 3.0)
    """
    if height % mask_patch_size or width % mask_patch_size or not 0.0 < ratio < 1.0:
        raise ValueError(f"random_block_mask needs image sides that are multiples of mask_patch_size and 0 < ratio "
                         f"< 1; got {height}x{width}, mask_patch_size={mask_patch_size}, ratio={ratio}")
    # SimMIM's block masking on the pixel grid (a "token" is a pixel here): the same cells, drawn the same way
    mask = block_random_mask(batch_size, height, width, mask_patch_size, ratio, device=device, generator=generator)
    return mask.view(batch_size, 1, height, width).float()


def fill_with_mean_colour(images: Tensor, mask: Tensor) -> Tensor:
    """``images`` with masked pixels replaced by the per-image, per-channel mean of the visible pixels.

    A2MIM fills masked patches with the mean RGB colour instead of zeros (Li et al. 2022,
    arXiv 2205.13943, Sec. 4; official code github.com/Westlake-AI/openmixup, ``mask_color=
    'mean'``). The mean is taken over the visible pixels only, so the masked content cannot reach
    the encoder even through the fill colour.

    Args:
        images: ``(B, C, H, W)``.
        mask: ``(B, 1, H, W)``, 1 where masked.

    Example:
        >>> x = torch.rand(2, 3, 8, 8); m = random_block_mask(2, 8, 8, 4, 0.5)
        >>> fill_with_mean_colour(x, m).shape
        torch.Size([2, 3, 8, 8])
    """
    visible = 1.0 - mask
    mean = (images * visible).sum(dim=(2, 3), keepdim=True) / visible.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
    return images * visible + mean * mask
