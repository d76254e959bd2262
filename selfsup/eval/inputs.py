"""Feed images with another channel count to a backbone (transfer between grey and colour data)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from selfsup.errors import ConfigError

# ITU-R BT.601 luma weights, as in PIL's "L" conversion and torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


def match_channels(images: Tensor, channels: int) -> Tensor:
    """``images`` (B, C, H, W) with ``channels`` channels: grey is repeated to RGB, RGB becomes BT.601 luma.

    Works on uint8 (the result stays uint8, rounded) and float batches; returns the input itself
    when it already has ``channels`` channels.

    Example:
        >>> match_channels(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 3).shape
        torch.Size([2, 3, 8, 8])
    """
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        r, g, b = images.float().unbind(1)
        grey = (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)
        return grey.round().clamp(0, 255).to(images.dtype) if not images.dtype.is_floating_point else grey.to(images.dtype)
    raise ConfigError(f"Cannot convert {have}-channel images to {channels} channels; only 1 <-> 3 is supported.")


def match_stats(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation statistics of images converted by :func:`match_channels` to ``channels`` channels.

    Grey to RGB repeats the grey statistics (exact). RGB to grey: the mean is the luma of the means
    (exact); the standard deviation is the luma of the standard deviations, which is exact when the
    three channels are perfectly correlated and an upper bound otherwise (colour channels of
    natural images are strongly correlated).

    Example:
        >>> match_stats((0.5,), (0.25,), 3)
        ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1 and channels == 3:
        return mean * 3, std * 3
    if len(mean) == 3 and channels == 1:
        grey_mean = sum(w * m for w, m in zip(LUMA, mean))
        grey_std = sum(w * s for w, s in zip(LUMA, std))
        return (grey_mean,), (grey_std if math.isfinite(grey_std) and grey_std > 0 else 1.0,)
    raise ConfigError(f"Cannot convert statistics of {len(mean)} channels to {channels}; only 1 <-> 3 is supported.")


class ChannelAdapter:
    """Wraps a transform (``EvalTransform``, ``MultiView``) so it first converts images to ``channels`` channels.

    Example:
        >>> t = ChannelAdapter(selfsup.augment.EvalTransform(8, (0.5,) * 3, (0.5,) * 3), channels=3)
        >>> t(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, inner: Callable[..., Any], channels: int) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels!r}.")
        self.inner, self.channels = inner, channels

    def __call__(self, images: Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.inner(match_channels(images, self.channels), *args, **kwargs)

    def __repr__(self) -> str:
        return f"ChannelAdapter({self.inner!r}, channels={self.channels})"
