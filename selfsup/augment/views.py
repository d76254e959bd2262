"""Random views of an image batch: the parameters of one view, the pipeline that makes it, and
a multi-view wrapper with a resumable generator.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, NoReturn

import torch
from torch import Tensor

from selfsup.augment import functional as AF
from selfsup.errors import ConfigError, DataError

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
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            _invalid("size", self.size, "an integer >= 1")
        self.scale = _floats("scale", self.scale, 2)
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            _invalid("scale", self.scale, "(lo, hi) with 0 < lo <= hi <= 1")
        self.ratio = _floats("ratio", self.ratio, 2)
        if not 0 < self.ratio[0] <= self.ratio[1]:
            _invalid("ratio", self.ratio, "(lo, hi) with 0 < lo <= hi")
        self.jitter = _floats("jitter", self.jitter, 4)
        if min(self.jitter[:3]) < 0 or not 0 <= self.jitter[3] <= 0.5:
            _invalid("jitter", self.jitter, "brightness, contrast, saturation >= 0 and hue in [0, 0.5]")
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                _invalid(name, value, "a probability in [0, 1]")
        self.blur_sigma = _floats("blur_sigma", self.blur_sigma, 2)
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            _invalid("blur_sigma", self.blur_sigma, "(lo, hi) with 0 < lo <= hi")
        if not isinstance(self.blur_kernel_fraction, (int, float)) or not 0 < self.blur_kernel_fraction <= 1:
            _invalid("blur_kernel_fraction", self.blur_kernel_fraction, "a number in (0, 1]")
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                setattr(self, name, _floats(name, getattr(self, name)))
        if self.std is not None and min(self.std) <= 0:
            _invalid("std", self.std, "values > 0")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            _invalid("std", self.std, f"as many values as mean {self.mean}")

    @property
    def blur_kernel_size(self) -> int:
        """The odd integer nearest to ``blur_kernel_fraction * size``, at least 3."""
        nearest_odd = 2 * math.floor((self.blur_kernel_fraction * self.size - 1) / 2 + 0.5) + 1
        return max(3, nearest_odd)


def _invalid(name: str, value: Any, allowed: str) -> NoReturn:
    raise ConfigError(f"ViewSpec.{name} = {value!r} is invalid: expected {allowed}.")


def _floats(name: str, value: Any, length: int | None = None) -> tuple[float, ...]:
    """``value`` as a tuple of floats (lists from config files welcome): ``length`` of them, or
    one or more when ``length`` is None."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != (length or len(value))
        or len(value) == 0
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        _invalid(name, value, f"a sequence of {length or 'one or more'} numbers")
    return tuple(float(v) for v in value)


@dataclass
class ViewParams:
    """The random parameters of one view of a batch: one row per sample, drawn by :func:`sample_view`.

    Attributes:
        boxes: int64 ``(B, 4)`` crop boxes ``(x0, y0, w, h)`` in input pixels.
        flip: bool ``(B,)``, horizontal mirror.
        jitter: bool ``(B,)``, colour jitter applied.
        factors: ``(B, 4)`` brightness, contrast and saturation factors and the hue shift (turns);
            drawn for every sample, used where ``jitter`` holds.
        order: int64 ``(B, 4)``, ``order[i, p]`` = the jitter op (0 brightness, 1 contrast,
            2 saturation, 3 hue) that sample ``i`` runs at position ``p``.
        gray: bool ``(B,)``, converted to grayscale.
        blur: bool ``(B,)``, Gaussian blur applied.
        sigma: ``(B,)`` blur standard deviations in output pixels (used where ``blur`` holds).
        solarize: bool ``(B,)``, solarized.

    Example:
        >>> p = sample_view(ViewSpec(size=8), 4, 16, 16, torch.Generator().manual_seed(0))
        >>> p.boxes.shape, p[1:3].flip.shape
        (torch.Size([4, 4]), torch.Size([2]))
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor

    def __getitem__(self, rows: slice) -> ViewParams:
        """The parameters of the samples ``rows`` (a slice of the batch)."""
        return ViewParams(*(getattr(self, f.name)[rows] for f in fields(self)))


def sample_view(
    spec: ViewSpec,
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> ViewParams:
    """Draw one view's per-sample random parameters for a batch of ``height x width`` images.

    All draws come from ``generator``, in a fixed order, vectorised over the batch (no loop over
    samples); the results are moved to ``device`` (the generator's by default).

    Example:
        >>> p = sample_view(ViewSpec(size=8, gray_p=1.0), 3, 32, 32, torch.Generator().manual_seed(0))
        >>> p.gray.tolist()
        [True, True, True]
    """
    device = torch.device(device) if device is not None else generator.device

    def draw(low: float, high: float, columns: int | None = None) -> Tensor:
        shape = (batch,) if columns is None else (batch, columns)
        return AF.uniform(low, high, shape, generator).to(device)

    boxes = AF.sample_crop_boxes(height, width, batch, spec.scale, spec.ratio, generator=generator)
    flip = draw(0.0, 1.0) < spec.hflip_p
    jitter = draw(0.0, 1.0) < spec.jitter_p
    *factor_strengths, hue = spec.jitter
    factors = torch.stack([draw(max(0.0, 1.0 - s), 1.0 + s) for s in factor_strengths] + [draw(-hue, hue)], 1)
    order = torch.argsort(draw(0.0, 1.0, columns=len(_JITTER_OPS)), dim=1)  # a permutation per sample
    gray = draw(0.0, 1.0) < spec.gray_p
    blur = draw(0.0, 1.0) < spec.blur_p
    sigma = draw(*spec.blur_sigma)
    solarize = draw(0.0, 1.0) < spec.solarize_p
    return ViewParams(boxes.to(device), flip, jitter, factors, order, gray, blur, sigma, solarize)


def render_view(images: Tensor, spec: ViewSpec, params: ViewParams, out: Tensor | None = None) -> Tensor:
    """Make the view that ``params`` describe of every image of a float batch in [0, 1].

    Pipeline: random resized crop + horizontal flip (one ``grid_sample``), colour jitter
    (brightness, contrast, saturation and hue in each sample's own order, as torchvision's
    ``ColorJitter``), grayscale, Gaussian blur, solarization, then normalisation with
    ``spec.mean`` / ``spec.std`` written straight into ``out`` when given. Each step runs only on
    the samples selected for it (gathered into a contiguous sub-batch), never in a loop over samples.

    Example:
        >>> spec = ViewSpec(size=8, mean=(0.5,), std=(0.5,))
        >>> x = torch.rand(2, 1, 16, 16)
        >>> render_view(x, spec, sample_view(spec, 2, 16, 16, torch.Generator())).shape
        torch.Size([2, 1, 8, 8])
    """
    _check_normalization(spec)
    x = AF.resized_crop(images, params.boxes, spec.size, flip=params.flip)
    x = _color_jitter(x, spec, params)
    x = _apply_to(x, params.gray, AF.to_grayscale)
    blur = functools.partial(AF.gaussian_blur, kernel_size=spec.blur_kernel_size)
    x = _apply_to(x, params.blur, blur, params.sigma)
    x = _apply_to(x, params.solarize, AF.solarize)
    return AF.normalize(x, spec.mean, spec.std, out=out)


def apply_view(images: Tensor, spec: ViewSpec, generator: torch.Generator) -> Tensor:
    """Make one random view of every image in a batch, with its own parameters per sample.

    :func:`sample_view` draws the parameters (from ``generator`` only, on its device, so a seeded
    generator reproduces the output exactly) and :func:`render_view` applies them, in chunks of
    the batch on the CPU (see :class:`MultiView`).

    Args:
        images: uint8 batch ``(B, C, H, W)`` (or float in [0, 1]), C = 1 or 3.
        spec: the view's parameters; ``mean`` and ``std`` must be set.
        generator: source of randomness (best on the images' device).

    Returns:
        float32 ``(B, C, spec.size, spec.size)`` normalised views.

    Example:
        >>> spec = ViewSpec(size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> apply_view(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), spec, torch.Generator()).shape
        torch.Size([4, 3, 16, 16])
    """
    return MultiView([spec])(images, generator)[0]


def _check_normalization(spec: ViewSpec) -> None:
    if spec.mean is None or spec.std is None:
        raise ConfigError(
            "ViewSpec.mean and ViewSpec.std must be set before making views; "
            "pass them to the ViewSpec or use MultiView.with_normalization(mean, std)."
        )


_JITTER_OPS = (AF.adjust_brightness, AF.adjust_contrast, AF.adjust_saturation, AF.adjust_hue)


def _color_jitter(x: Tensor, spec: ViewSpec, params: ViewParams) -> Tensor:
    """Colour jitter on the selected samples, its four ops in each sample's own order."""
    for position in range(len(_JITTER_OPS)):
        for k, (op, strength) in enumerate(zip(_JITTER_OPS, spec.jitter)):
            if strength > 0:
                selected = params.jitter & (params.order[:, position] == k)
                x = _apply_to(x, selected, op, params.factors[:, k])
    return x


def _apply_to(x: Tensor, mask: Tensor, op: Callable[..., Tensor], *per_sample: Tensor) -> Tensor:
    """Replace the samples where ``mask`` holds by ``op(those samples, *their parameters)``."""
    index = mask.nonzero().squeeze(1)
    if index.numel() == 0:
        return x
    if index.numel() == x.shape[0]:
        return op(x, *per_sample)
    params = (p.index_select(0, index) for p in per_sample)
    return x.index_copy_(0, index, op(x.index_select(0, index), *params))


_CPU_CHUNK_ELEMENTS = 1 << 21
"""On the CPU a batch is made in chunks of about this many values per image tensor (8 MB of
float32), so intermediates stay in cache and below the allocator's mmap threshold."""


class MultiView:
    """Makes several random views of a batch, each from its :class:`ViewSpec`.

    Views come out in spec order, ``counts[i]`` views of ``specs[i]``. Without an explicit
    generator, the views draw from the object's own generator, seeded with ``seed`` and created
    on the device of the first batch; :meth:`state_dict` / :meth:`load_state_dict` save and
    restore it so a resumed run makes exactly the views it would have made.

    Example:
        >>> views = MultiView([ViewSpec(size=16, mean=(0.5,), std=(0.5,))], counts=[2])
        >>> [v.shape for v in views(torch.zeros(4, 1, 32, 32, dtype=torch.uint8))][1]
        torch.Size([4, 1, 16, 16])
    """

    def __init__(
        self, specs: Sequence[ViewSpec], counts: Sequence[int] | None = None, seed: int = 0
    ) -> None:
        self.specs = tuple(specs)
        self.counts = tuple(counts) if counts is not None else (1,) * len(self.specs)
        if not self.specs:
            raise ConfigError("MultiView needs at least one ViewSpec.")
        if len(self.counts) != len(self.specs) or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.counts
        ):
            raise ConfigError(
                f"MultiView counts {self.counts!r} is invalid: expected one integer >= 1 "
                f"per spec ({len(self.specs)} specs)."
            )
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._saved: dict[str, Any] | None = None  # generator state loaded but not yet applied

    @property
    def num_views(self) -> int:
        """Total number of views per call."""
        return sum(self.counts)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """The ``num_views`` views of ``images`` (uint8 or float in [0, 1], ``(B, C, H, W)``).

        Every view's parameters are drawn first (view by view, in spec order), then the views are
        rendered; on the CPU chunk by chunk of the batch (each chunk converted to float once for
        all views), elsewhere in one go.
        """
        for spec in self.specs:
            _check_normalization(spec)
        if images.dim() != 4:
            raise DataError(f"MultiView expects an image batch (B, C, H, W), got shape {tuple(images.shape)}.")
        g = generator if generator is not None else self._own_generator(images.device)
        b, c, height, width = images.shape
        specs = [spec for spec, n in zip(self.specs, self.counts) for _ in range(n)]
        params = [sample_view(spec, b, height, width, g, images.device) for spec in specs]
        outs = [torch.empty(b, c, s.size, s.size, device=images.device) for s in specs]
        if images.device.type == "cpu":
            largest = c * max(height * width, max(s.size for s in specs) ** 2)
            chunk = max(1, _CPU_CHUNK_ELEMENTS // largest)
        else:
            chunk = max(b, 1)
        for start in range(0, b, chunk):
            rows = slice(start, start + chunk)
            x = AF.to_float(images[rows])
            for spec, p, out in zip(specs, params, outs):
                render_view(x, spec, p[rows], out=out[rows])
        return outs

    def _own_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._saved is not None:
                if self._saved["device_type"] != generator.device.type:
                    raise ValueError(
                        f"The saved view generator ran on {self._saved['device_type']!r} but the "
                        f"images are on {device.type!r}; resume on the same kind of device."
                    )
                generator.set_state(self._saved["generator"])
                self._saved = None
            self._generator = generator
        return self._generator

    def state_dict(self) -> dict[str, Any]:
        """The seed and the own generator's device type and state (both None before the first call)."""
        if self._generator is None:
            return {"seed": self.seed, **(self._saved or {"device_type": None, "generator": None})}
        g = self._generator
        return {"seed": self.seed, "device_type": g.device.type, "generator": g.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; it takes effect on the next call."""
        self.seed = state["seed"]
        self._generator = None
        self._saved = None
        if state["generator"] is not None:
            self._saved = {"device_type": state["device_type"], "generator": state["generator"]}

    def with_normalization(self, mean: Sequence[float], std: Sequence[float]) -> MultiView:
        """A copy whose specs get ``mean`` / ``std`` where theirs are None.

        Example:
            >>> mv = MultiView([ViewSpec(size=8)]).with_normalization((0.5,), (0.2,))
            >>> mv.specs[0].std
            (0.2,)
        """
        specs = [
            replace(
                spec,
                mean=tuple(mean) if spec.mean is None else spec.mean,
                std=tuple(std) if spec.std is None else spec.std,
            )
            for spec in self.specs
        ]
        return MultiView(specs, self.counts, self.seed)

    def __repr__(self) -> str:
        return f"MultiView(specs={list(self.specs)!r}, counts={list(self.counts)!r}, seed={self.seed})"


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
