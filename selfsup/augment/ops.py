"""The built-in augmentation ops, registered in :data:`~selfsup.augment.OPS` under their names.

Geometry: ``random_resized_crop``, ``horizontal_flip``, ``vertical_flip``, ``rotate90``; colour:
``color_jitter``, ``grayscale``, ``solarize``; filters and occlusion: ``gaussian_blur``,
``random_erasing``. Each works on a float batch in [0, 1], every sample with its own parameters
(the batched formulas are in :mod:`selfsup.augment.functional`). Defaults follow the most common
published use (e.g. MoCo v2's colour jitter, random erasing's paper values).

Example:
    >>> crop = RandomResizedCrop(size=8, scale=(0.2, 1.0))
    >>> x = torch.rand(4, 3, 16, 16)
    >>> crop.apply(x, crop.sample(4, 16, 16, torch.Generator().manual_seed(0))).shape
    torch.Size([4, 3, 8, 8])
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from selfsup.augment import functional as AF
from selfsup.augment.checks import floats, interval, invalid, is_number, positive_int
from selfsup.augment.op import Op, Params, RandomOp, apply_to, register_op

__all__ = [
    "ColorJitter",
    "GaussianBlur",
    "Grayscale",
    "HorizontalFlip",
    "RandomErasing",
    "RandomResizedCrop",
    "Rotate90",
    "Solarize",
    "VerticalFlip",
]


@register_op("random_resized_crop")
@dataclass
class RandomResizedCrop(Op):
    """Random crop of random area and aspect ratio, resized to ``size x size`` (bilinear).

    Szegedy et al. 2015, "Going deeper with convolutions", arXiv 1409.4842, as torchvision's
    ``RandomResizedCrop`` (see :func:`~selfsup.augment.functional.sample_crop_boxes`).

    Attributes:
        size: output side length in pixels.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio ``w / h`` (drawn log-uniformly).
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    fresh_output = True
    takes_extents = True

    def __post_init__(self) -> None:
        self.size = positive_int(self.key, "size", self.size)
        self.scale = interval(self.key, "scale", self.scale, high=1.0)
        self.ratio = interval(self.key, "ratio", self.ratio)

    def sample(
        self, batch: int, height: int, width: int, generator: torch.Generator, extents: Tensor | None = None
    ) -> Params:
        """``boxes``: int64 ``(B, 4)`` crop boxes ``(x0, y0, w, h)`` in input pixels; with ``extents``
        (``(B, 2)`` heights and widths) each box lies inside its own sample's image and its area is a
        fraction of that image's area."""
        if extents is not None:
            extents = extents.to(generator.device)
            height, width = extents[:, 0], extents[:, 1]
        return {"boxes": AF.sample_crop_boxes(height, width, batch, self.scale, self.ratio, generator=generator)}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        return AF.resized_crop(images, params["boxes"], self.size, flip=params.get("flip"))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size, self.size

    def fuse(self, following: Op, params: Params, following_params: Params) -> Params | None:
        """A horizontal flip right after the crop is done by the crop's sampling grid (no extra pass)."""
        if type(following) is HorizontalFlip:
            return {**params, "flip": following_params["apply"]}
        return None


@register_op("horizontal_flip")
@dataclass
class HorizontalFlip(RandomOp):
    """Mirror left-right with probability ``p``."""

    p: float = 0.5

    def transform(self, images: Tensor, params: Params) -> Tensor:
        return images.flip(-1)


@register_op("vertical_flip")
@dataclass
class VerticalFlip(RandomOp):
    """Mirror top-bottom with probability ``p`` (images without a preferred up: aerial, microscopy)."""

    p: float = 0.5

    def transform(self, images: Tensor, params: Params) -> Tensor:
        return images.flip(-2)


@register_op("rotate90")
@dataclass
class Rotate90(Op):
    """Rotate by a whole number of quarter turns drawn uniformly from ``turns`` (counter-clockwise).

    For images without a preferred orientation (satellite, medical). The images must be square where
    the op runs (e.g. after ``random_resized_crop``). ``turns=(0, 2)`` only turns upside down.

    Attributes:
        turns: the quarter turns to choose from, each in {0, 1, 2, 3}.
    """

    turns: tuple[int, ...] = (0, 1, 2, 3)

    def __post_init__(self) -> None:
        turns = self.turns
        if (
            not isinstance(turns, Sequence) or isinstance(turns, str) or len(turns) == 0
            or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 3 for t in turns)
        ):
            invalid(self.key, "turns", turns, "a non-empty sequence of quarter turns in {0, 1, 2, 3}")
        self.turns = tuple(turns)

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> Params:
        """``turns``: int64 ``(B,)`` quarter turns."""
        if height != width and any(t % 2 for t in self.turns):
            raise ValueError(
                f"{self.key} with odd turns needs square images where it runs, got {height}x{width}: "
                "place it after random_resized_crop, or use turns=(0, 2)."
            )
        choice = torch.randint(len(self.turns), (batch,), generator=generator, device=generator.device)
        return {"turns": torch.tensor(self.turns, device=generator.device)[choice]}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        turns = params["turns"].to(images.device)
        for k in sorted(set(self.turns) - {0}):
            images = apply_to(images, turns == k, lambda x, _, k=k: torch.rot90(x, k, dims=(-2, -1)), {})
        return images


_JITTER_OPS = (AF.adjust_brightness, AF.adjust_contrast, AF.adjust_saturation, AF.adjust_hue)


@register_op("color_jitter")
@dataclass
class ColorJitter(RandomOp):
    """Brightness, contrast, saturation and hue changes in a random order per sample, with probability ``p``.

    torchvision's ``ColorJitter``: brightness, contrast and saturation factors uniform in
    ``[max(0, 1 - s), 1 + s]``, the hue shift uniform in ``[-hue, hue]`` turns; the four run in
    each sample's own random order (an op of strength 0 is skipped). Defaults: MoCo v2's jitter.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("brightness", "contrast", "saturation", "hue"):
            value = getattr(self, name)
            if not is_number(value) or value < 0 or (name == "hue" and value > 0.5):
                invalid(self.key, name, value, "a number in [0, 0.5]" if name == "hue" else "a number >= 0")
            setattr(self, name, float(value))

    @property
    def strengths(self) -> tuple[float, float, float, float]:
        return self.brightness, self.contrast, self.saturation, self.hue

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator) -> Params:
        """``factors``: ``(B, 4)`` brightness, contrast, saturation factors and hue shift;
        ``order``: int64 ``(B, 4)``, ``order[i, k]`` = the op (0-3, in the order above) sample ``i``
        runs at position ``k``."""
        *scales, hue = self.strengths
        columns = [AF.uniform(max(0.0, 1.0 - s), 1.0 + s, (batch,), generator) for s in scales]
        factors = torch.stack(columns + [AF.uniform(-hue, hue, (batch,), generator)], dim=1)
        order = torch.argsort(AF.uniform(0.0, 1.0, (batch, 4), generator), dim=1)  # a permutation per sample
        return {"factors": factors, "order": order}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        # each (position, op) pair runs on the jittered samples that run that op there, gathered
        # from the whole batch at once (no separate gather of the jittered samples first)
        chosen, factors, order = params["apply"], params["factors"], params["order"]
        for position in range(4):
            for k, (op, strength) in enumerate(zip(_JITTER_OPS, self.strengths)):
                if strength > 0:
                    selected = chosen & (order[:, position] == k)
                    images = apply_to(images, selected, lambda x, q, op=op, k=k: op(x, q["f"][:, k]), {"f": factors})
        return images


@register_op("grayscale")
@dataclass
class Grayscale(RandomOp):
    """Convert to grayscale (ITU-R 601-2 luma, channels kept) with probability ``p``."""

    p: float = 0.2

    def transform(self, images: Tensor, params: Params) -> Tensor:
        return AF.to_grayscale(images)


@register_op("gaussian_blur")
@dataclass
class GaussianBlur(RandomOp):
    """Gaussian blur with probability ``p``, sigma uniform in ``sigma`` (pixels).

    SimCLR's blur (Chen et al. 2020, arXiv 2002.05709, Appendix A): the kernel side is
    ``kernel_fraction`` of the image side where the op runs (the nearest odd integer, at least 3),
    or ``kernel_size`` when given.

    Attributes:
        p: probability of blurring a sample.
        sigma: range of the standard deviation in pixels.
        kernel_fraction: kernel side as a fraction of the shorter image side.
        kernel_size: a fixed odd kernel side instead (None: from ``kernel_fraction``).
    """

    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)
    kernel_fraction: float = 0.1
    kernel_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sigma = interval(self.key, "sigma", self.sigma)
        if not is_number(self.kernel_fraction) or not 0 < self.kernel_fraction <= 1:
            invalid(self.key, "kernel_fraction", self.kernel_fraction, "a number in (0, 1]")
        if self.kernel_size is not None and (positive_int(self.key, "kernel_size", self.kernel_size) % 2 == 0):
            invalid(self.key, "kernel_size", self.kernel_size, "an odd integer >= 1 (or null)")

    def kernel_for(self, side: int) -> int:
        """The kernel side used on images whose shorter side is ``side``."""
        if self.kernel_size is not None:
            return self.kernel_size
        return max(3, 2 * math.floor((self.kernel_fraction * side - 1) / 2 + 0.5) + 1)

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator) -> Params:
        """``sigma``: ``(B,)`` standard deviations in pixels."""
        return {"sigma": AF.uniform(*self.sigma, (batch,), generator)}

    def transform(self, images: Tensor, params: Params) -> Tensor:
        kernel = self.kernel_for(min(images.shape[-2:]))
        return AF.gaussian_blur(images, params["sigma"], kernel_size=kernel)


@register_op("solarize")
@dataclass
class Solarize(RandomOp):
    """Invert every value at or above ``threshold`` with probability ``p`` (BYOL's 0.2 by default)."""

    p: float = 0.2
    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_number(self.threshold) or not 0 <= self.threshold <= 1:
            invalid(self.key, "threshold", self.threshold, "a number in [0, 1]")

    def transform(self, images: Tensor, params: Params) -> Tensor:
        return AF.solarize(images, self.threshold)


@register_op("random_erasing")
@dataclass
class RandomErasing(RandomOp):
    """Erase a random rectangle with probability ``p``.

    Zhong et al. 2020, "Random Erasing Data Augmentation", arXiv 1708.04896, Algorithm 1 (see
    :func:`~selfsup.augment.functional.sample_erase_boxes`); the defaults are the paper's
    (``p = 0.5``, area 0.02-0.4 of the image, aspect ratio 0.3-1/0.3, random values). It runs
    before normalisation, so ``value`` is in pixel units [0, 1].

    Attributes:
        p: probability of erasing a sample.
        scale: range of the erased area as a fraction of the image area.
        ratio: range of the box aspect ratio ``h / w`` (drawn log-uniformly).
        value: ``"random"`` (uniform noise per pixel, the paper's RE-R), one number for every
            channel, or one per channel (e.g. the data set's mean colour, the paper's RE-M).
    """

    p: float = 0.5
    scale: tuple[float, float] = (0.02, 0.4)
    ratio: tuple[float, float] = (0.3, 1 / 0.3)
    value: float | str | tuple[float, ...] = "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.scale = interval(self.key, "scale", self.scale, high=1.0)
        self.ratio = interval(self.key, "ratio", self.ratio)
        if isinstance(self.value, str):
            if self.value != "random":
                invalid(self.key, "value", self.value, "'random', a number or one number per channel")
        else:
            values = (self.value,) if is_number(self.value) else floats(self.key, "value", self.value)
            if not all(0 <= v <= 1 for v in values):
                invalid(self.key, "value", self.value, "values in [0, 1] (pixel units, before normalisation)")
            self.value = tuple(float(v) for v in values)

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> Params:
        """``apply``: bool ``(B,)``, True with probability ``p`` where a box fits; ``boxes``: int64
        ``(B, 4)`` erased boxes ``(x0, y0, w, h)``; ``seeds``: int64 ``(B,)`` seeds of the random values."""
        params = super().sample(batch, height, width, generator)
        params["apply"] = params["apply"] & params.pop("found")
        return params

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator) -> Params:
        boxes, found = AF.sample_erase_boxes(height, width, batch, self.scale, self.ratio, generator=generator)
        seeds = torch.randint(0, 2**31 - 1, (batch,), generator=generator, device=generator.device)
        return {"boxes": boxes, "found": found, "seeds": seeds}

    def transform(self, images: Tensor, params: Params) -> Tensor:
        if self.value == "random":
            fill = AF.hash_uniform(params["seeds"].to(images.device), images.shape[1:])
        else:
            values = self.value * images.shape[1] if len(self.value) == 1 else self.value
            if len(values) != images.shape[1]:
                raise ValueError(f"{self.key}.value has {len(values)} values for {images.shape[1]}-channel images")
            fill = torch.tensor(values).view(1, -1, 1, 1)
        return AF.erase(images, params["boxes"], fill)
