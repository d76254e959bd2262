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
        return images.mul(1.0 / 255.0)  # one pass: uint8 * float promotes to float32
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point, got {images.dtype}")
    return images.float()


def _per_sample(values: Tensor, images: Tensor) -> Tensor:
    """Reshape per-sample values ``(B,)`` to ``(B, 1, 1, 1)`` on the images' device and dtype."""
    return values.to(device=images.device, dtype=images.dtype).view(-1, 1, 1, 1)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * images + (1 - factor) * other`` per sample (one fused ``lerp``), clamped to [0, 1]."""
    return torch.lerp(other, images, _per_sample(factor, images)).clamp_(0.0, 1.0)


def resized_crop(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop one box per sample and resize it to ``size x size`` with bilinear interpolation.

    The crop, resize and optional horizontal mirror are one ``F.grid_sample`` call on a grid built
    from per-sample column and row coordinates (the map is separable). Output pixel centres are mapped onto the box and clamped to the centres of the box's
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
    # The map from output to input is separable: output column j samples input x = x0 + (j + 0.5)
    # * w / size - 0.5 (pixel-index coordinates; mirrored: j -> size - 1 - j), row i samples y
    # likewise. So the grid is built from two (B, size) coordinate rows, clamped to the centres of
    # the box's outermost pixels, instead of a full affine grid; in float64 where the device has it.
    exact = torch.float64 if device.type in ("cpu", "cuda") else torch.float32  # e.g. MPS has no float64
    x0, y0, w, h = boxes.to(device=device, dtype=exact).unbind(dim=1)
    centres = (torch.arange(size, device=device, dtype=exact) + 0.5) / size  # (size,)
    if flip is not None:
        mirrored = flip.to(device=device, dtype=torch.bool).view(b, 1)
        across = torch.where(mirrored, 1.0 - centres, centres)  # (B, size)
    else:
        across = centres.expand(b, size)
    gx = _source_coordinates(x0, w, across, width).to(images.dtype)
    gy = _source_coordinates(y0, h, centres.expand(b, size), height).to(images.dtype)
    grid = torch.stack((gx.view(b, 1, size).expand(b, size, size), gy.view(b, size, 1).expand(b, size, size)), dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _source_coordinates(start: Tensor, extent: Tensor, fraction: Tensor, length: int) -> Tensor:
    """Normalised (``align_corners=False``) input coordinates of the output pixels: ``fraction`` of
    the way across each box ``[start, start + extent)``, clamped to its outermost pixel centres."""
    start, extent = start.view(-1, 1), extent.view(-1, 1)
    pixel = torch.maximum(torch.minimum(start + fraction * extent - 0.5, start + extent - 1.0), start)
    return (2.0 * pixel + 1.0) / length - 1.0


def sample_crop_boxes(
    height: int | Tensor,
    width: int | Tensor,
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

    ``height`` and ``width`` may be int64 ``(batch,)`` tensors: each sample's own image size (a
    folder image fitted into a larger canvas, see :class:`~selfsup.augment.FramedImages`). The
    random draws do not depend on the sizes, so a batch of full canvases gets the same boxes either way.

    Args:
        height: image height in pixels, or one per sample.
        width: image width in pixels, or one per sample.
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
    device = generator.device
    if isinstance(height, Tensor) or isinstance(width, Tensor):
        height = torch.as_tensor(height, dtype=torch.long, device=device).expand(batch)
        width = torch.as_tensor(width, dtype=torch.long, device=device).expand(batch)
        sizes_h, sizes_w = height.view(batch, 1), width.view(batch, 1)
    else:
        sizes_h, sizes_w = height, width
    area = sizes_h * sizes_w * uniform(scale[0], scale[1], (batch, tries), generator)
    log_r = uniform(math.log(ratio[0]), math.log(ratio[1]), (batch, tries), generator)
    r = torch.exp(log_r)
    w = torch.round(torch.sqrt(area * r)).long()
    h = torch.round(torch.sqrt(area / r)).long()
    valid = (w > 0) & (w <= sizes_w) & (h > 0) & (h <= sizes_h)
    first = torch.argmax(valid.int(), dim=1, keepdim=True)  # index of the first valid try (0 if none)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)

    fallback_w, fallback_h = _central_crop_size(height, width, ratio)
    found = valid.any(dim=1)
    w = torch.where(found, w, fallback_w)
    h = torch.where(found, h, fallback_h)

    u = uniform(0.0, 1.0, (batch, 2), generator)
    x0 = torch.floor(u[:, 0] * (width - w + 1)).long().clamp_(max=width - w)
    y0 = torch.floor(u[:, 1] * (height - h + 1)).long().clamp_(max=height - h)
    x0 = torch.where(found, x0, (width - w) // 2)
    y0 = torch.where(found, y0, (height - h) // 2)
    return torch.stack([x0, y0, w, h], dim=1)


def _central_crop_size(
    height: int | Tensor, width: int | Tensor, ratio: Sequence[float]
) -> tuple[int | Tensor, int | Tensor]:
    """``(w, h)`` of the largest centred box whose aspect ratio is the image's clamped to ``ratio``
    (per sample when the sizes are tensors)."""
    if isinstance(height, Tensor):
        in_ratio = width / height
        narrow, wide = in_ratio < min(ratio), in_ratio > max(ratio)
        w = torch.where(wide, torch.round(height * max(ratio)).long(), width)
        h = torch.where(narrow, torch.round(width / min(ratio)).long(), height)
        return w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        return width, int(round(width / min(ratio)))
    if in_ratio > max(ratio):
        return int(round(height * max(ratio))), height
    return width, height


def centre_square_boxes(extents: Tensor) -> Tensor:
    """int64 ``(B, 4)`` boxes ``(x0, y0, w, h)``: the largest centred square of each sample's
    ``extents`` ``(B, 2)`` = ``(height, width)`` (integer offsets, as the folder's centre crop).

    Example:
        >>> centre_square_boxes(torch.tensor([[24, 32], [32, 32]])).tolist()
        [[4, 0, 24, 24], [0, 0, 32, 32]]
    """
    h, w = extents.long().unbind(dim=1)
    side = torch.minimum(h, w)
    return torch.stack([(w - side) // 2, (h - side) // 2, side, side], dim=1)


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
    """``(B, 1, H, W)`` luma of an RGB batch (three scaled adds over the planes)."""
    r, g, b = images.unbind(dim=1)
    luma = r * LUMA_WEIGHTS[0]
    luma.add_(g, alpha=LUMA_WEIGHTS[1]).add_(b, alpha=LUMA_WEIGHTS[2])
    return luma.unsqueeze(1)


def _mean_luma(images: Tensor) -> Tensor:
    """``(B, 1, 1, 1)`` mean luma of each image: the luma weights applied to the channel means."""
    means = images.mean(dim=(2, 3))  # (B, C)
    if images.shape[1] == 1:
        return means.view(-1, 1, 1, 1)
    weights = torch.tensor(LUMA_WEIGHTS, device=images.device, dtype=images.dtype)
    return (means @ weights).view(-1, 1, 1, 1)


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
    return _blend(images, _mean_luma(images).expand_as(images), factor)


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
    r, g, b = images.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    delta = maxc - torch.minimum(torch.minimum(r, g), b)
    # Hue in sixths of a turn, in [-1, 5), from whichever channel is the maximum (red wins ties,
    # then green). Where delta = 0 (grey) the hue is irrelevant: every channel comes out as maxc.
    # The sector is picked with exact 0/1 float masks and lerp, several times faster than
    # torch.where on the CPU.
    inverse = delta.clamp_min(1e-12).reciprocal_()
    red_max = torch.eq(maxc, r, out=torch.empty_like(maxc))
    green_max = torch.eq(maxc, g, out=torch.empty_like(maxc))
    hue = torch.lerp((r - g).add_(delta, alpha=4.0), (b - r).add_(delta, alpha=2.0), green_max)
    hue = torch.lerp(hue, g - b, red_max)
    rotation = _per_sample(shift, images).view(-1, 1, 1) * 6.0
    hue = torch.addcmul(rotation, hue, inverse)  # rotated, in [-4, 8)
    hue.sub_(torch.floor(hue * (1.0 / 6.0)), alpha=6.0)  # wrapped to [0, 6] (faster than remainder_)
    return _hue_to_rgb(hue, maxc, delta)


def _hue_to_rgb(hue: Tensor, maxc: Tensor, delta: Tensor) -> Tensor:
    """RGB batch from hue (sixths of a turn, in [0, 6]), value ``maxc`` and chroma ``delta``.

    The closed form of HSV -> RGB is ``c_n = v - v s clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + hue) mod 6`` for n = 5, 3, 1 and ``v s = delta``. The ramp ``clamp(min(k, 4 - k), 0, 1)``
    equals ``clamp(||hue - c_n| - 3|, 1, 2) - 1`` with ``c_n = (2 - n) mod 6`` = 3, 5, 1, which needs
    no modulo; the ``- 1`` is folded into ``c_n = (v + delta) - delta clamp(...)``.
    """
    out = torch.empty((hue.shape[0], 3, *hue.shape[1:]), device=hue.device, dtype=hue.dtype)
    top = maxc + delta
    for channel, centre in enumerate((3.0, 5.0, 1.0)):
        ramp = (hue - centre).abs_().sub_(3.0).abs_().clamp_(1.0, 2.0)
        torch.addcmul(top, ramp, delta, value=-1.0, out=out[:, channel])
    return out


BLUR_TRUNCATION = 6.0
"""On the CPU a large blur kernel drops the taps beyond ``BLUR_TRUNCATION`` standard deviations
from its centre (their weights are below ``exp(-18)`` = 1.5e-8 of the centre's), so small sigmas
cost less."""

_BUCKETED_RADIUS = 8
"""Kernels with at least this radius (17+ taps, views of about 160 px and more) are truncated per
sample; below it one convolution for the whole batch is faster."""


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each image with an isotropic Gaussian of its own ``sigma`` (reflect padding).

    Separable: one grouped convolution per direction covers every channel of every sample. On the
    CPU and for kernels of 17 taps or more, samples are grouped by the radius their sigma needs (at
    most ``kernel_size // 2``, taps beyond :data:`BLUR_TRUNCATION` sigmas dropped) and each group is
    blurred with that radius, which changes the result by less than 1e-6 and saves about a quarter
    of the work at 224 px.

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
    s = sigma.to(device=images.device, dtype=images.dtype)
    radius = kernel_size // 2
    if images.device.type != "cpu" or radius < _BUCKETED_RADIUS:
        return _separable_blur(images, s, radius)
    needed = torch.ceil(BLUR_TRUNCATION * s).clamp_(1, radius).long()
    radii = needed.unique().tolist()
    if len(radii) == 1:
        return _separable_blur(images, s, radii[0])
    out = torch.empty_like(images)
    for r in radii:
        index = (needed == r).nonzero().squeeze(1)
        out.index_copy_(0, index, _separable_blur(images.index_select(0, index), s.index_select(0, index), r))
    return out


def _separable_blur(images: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Gaussian blur with ``2 radius + 1`` taps per direction: two grouped convolutions."""
    b, c, height, width = images.shape
    k = 2 * radius + 1
    offsets = torch.arange(k, device=images.device, dtype=images.dtype) - radius
    kernel = torch.softmax(-(offsets**2) / (2.0 * sigma.view(-1, 1) ** 2), dim=1)  # normalised, (B, k)
    kernel = kernel.repeat_interleave(c, dim=0)  # one row per (sample, channel) group
    x = F.pad(images.reshape(1, b * c, height, width), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(b * c, 1, 1, k), groups=b * c)
    x = F.conv2d(x, kernel.view(b * c, 1, k, 1), groups=b * c)
    return x.view(b, c, height, width)


def solarize(images: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert (``1 - x``) every pixel value at or above ``threshold``.

    Example:
        >>> solarize(torch.tensor([0.2, 0.5, 0.9]).view(1, 1, 1, 3)).flatten()
        tensor([0.2000, 0.5000, 0.1000])
    """
    inverted = torch.ge(images, threshold, out=torch.empty_like(images))  # exact 0 / 1 weights
    return torch.lerp(images, 1.0 - images, inverted)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float], out: Tensor | None = None) -> Tensor:
    """Per-channel ``(x - mean) / std`` in one pass (into ``out`` when given).

    Example:
        >>> normalize(torch.full((1, 3, 2, 2), 0.5), (0.5,) * 3, (0.25,) * 3).abs().max().item()
        0.0
    """
    scale = torch.tensor([1.0 / v for v in std], device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    shift = torch.tensor([-m / v for m, v in zip(mean, std)], device=images.device, dtype=images.dtype)
    shift = shift.view(1, -1, 1, 1)
    return torch.addcmul(shift, images, scale, out=out)


def sample_erase_boxes(
    height: int,
    width: int,
    batch: int,
    scale: Sequence[float] = (0.02, 0.4),
    ratio: Sequence[float] = (0.3, 1 / 0.3),
    *,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Draw random-erasing boxes for a batch, vectorised over samples and tries.

    Zhong et al. 2020, "Random Erasing Data Augmentation", arXiv 1708.04896, Algorithm 1: the
    box area is a fraction of the image area uniform in ``scale`` and its aspect ratio ``h / w``
    lies in ``ratio``; ``h = round(sqrt(area * r))``, ``w = round(sqrt(area / r))`` and the box
    position is uniform over the positions that keep it inside the image. The ratio is drawn
    log-uniformly (as torchvision's ``RandomErasing``; the paper draws it uniformly, which favours
    tall boxes). Each sample gets 10 tries and keeps the first that fits; a sample with no fitting
    try is not erased.

    Returns:
        int64 ``(batch, 4)`` boxes ``(x0, y0, w, h)`` and bool ``(batch,)``, True where a box fits.

    Example:
        >>> boxes, found = sample_erase_boxes(32, 32, 5, generator=torch.Generator().manual_seed(0))
        >>> boxes.shape, bool(found.all())
        (torch.Size([5, 4]), True)
    """
    tries = 10
    area = height * width * uniform(scale[0], scale[1], (batch, tries), generator)
    r = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1]), (batch, tries), generator))
    h = torch.round(torch.sqrt(area * r)).long()
    w = torch.round(torch.sqrt(area / r)).long()
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(valid.int(), dim=1, keepdim=True)
    w = torch.where(valid.any(dim=1), w.gather(1, first).squeeze(1), 0)
    h = torch.where(valid.any(dim=1), h.gather(1, first).squeeze(1), 0)
    u = uniform(0.0, 1.0, (batch, 2), generator)
    x0 = torch.floor(u[:, 0] * (width - w + 1)).long().clamp_(max=width - w)
    y0 = torch.floor(u[:, 1] * (height - h + 1)).long().clamp_(max=height - h)
    return torch.stack([x0, y0, w, h], dim=1), valid.any(dim=1)


def box_mask(boxes: Tensor, height: int, width: int) -> Tensor:
    """bool ``(B, 1, height, width)``, True inside each sample's box ``(x0, y0, w, h)``.

    Example:
        >>> box_mask(torch.tensor([[1, 0, 2, 1]]), 2, 4).int().tolist()
        [[[[0, 1, 1, 0], [0, 0, 0, 0]]]]
    """
    x0, y0, w, h = boxes.to(torch.long).unbind(dim=1)
    cols = torch.arange(width, device=boxes.device).view(1, -1)
    rows = torch.arange(height, device=boxes.device).view(1, -1)
    inside_x = (cols >= x0.view(-1, 1)) & (cols < (x0 + w).view(-1, 1))  # (B, W)
    inside_y = (rows >= y0.view(-1, 1)) & (rows < (y0 + h).view(-1, 1))  # (B, H)
    return (inside_y.unsqueeze(2) & inside_x.unsqueeze(1)).unsqueeze(1)


_MASK32 = 0xFFFFFFFF


def hash_uniform(seeds: Tensor, shape: Sequence[int]) -> Tensor:
    """Uniform noise in [0, 1) of ``shape`` per sample, a pure function of the sample's seed and
    the element's position: ``(B, *shape)`` float32 on the seeds' device.

    A counter-based generator (a 32-bit integer hash of seed and position, constants below 2^31
    so every product fits in int64), so the noise of a sample does not depend on which other
    samples share its batch or chunk.

    Example:
        >>> a = hash_uniform(torch.tensor([1, 2]), (3, 2, 2))
        >>> a.shape, bool(torch.equal(a[1], hash_uniform(torch.tensor([2]), (3, 2, 2))[0]))
        (torch.Size([2, 3, 2, 2]), True)
    """
    count = math.prod(shape)
    position = torch.arange(count, device=seeds.device, dtype=torch.int64).view(1, -1)
    h = (seeds.to(torch.int64).view(-1, 1) & 0x7FFFFFFF) * 0x3C6EF372 + position
    for multiplier in (0x7FEB352D, 0x2C1B3C6D, 0x297A2D39):
        h = h & _MASK32
        h = ((h ^ (h >> 16)) * multiplier) & _MASK32
    h = h ^ (h >> 15)
    return (h.to(torch.float64) * (1.0 / 2**32)).to(torch.float32).view(-1, *shape)


def erase(images: Tensor, boxes: Tensor, fill: Tensor) -> Tensor:
    """Replace each sample's box ``(x0, y0, w, h)`` by ``fill`` (broadcast to the batch; e.g.
    ``(B, C, H, W)`` noise or ``(1, C, 1, 1)`` colours).

    Example:
        >>> erase(torch.zeros(1, 1, 2, 2), torch.tensor([[0, 0, 1, 2]]), torch.ones(1, 1, 1, 1)).flatten().tolist()
        [1.0, 0.0, 1.0, 0.0]
    """
    inside = box_mask(boxes.to(images.device), images.shape[-2], images.shape[-1])
    return torch.where(inside, fill.to(device=images.device, dtype=images.dtype), images)
