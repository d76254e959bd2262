"""Batches of images rotated by 0, 90, 180 and 270 degrees, the inputs of rotation prediction."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rotate_batch"]


def rotate_batch(images: Tensor) -> tuple[Tensor, Tensor]:
    """Stack the four rotations of every image and return them with their rotation labels.

    RotNet's input (Gidaris, Singh, Komodakis, "Unsupervised Representation Learning by Predicting
    Image Rotations", 2018, https://arxiv.org/abs/1803.07728, Sec. 2.2 and 3.1; official code
    https://github.com/gidariss/FeatureLearningRotNet): every image enters the same batch in all
    four orientations, which the paper found better than one random rotation per image. Label
    ``k`` means ``torch.rot90(image, k, dims=(-2, -1))``, i.e. ``k`` quarter turns
    counter-clockwise; the output holds the ``k = 0`` copies first, then ``k = 1``, 2, 3, so its
    first ``B`` rows are the input itself. Runs on the images' device with no per-sample loop.

    Args:
        images: ``(B, C, H, W)`` square images (``H == W``, so every rotation keeps the shape).

    Returns:
        ``(4B, C, H, W)`` rotated images and ``(4B,)`` long labels in ``{0, 1, 2, 3}``.

    Raises:
        ValueError: ``images`` is not 4-D or not square.

    Example:
        >>> rotated, labels = rotate_batch(torch.zeros(2, 3, 8, 8))
        >>> rotated.shape, labels.tolist()
        (torch.Size([8, 3, 8, 8]), [0, 0, 1, 1, 2, 2, 3, 3])
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(
            "rotate_batch expects square images of shape (B, C, H, H) so that every rotation keeps "
            f"the shape; got {tuple(images.shape)}"
        )
    rotated = torch.cat([torch.rot90(images, k, dims=(-2, -1)) for k in range(4)], dim=0)
    labels = torch.arange(4, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels
