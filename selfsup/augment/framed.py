"""A batch of whole images of different shapes, each fitted into the top-left corner of one canvas size.

Random resized crops are meant to be drawn from the whole image (Szegedy et al. 2015, arXiv
1409.4842; torchvision's ``RandomResizedCrop`` on a decoded photo). A folder's photos have many
shapes, while a batch needs one: the folder reader (``data.folder_crop: full``) fits each image's
longer side to the canvas, keeps its aspect ratio, puts it in the top-left corner and records its
height and width, its *extent*. A view's first op (a crop, ``Op.takes_extents``) then draws each
box inside its own sample's extent, so the padding is never seen.

Example:
    >>> import torch
    >>> from selfsup.augment import MultiView, View, ops
    >>> batch = FramedImages(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([[24, 32], [32, 20]]))
    >>> view = View([ops.RandomResizedCrop(size=16)], mean=(0.5,) * 3, std=(0.2,) * 3)
    >>> MultiView([view])(batch)[0].shape
    torch.Size([2, 3, 16, 16])
"""
from __future__ import annotations

import torch
from torch import Tensor

from selfsup.errors import DataError


class FramedImages:
    """``pixels`` ``(B, C, S, S)`` with each sample's image in its top-left ``extents[i] = (height, width)``.

    A plain class (not a tuple or a dataclass) with ``to`` and ``pin_memory``, so the DataLoader
    pins it and Lightning moves it to the training device as one object. Rows are selected with
    ``batch[rows]`` (micro-batches, chunks).

    Args:
        pixels: uint8 (or float) canvases ``(B, C, S, S)``; outside each extent the values are unused.
        extents: int64 ``(B, 2)``: each image's height and width, between 1 and the canvas side.
        check: check the shapes and the extents' range (reading the extents, a device sync on a GPU);
            rows, moves and pinned copies of a checked batch skip it.
    """

    def __init__(self, pixels: Tensor, extents: Tensor, *, check: bool = True) -> None:
        if check:
            self._check(pixels, extents)
        self.pixels = pixels
        self.extents = extents.long()

    @staticmethod
    def _check(pixels: Tensor, extents: Tensor) -> None:
        if pixels.dim() != 4 or pixels.shape[2] != pixels.shape[3]:
            raise DataError(f"FramedImages expects square canvases (B, C, S, S), got shape {tuple(pixels.shape)}.")
        if extents.shape != (pixels.shape[0], 2):
            raise DataError(
                f"FramedImages expects one (height, width) extent per image, shape ({pixels.shape[0]}, 2); "
                f"got {tuple(extents.shape)}."
            )
        extents = extents.long()
        if len(extents) and (extents.min() < 1 or (extents[:, 0] > pixels.shape[2]).any()
                             or (extents[:, 1] > pixels.shape[3]).any()):
            raise DataError(
                f"FramedImages extents must lie in 1..{pixels.shape[2]} x 1..{pixels.shape[3]} (the canvas); "
                f"got heights {extents[:, 0].tolist()} and widths {extents[:, 1].tolist()}."
            )

    @property
    def shape(self) -> torch.Size:
        """The canvases' shape ``(B, C, S, S)``."""
        return self.pixels.shape

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def dim(self) -> int:
        return self.pixels.dim()

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, rows: slice | Tensor) -> FramedImages:
        return FramedImages(self.pixels[rows], self.extents[rows], check=False)

    def to(self, device: str | torch.device, non_blocking: bool = False) -> FramedImages:
        """Both tensors on ``device`` (what Lightning's batch transfer calls)."""
        return FramedImages(self.pixels.to(device, non_blocking=non_blocking),
                            self.extents.to(device, non_blocking=non_blocking), check=False)

    def pin_memory(self) -> FramedImages:
        """Page-locked copies (called by the DataLoader with ``pin_memory=True``)."""
        return FramedImages(self.pixels.pin_memory(), self.extents.pin_memory(), check=False)

    def __repr__(self) -> str:
        return f"FramedImages(pixels={tuple(self.pixels.shape)}, {self.pixels.dtype}, extents={tuple(self.extents.shape)})"
