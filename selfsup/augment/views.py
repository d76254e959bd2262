"""The classic view description and the helpers around it.

:class:`ViewSpec` holds the parameters of a SimCLR / BYOL-style view (crop, flip, colour jitter,
grayscale, blur, solarize, normalisation) and converts to the equivalent :class:`View` (an op
list); the named recipes are written with it. :func:`sample_view` / :func:`render_view` /
:func:`apply_view` make one view of a batch; :class:`EvalTransform` is the deterministic
preprocessing of evaluation.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from selfsup.augment import functional as AF
from selfsup.augment import checks
from selfsup.augment.multiview import MultiView
from selfsup.augment.ops import ColorJitter, GaussianBlur, Grayscale, HorizontalFlip, RandomResizedCrop, Solarize
from selfsup.augment.pipeline import View, ViewParams

__all__ = ["EvalTransform", "MultiView", "View", "ViewParams", "ViewSpec", "apply_view", "render_view", "sample_view"]

_PROBABILITIES = ("hflip_p", "jitter_p", "gray_p", "blur_p", "solarize_p")


@dataclass
class ViewSpec:
    """The augmentation parameters of one view, in the style of SimCLR / BYOL pipelines.

    Colour-jitter strengths follow torchvision's ``ColorJitter``: brightness, contrast and
    saturation factors are uniform in ``[max(0, 1 - s), 1 + s]``, the hue shift in ``[-s, s]``.
    ``mean`` / ``std`` may be left as None and filled in later with
    :meth:`MultiView.with_normalization`.

    Attributes:
        size: output side length in pixels.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio ``w / h``.
        hflip_p: probability of a horizontal flip.
        jitter: brightness, contrast, saturation and hue strengths.
        jitter_p: probability of colour jitter.
        gray_p: probability of converting to grayscale.
        blur_p: probability of Gaussian blur.
        blur_sigma: range of the blur standard deviation in pixels.
        blur_kernel_fraction: blur kernel size as a fraction of ``size`` (odd, at least 3).
        solarize_p: probability of solarization (threshold 0.5).
        mean: per-channel normalisation mean, or None.
        std: per-channel normalisation standard deviation, or None.

    Example:
        >>> spec = ViewSpec(size=32, blur_p=0.5, mean=(0.5,) * 3, std=(0.25,) * 3)
        >>> spec.blur_kernel_size
        3
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_p: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        owner = "ViewSpec"
        self.size = checks.positive_int(owner, "size", self.size)
        self.scale = checks.interval(owner, "scale", self.scale, high=1.0)
        self.ratio = checks.interval(owner, "ratio", self.ratio)
        self.jitter = checks.floats(owner, "jitter", self.jitter, 4)
        if min(self.jitter[:3]) < 0 or not 0 <= self.jitter[3] <= 0.5:
            checks.invalid(owner, "jitter", self.jitter, "brightness, contrast, saturation >= 0 and hue in [0, 0.5]")
        for name in _PROBABILITIES:
            setattr(self, name, checks.probability(owner, name, getattr(self, name)))
        self.blur_sigma = checks.interval(owner, "blur_sigma", self.blur_sigma)
        if not checks.is_number(self.blur_kernel_fraction) or not 0 < self.blur_kernel_fraction <= 1:
            checks.invalid(owner, "blur_kernel_fraction", self.blur_kernel_fraction, "a number in (0, 1]")
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                setattr(self, name, checks.floats(owner, name, getattr(self, name)))
        if self.std is not None and min(self.std) <= 0:
            checks.invalid(owner, "std", self.std, "values > 0")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            checks.invalid(owner, "std", self.std, f"as many values as mean {self.mean}")

    @property
    def blur_kernel_size(self) -> int:
        """The odd integer nearest to ``blur_kernel_fraction * size``, at least 3."""
        nearest_odd = 2 * math.floor((self.blur_kernel_fraction * self.size - 1) / 2 + 0.5) + 1
        return max(3, nearest_odd)

    def to_view(self) -> View:
        """The equivalent op list: crop, horizontal flip, colour jitter, grayscale, blur, solarize.

        Example:
            >>> ViewSpec(size=8).to_view().keys[:3]
            ('random_resized_crop', 'horizontal_flip', 'color_jitter')
        """
        brightness, contrast, saturation, hue = self.jitter
        ops = [
            RandomResizedCrop(size=self.size, scale=self.scale, ratio=self.ratio),
            HorizontalFlip(p=self.hflip_p),
            ColorJitter(brightness, contrast, saturation, hue, p=self.jitter_p),
            Grayscale(p=self.gray_p),
            GaussianBlur(p=self.blur_p, sigma=self.blur_sigma, kernel_size=self.blur_kernel_size),
            Solarize(p=self.solarize_p, threshold=0.5),
        ]
        return View(ops, self.mean, self.std)

    def with_normalization(self, mean: Sequence[float], std: Sequence[float]) -> ViewSpec:
        """A copy with ``mean`` / ``std`` where this spec's are None."""
        return replace(
            self,
            mean=tuple(mean) if self.mean is None else self.mean,
            std=tuple(std) if self.std is None else self.std,
        )


def sample_view(
    spec: ViewSpec | View,
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> ViewParams:
    """Draw one view's per-sample random parameters for a batch of ``height x width`` images.

    One number comes from ``generator`` and each op draws from its own stream derived from it
    (see :class:`View`), vectorised over the batch; the results live on ``device`` (the
    generator's by default). A :class:`ViewSpec`'s ops are keyed ``random_resized_crop``,
    ``horizontal_flip``, ``color_jitter``, ``grayscale``, ``gaussian_blur`` and ``solarize``.

    Example:
        >>> p = sample_view(ViewSpec(size=8, gray_p=1.0), 3, 32, 32, torch.Generator().manual_seed(0))
        >>> p["grayscale"]["apply"].tolist()
        [True, True, True]
    """
    return _view(spec).sample(batch, height, width, generator, device)


def render_view(images: Tensor, spec: ViewSpec | View, params: ViewParams, out: Tensor | None = None) -> Tensor:
    """Make the view that ``params`` describe of every image of a float batch in [0, 1].

    The view's ops run in order, each only on the samples selected for it (gathered into a
    contiguous sub-batch, never in a loop over samples), then the normalisation with the view's
    ``mean`` / ``std`` is written straight into ``out`` when given.

    Example:
        >>> spec = ViewSpec(size=8, mean=(0.5,), std=(0.5,))
        >>> x = torch.rand(2, 1, 16, 16)
        >>> render_view(x, spec, sample_view(spec, 2, 16, 16, torch.Generator())).shape
        torch.Size([2, 1, 8, 8])
    """
    return _view(spec).render(images, params, out=out)


def apply_view(images: Tensor, spec: ViewSpec | View, generator: torch.Generator) -> Tensor:
    """Make one random view of every image in a batch, with its own parameters per sample.

    :func:`sample_view` draws the parameters (from ``generator`` only, so a seeded generator
    reproduces the output exactly) and :func:`render_view` applies them, in chunks of the batch on
    the CPU (see :class:`MultiView`).

    Args:
        images: uint8 batch ``(B, C, H, W)`` (or float in [0, 1]), C = 1 or 3.
        spec: the view; ``mean`` and ``std`` must be set.
        generator: source of randomness (best on the images' device).

    Returns:
        float32 normalised views, ``(B, C, spec.size, spec.size)`` for a :class:`ViewSpec`.

    Example:
        >>> spec = ViewSpec(size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> apply_view(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), spec, torch.Generator()).shape
        torch.Size([4, 3, 16, 16])
    """
    return MultiView([spec])(images, generator)[0]


def _view(spec: ViewSpec | View) -> View:
    return spec if isinstance(spec, View) else spec.to_view()


class EvalTransform:
    """Deterministic evaluation preprocessing: bilinear antialiased resize to ``size x size``
    (only when the batch has another size), then float conversion and normalisation.

    Used for feature extraction in k-NN and linear-probe evaluation.

    Example:
        >>> t = EvalTransform(16, mean=(0.5,), std=(0.5,))
        >>> t(torch.zeros(2, 1, 32, 32, dtype=torch.uint8)).shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, images: Tensor) -> Tensor:
        """Float32 normalised ``(B, C, size, size)`` batch from uint8 (or [0, 1] float) images."""
        x = AF.to_float(images)
        if x.shape[-2:] != (self.size, self.size):
            x = torch.nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )
        return AF.normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, mean={self.mean}, std={self.std})"
