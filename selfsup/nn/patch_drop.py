"""Random patch dropping for ViT anchors: which patch tokens enter the encoder (MSN)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["num_kept_patches", "random_keep_indices"]


def num_kept_patches(num_patches: int, mask_ratio: float) -> int:
    """``floor(N * (1 - mask_ratio))``, the patches an MSN anchor keeps (at least one).

    Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning", arXiv 2204.07141
    (https://arxiv.org/abs/2204.07141), Sec. 3 "random masking"; official code
    https://github.com/facebookresearch/msn (``src/deit.py``, ``patch_drop``), which keeps
    ``floor((1 - patch_drop) N)`` patch tokens plus the class token.

    Example:
        >>> num_kept_patches(16, 0.15), num_kept_patches(196, 0.15)
        (13, 166)
    """
    if not 0.0 <= mask_ratio < 1.0 or num_patches < 1:
        raise ValueError(f"num_kept_patches needs num_patches >= 1 and mask_ratio in [0, 1), got {num_patches}, {mask_ratio}")
    # the small epsilon keeps e.g. 20 * (1 - 0.25) = 15 from flooring to 14 through rounding error
    return max(1, math.floor(num_patches * (1.0 - mask_ratio) + 1e-9))


def random_keep_indices(
    batch_size: int, num_patches: int, mask_ratio: float, *, device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Indices ``(B, N_keep)`` of the patches each sample keeps, drawn uniformly without replacement.

    Every sample keeps exactly :func:`num_kept_patches` ``(N, mask_ratio)`` patches in a random
    order (MSN's random masking, Assran et al. 2022, arXiv 2204.07141,
    https://arxiv.org/abs/2204.07141; official code https://github.com/facebookresearch/msn). The
    official code draws one permutation for the whole batch; here each sample gets its own. Pass
    the result as ``keep`` to :meth:`~selfsup.backbones.vit.VisionTransformer.forward_tokens`, so
    the dropped patches never enter the encoder.

    Args:
        batch_size: ``B``.
        num_patches: ``N``, patches per image.
        mask_ratio: fraction of patches dropped, in ``[0, 1)``.
        device: where the indices live.
        generator: random source (default: torch's global one).

    Example:
        >>> keep = random_keep_indices(4, 16, 0.25)
        >>> keep.shape  # torch.Size([4, 12])
    """
    kept = num_kept_patches(num_patches, mask_ratio)
    noise = torch.rand(batch_size, num_patches, generator=generator, device=generator.device if generator else device)
    return noise.argsort(dim=1)[:, :kept].to(device)
