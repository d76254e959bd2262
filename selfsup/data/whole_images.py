"""The training loader's view of a folder that keeps whole images (``data.folder_crop: full``).

Evaluation reads a folder's items: each image's shorter side resized to ``image_size`` and the
centred square kept, as ImageNet evaluation does. Training crops should instead come from the whole
image (Szegedy et al. 2015, arXiv 1409.4842; torchvision's ``RandomResizedCrop`` on a decoded photo),
or a crop of "scale 1.0" is only the centred square and the image's sides are never seen. So the
training loader reads each image whole, its longer side fitted to ``image_size``, in the top-left
corner of an ``image_size`` square canvas, and collates a :class:`~selfsup.augment.FramedImages`
batch whose extents the view's first crop keeps inside (:meth:`selfsup.augment.View.sample`).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.augment.framed import FramedImages
from selfsup.data.cache import CachedFolder
from selfsup.data.folder import ImageFolder, load_whole_image
from selfsup.data.protocol import Sample
from selfsup.errors import ConfigError

WholeSample = tuple[Tensor, Tensor, int, int]
"""``(canvas, extent (height, width) as int64, label, index)``."""


class WholeImageView(Dataset[WholeSample]):
    """Whole images of a folder, a :func:`~selfsup.data.cache_folder` cache of one, or a
    :class:`~selfsup.data.DataSubset` of either; indices as the data set's own.

    A cached folder needs its whole-image entry (``cache_folder(..., fit="full")``) in its ``whole``
    attribute (training sets it up).

    Example:
        >>> import os, tempfile; from PIL import Image; from selfsup.data import ImageFolder
        >>> photos = tempfile.mkdtemp(); os.mkdir(photos + "/cats")
        >>> Image.new("RGB", (80, 60)).save(photos + "/cats/a.jpg"); Image.new("RGB", (30, 90)).save(photos + "/cats/b.png")
        >>> view = WholeImageView(ImageFolder(photos, 32))
        >>> images, labels, indices = view.collate()([view[0], view[1]])
        >>> images.shape, images.extents.tolist()
        (torch.Size([2, 3, 32, 32]), [[24, 32], [32, 11]])
    """

    def __init__(self, dataset: Dataset[Sample]) -> None:
        parent = getattr(dataset, "dataset", None)
        base, self.positions = (dataset, None) if parent is None else (parent, list(dataset.indices))  # type: ignore[attr-defined]
        if isinstance(base, CachedFolder):
            if base.whole is None:
                raise ConfigError(
                    f"The decoded cache in {base.entry} holds centred squares; whole-image training "
                    "(data.folder_crop=full) needs the folder's whole-image cache (cache_folder(..., fit='full')) "
                    "in its `whole` attribute.")
            self.cache: CachedFolder | None = base.whole
            self.folder = None
        elif isinstance(base, ImageFolder):
            self.cache, self.folder = None, base
        else:
            raise ConfigError(
                "data.folder_crop=full applies to image folders (data 'folder'); got "
                f"{type(base).__name__}. Set data.folder_crop=center.")
        self.base = base

    def __len__(self) -> int:
        return len(self.base) if self.positions is None else len(self.positions)

    def __getitem__(self, index: int) -> WholeSample:
        position = index if self.positions is None else self.positions[index]
        if self.cache is not None:
            canvas, extent = self.cache.framed(position)
            label = self.cache.samples[position][1]
        else:
            folder = self.folder
            path, label = folder.samples[position]  # type: ignore[union-attr]
            canvas, extent = load_whole_image(path, folder.image_size[0], folder.channels,  # type: ignore[union-attr,index]
                                              max_pixels=folder.max_pixels, decoder=folder.decoder)  # type: ignore[union-attr]
        return canvas, torch.tensor(extent, dtype=torch.long), label, index

    def __getitems__(self, indices: list[int]) -> list[WholeSample]:
        """Samples for ``indices``; from the cache with one fancy-indexed copy (as :class:`CachedFolder`)."""
        if self.cache is None:
            return [self[i] for i in indices]
        positions = [self.cache.position(i if self.positions is None else self.positions[i]) for i in indices]
        block = self.cache.read_block(positions)
        extents = self.cache.extents[positions]  # type: ignore[index]
        return [(block[k], extents[k], self.cache.samples[p][1], i) for k, (p, i) in enumerate(zip(positions, indices))]

    @staticmethod
    def collate() -> WholeCollate:
        """The matching DataLoader ``collate_fn``."""
        return WholeCollate()


class WholeCollate:
    """``collate_fn`` for :class:`WholeImageView` items: ``(FramedImages, labels, indices)``."""

    def __call__(self, batch: list[WholeSample]) -> tuple[FramedImages, Tensor, Tensor]:
        pixels = torch.stack([canvas for canvas, _, _, _ in batch])
        extents = torch.stack([extent for _, extent, _, _ in batch])
        labels = torch.tensor([label for _, _, label, _ in batch], dtype=torch.long)
        indices = torch.tensor([index for _, _, _, index in batch], dtype=torch.long)
        return FramedImages(pixels, extents), labels, indices
