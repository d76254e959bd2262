"""Batched image operations with per-sample parameters.

Every function takes a float batch ``(B, C, H, W)`` with values in [0, 1] (C = 1 or 3) and, where
the operation has a parameter, one value per sample as a tensor of shape ``(B,)``. Nothing loops
over samples in Python, so the ops run at full speed on any device. Semantics follow
``torchvision.transforms.v2.functional`` on float images (same formulas, same clamping), except
that grayscale uses the exact ITU-R 601-2 luma weights 0.299 / 0.587 / 0.114.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G and B."""


def to_float(images: Tensor) -> Tensor:
    """Convert a uint8 batch to float32 in [0, 1]; float batches are cast to float32 unchanged.

    Example:
        >>> to_float(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).max().item()
        1.0
    """
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images.float()


def _per_sample(values: Tensor, images: Tensor) -> Tensor:
    """Reshape per-sample values ``(B,)`` to ``(B, 1, 1, 1)`` on the images' device and dtype."""
    return values.to(device=images.device, dtype=images.dtype).view(-1, 1, 1, 1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * images + (1 - factor) * other`` per sample, clamped to [0, 1]."""
    f = _per_sample(factor, images)
    return (f * images + (1.0 - f) * other).clamp_(0.0, 1.0)


def resized_crop(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop one box per sample and resize it to ``size x size`` with bilinear interpolation.

    The crop, resize and optional horizontal mirror are one ``F.affine_grid`` + ``F.grid_sample``
    call. Output pixel centres are mapped onto the box and clamped to the centres of the box's
    outermost pixels, so no colour from outside the box leaks in: this equals cropping then
    resizing with ``torchvision``'s bilinear ``resize`` (``antialias=False``). Downscaling is not
    antialiased.

    Args:
        images: float batch ``(B, C, H, W)``.
        boxes: ``(B, 4)`` boxes ``(x0, y0, w, h)`` in input pixels (x0, y0 = top-left corner).
        size: output side length.
        flip: optional bool ``(B,)``; True mirrors that sample left-right.

    Returns:
        ``(B, C, size, size)`` batch.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> resized_crop(x, torch.tensor([[0, 0, 8, 8]] * 2), 8).allclose(x, atol=1e-5)
        True
    """
    b, _, height, width = images.shape
    device = images.device
    corner, extent = boxes.to(device=device, dtype=torch.float32).split(2, dim=1)  # (x0, y0), (w, h)
    image_size = torch.tensor([width, height], device=device, dtype=torch.float32)
    # Affine map from output to input normalised coordinates: the box's size and centre.
    mirror = torch.ones(b, device=device) if flip is None else 1.0 - 2.0 * flip.to(device).float()
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0] = extent[:, 0] / width * mirror
    theta[:, 1, 1] = extent[:, 1] / height
    theta[:, :, 2] = (2.0 * corner + extent) / image_size - 1.0
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
    # Clamp to the centres of the box's outermost pixels, in normalised coordinates.
    low = ((2.0 * corner + 1.0) / image_size - 1.0).view(b, 1, 1, 2)
    high = ((2.0 * (corner + extent) - 1.0) / image_size - 1.0).view(b, 1, 1, 2)
    grid = torch.maximum(torch.minimum(grid, high), low)
    return F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )


def sample_crop_boxes(
    height: int,
    width: int,
    batch: int,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator,
) -> Tensor:
    """Draw ``RandomResizedCrop`` boxes for a batch, vectorised over samples and tries.

    The rule of Szegedy et al. 2015 ("Going deeper with convolutions", arXiv 1409.4842) as
    implemented by torchvision's ``RandomResizedCrop``: the area fraction is uniform in ``scale``
    and the log aspect ratio (w / h) uniform in ``log(ratio)``; ``w = round(sqrt(area * r))``,
    ``h = round(sqrt(area / r))``. Each sample gets 10 tries and keeps the first that fits in the
    image; a sample with no fitting try gets the central crop with the aspect ratio clamped to
    ``ratio``. The offset is uniform over all integer positions that keep the box inside.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        batch: number of boxes.
        scale: range of the box area as a fraction of the image area.
        ratio: range of the box aspect ratio ``w / h``.
        generator: source of randomness; the boxes live on its device.

    Returns:
        int64 ``(batch, 4)`` boxes ``(x0, y0, w, h)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_crop_boxes(32, 32, 5, generator=g).shape
        torch.Size([5, 4])
    """
    tries = 10
    area = height * width * uniform(scale[0], scale[1], (batch, tries), generator)
    log_r = uniform(math.log(ratio[0]), math.log(ratio[1]), (batch, tries), generator)
    r = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * r)).long()
    h = torch.round(torch.sqrt(area / r)).long()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(valid.int(), dim=1, keepdim=True)  # index of the first valid try (0 if none)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    fallback_w, fallback_h = _central_crop_size(height, width, ratio)
    found = valid.any(dim=1)
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    h = torch.where(found, h, torch.full_like(h, fallback_h))

    u = uniform(0.0, 1.0, (batch, 2), generator)
    x0 = torch.floor(u[:, 0] * (width - w + 1)).long().clamp_(max=width - w)
    y0 = torch.floor(u[:, 1] * (height - h + 1)).long().clamp_(max=height - h)
    x0 = torch.where(found, x0, (width - w) // 2)
    y0 = torch.where(found, y0, (height - h) // 2)
    return torch.stack([x0, y0, w, h], dim=1)


def _central_crop_size(height: int, width: int, ratio: Sequence[float]) -> tuple[int, int]:
    """``(w, h)`` of the largest centred box whose aspect ratio is the image's clamped to ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return width, int(round(width / min(ratio)))
    if in_ratio > max(ratio):
        return int(round(height * max(ratio))), height
    return width, height


def uniform(low: float, high: float, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Uniform samples in ``[low, high)``, drawn on (and returned on) the generator's device.

    Example:
        >>> uniform(2.0, 3.0, (4,), torch.Generator().manual_seed(0)).ge(2.0).all().item()
        True
    """
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def to_grayscale(images: Tensor) -> Tensor:
    """ITU-R 601-2 luma, repeated to the input's channel count (1-channel input is returned as is).

    Example:
        >>> to_grayscale(torch.ones(1, 3, 2, 2)).shape
        torch.Size([1, 3, 2, 2])
    """
    if images.shape[1] == 1:
        return images
    return _luma(images).expand_as(images).contiguous()


def _luma(images: Tensor) -> Tensor:
    """``(B, 1, H, W)`` luma of an RGB batch."""
    weights = torch.tensor(LUMA_WEIGHTS, device=images.device, dtype=images.dtype)
    return torch.einsum("bchw,c->bhw", images, weights).unsqueeze(1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Multiply each image by its factor (blend with black), clamped to [0, 1].

    Example:
        >>> adjust_brightness(torch.full((2, 3, 4, 4), 0.5), torch.tensor([0.0, 2.0]))[:, 0, 0, 0]
        tensor([0., 1.])
    """
    return (images * _per_sample(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale (factor 0 gives a flat grey image).

    Example:
        >>> x = torch.rand(2, 3, 4, 4)
        >>> adjust_contrast(x, torch.ones(2)).allclose(x)
        True
    """
    gray = images if images.shape[1] == 1 else _luma(images)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each RGB image with its grayscale (factor 0 gives grayscale); 1-channel input is unchanged.

    Example:
        >>> x = torch.rand(2, 3, 4, 4)
        >>> adjust_saturation(x, torch.zeros(2)).allclose(to_grayscale(x))
        True
    """
    if images.shape[1] == 1:
        return images
    return _blend(images, _luma(images), factor)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each RGB image by ``shift`` turns (in [-0.5, 0.5]); 1-channel input is unchanged.

    Example:
        >>> red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        >>> adjust_hue(red, torch.tensor([1 / 3])).flatten()  # red -> green
        tensor([0., 1., 0.])
    """
    if images.shape[1] == 1:
        return images
    hue, sat, val = _rgb_to_hsv(images)
    hue = torch.remainder(hue + _per_sample(shift, images).squeeze(1), 1.0)
    return _hsv_to_rgb(hue, sat, val)


def _rgb_to_hsv(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hue (in turns, [0, 1)), saturation and value planes ``(B, H, W)`` of an RGB batch."""
    r, g, b = images.unbind(dim=1)
    minc, maxc = torch.aminmax(images, dim=1)
    delta = maxc - minc
    grey = delta == 0
    safe_delta = torch.where(grey, torch.ones_like(delta), delta)
    sat = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))  # delta = 0 where maxc = 0
    # Hue in sixths of a turn, from whichever channel is the maximum (red wins ties, then green).
    hue = torch.where(
        maxc == r,
        (g - b) / safe_delta,
        torch.where(maxc == g, (b - r) / safe_delta + 2.0, (r - g) / safe_delta + 4.0),
    )
    hue = torch.where(grey, torch.zeros_like(hue), torch.remainder(hue / 6.0, 1.0))
    return hue, sat, maxc


def _hsv_to_rgb(hue: Tensor, sat: Tensor, val: Tensor) -> Tensor:
    """RGB batch from hue (turns), saturation and value planes, by the closed form
    ``c_n = v - v * s * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 * hue) mod 6``, n = 5, 3, 1."""
    n = torch.tensor([5.0, 3.0, 1.0], device=hue.device, dtype=hue.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return val.unsqueeze(1) * (1.0 - sat.unsqueeze(1) * ramp)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each image with an isotropic Gaussian of its own ``sigma`` (reflect padding).

    Separable: one grouped convolution per direction covers every channel of every sample.

    Args:
        images: float batch ``(B, C, H, W)``; H and W must exceed ``kernel_size // 2``.
        sigma: ``(B,)`` positive standard deviations in pixels.
        kernel_size: odd kernel side length.

    Example:
        >>> x = torch.full((2, 3, 8, 8), 0.3)
        >>> gaussian_blur(x, torch.tensor([0.5, 2.0]), 5).allclose(x)
        True
    """
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    b, c, height, width = images.shape
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - kernel_size // 2
    s = sigma.to(device=images.device, dtype=images.dtype).view(-1, 1)
    kernel = torch.softmax(-(offsets**2) / (2.0 * s**2), dim=1)  # normalised Gaussian, (B, k)
    kernel = kernel.repeat_interleave(c, dim=0)  # one row per (sample, channel) group
    pad = kernel_size // 2
    x = F.pad(images.reshape(1, b * c, height, width), (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel.view(b * c, 1, 1, kernel_size), groups=b * c)
    x = F.conv2d(x, kernel.view(b * c, 1, kernel_size, 1), groups=b * c)
    return x.view(b, c, height, width)


def solarize(images: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert (``1 - x``) every pixel value at or above ``threshold``.

    Example:
        >>> solarize(torch.tensor([0.2, 0.5, 0.9]).view(1, 1, 1, 3)).flatten()
        tensor([0.2000, 0.5000, 0.1000])
    """
    return torch.where(images >= threshold, 1.0 - images, images)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel ``(x - mean) / std``.

    Example:
        >>> normalize(torch.full((1, 3, 2, 2), 0.5), (0.5,) * 3, (0.25,) * 3).abs().max().item()
        0.0
    """
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - m) / s
