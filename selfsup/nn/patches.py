"""Cut images into patch vectors and put them back, and the 2-D sine-cosine position embedding."""
from __future__ import annotations

import torch
from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, N, p*p*C)`` with patches in raster order (MAE's layout).

    Example:
        >>> patchify(torch.zeros(2, 3, 32, 32), 4).shape
        torch.Size([2, 64, 48])
    """
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"patchify: image size {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, patch_size: int, height: int, width: int, channels: int) -> Tensor:
    """The inverse of :func:`patchify`.

    Example:
        >>> x = torch.rand(2, 3, 8, 8); torch.equal(unpatchify(patchify(x, 4), 4, 8, 8, 3), x)
        True
    """
    b = patches.shape[0]
    p = patch_size
    x = patches.reshape(b, height // p, width // p, p, p, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, height, width)


def sincos_position_embedding(grid_h: int, grid_w: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding ``(grid_h * grid_w, dim)``, as in MAE and MoCo v3.

    Half of the channels encode the row, half the column; each half is ``[sin(pos * w_k),
    cos(pos * w_k)]`` with ``w_k = 1 / 10000^(k / (dim / 4))`` (Vaswani et al. 2017, extended to 2-D
    in He et al. 2021, arXiv 2111.06377, official github.com/facebookresearch/mae), at the integer
    positions ``0 .. grid - 1``; :func:`sincos_embedding_at` evaluates it at any positions.

    Example:
        >>> sincos_position_embedding(4, 4, 32).shape
        torch.Size([16, 32])
    """
    return sincos_embedding_at(torch.arange(grid_h, dtype=torch.float64),
                               torch.arange(grid_w, dtype=torch.float64), dim)


def sincos_embedding_at(rows: Tensor, cols: Tensor, dim: int) -> Tensor:
    """The 2-D sine-cosine embedding of :func:`sincos_position_embedding` at (possibly fractional)
    positions: ``(len(rows) * len(cols), dim)``, rows outer, in raster order.

    Example:
        >>> rows = resized_positions(3, 7)  # a 3x3 grid spread over a 7x7 table
        >>> sincos_embedding_at(rows, rows, 32).shape
        torch.Size([9, 32])
    """
    if dim % 4:
        raise ValueError(f"sincos_position_embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    grid_rows, grid_cols = torch.meshgrid(rows.to(torch.float64), cols.to(torch.float64), indexing="ij")

    def encode(pos: Tensor) -> Tensor:
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(grid_cols), encode(grid_rows)], dim=1).float()


def resized_positions(size: int, table_size: int) -> Tensor:
    """Where the ``size`` cells of a grid resized to cover a ``table_size`` grid fall on it (float64).

    Cell ``i`` spans the same share of the image as cells ``[i * t / s, (i + 1) * t / s)`` of the
    table, so its centre sits at ``(i + 0.5) * t / s - 0.5``: the sampling points of
    ``F.interpolate(size=...)`` with ``align_corners=False``, which is how DINO, iBOT and DINOv2
    resize their position tables for multi-crop (official ``interpolate_pos_encoding``). The
    positions span the table symmetrically; for odd ``size`` and ``table_size`` the middle cell
    lands exactly on the table's middle.

    Example:
        >>> resized_positions(3, 7)
        tensor([0.6667, 3.0000, 5.3333], dtype=torch.float64)
    """
    return (torch.arange(size, dtype=torch.float64) + 0.5) * (table_size / size) - 0.5


def grid_size(image_size: int, patch_size: int) -> int:
    """Patches along one side; a clear error when the image is not a multiple of the patch."""
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
    return image_size // patch_size


__all__ = ["grid_size", "patchify", "resized_positions", "sincos_embedding_at", "sincos_position_embedding",
           "unpatchify"]
