"""The attributes every selfsup data set exposes, as a typing protocol.

Item ``i`` of a data set is ``(image, label, index)``: a uint8 tensor (C, H, W), an int label
(-1 when unknown) and ``index == i`` (methods with memory banks need it). Augmentation happens
later, batched on the device, so data sets only decode.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

Sample = tuple[Tensor, int, int]
"""One item: (uint8 image (C, H, W), label or -1, index)."""


@runtime_checkable
class ImageDataset(Protocol):
    """What training and evaluation code may rely on, whatever the source of the images.

    Example:
        >>> from selfsup.data import get
        >>> isinstance(get("digits"), ImageDataset)
        True
    """

    name: str
    channels: int
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int] | None
    labels: Tensor

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...
