"""A folder of image files, labelled by sub-folder or unlabelled, decoded to fixed-size uint8 tensors."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.data.protocol import Sample
from selfsup.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.5,)
GRAY_STD = (0.5,)
BACKGROUND = (255, 255, 255)  # transparent pixels are composited over white


class ImageFolder(Dataset[Sample]):
    """Image files under ``root``, each decoded, resized and center-cropped to ``image_size`` squared.

    Labelling rule: the folder is *labelled* if and only if ``root`` holds no image file directly
    and at least one of its sub-folders holds images (at any depth). Then each such top-level
    sub-folder is a class (classes sorted by name) and its images are all files below it. Otherwise
    every image below ``root`` (at any depth) is used, unlabelled: label -1, ``num_classes`` 0.
    Hidden files and folders (names starting with ".") are ignored; extensions match case-insensitively.

    Decoding: PIL, EXIF orientation applied, transparency composited over white, converted to RGB
    (``channels=3``) or L (``channels=1``), the shorter side resized to ``image_size`` (bilinear,
    antialiased) and the center square kept, giving a uint8 tensor (channels, image_size, image_size).

    Args:
        root: the folder.
        image_size: side of the square output images, in pixels.
        channels: 3 (RGB) or 1 (grayscale).
        skip_bad_images: decode every image once now and leave out (with a logged warning) those
            that fail, listing them in ``skipped``; otherwise an unreadable image raises
            :class:`~selfsup.errors.DataError` when it is loaded.
        extensions: file name endings (with the dot) counted as images.

    Example:
        >>> ds = ImageFolder("photos/", image_size=64)  # doctest: +SKIP
        >>> ds[0][0].shape, ds.classes  # doctest: +SKIP
        (torch.Size([3, 64, 64]), ['cats', 'dogs'])
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        *,
        channels: int = 3,
        skip_bad_images: bool = False,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"image_size must be a positive int (pixels), got {image_size!r}.")
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
        self.root = Path(root).expanduser()
        self.extensions = tuple(sorted({e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}))
        self.name = "folder"
        self.channels = channels
        self.image_size: tuple[int, int] | None = (image_size, image_size)
        self.mean = IMAGENET_MEAN if channels == 3 else GRAY_MEAN
        self.std = IMAGENET_STD if channels == 3 else GRAY_STD

        self.classes, samples = _scan(self.root, self.extensions)
        self.num_classes = len(self.classes)
        self.skipped: list[tuple[str, str]] = []
        if skip_bad_images:
            samples = self._drop_unreadable(samples)
        self.samples: list[tuple[str, int]] = samples
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        n = len(self.samples)
        index = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= index < n:
            raise IndexError(f"index {index} is out of range for a data set of {n} images")
        path, label = self.samples[index]
        try:
            image = load_image(path, self.image_size[0], self.channels)  # type: ignore[index]
        except Exception as exc:  # PIL raises many exception types for damaged files
            raise DataError(
                f"Cannot read image {path}: {_reason(exc)}. Fix or remove the file, or pass --skip-bad-images "
                "(config data.skip_bad_images=true) to check every image at start and leave out unreadable ones."
            ) from exc
        return image, label, index

    def __repr__(self) -> str:
        return (
            f"ImageFolder(root={str(self.root)!r}, size={len(self)}, image_size={self.image_size}, "
            f"channels={self.channels}, num_classes={self.num_classes}, skipped={len(self.skipped)})"
        )

    def _drop_unreadable(self, samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
        kept = []
        for path, label in samples:
            try:
                load_image(path, self.image_size[0], self.channels)  # type: ignore[index]
            except Exception as exc:  # see __getitem__
                self.skipped.append((path, _reason(exc)))
            else:
                kept.append((path, label))
        if self.skipped:
            shown = "; ".join(f"{p} ({r})" for p, r in self.skipped[:5])
            more = f"; and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            logger.warning(
                "Skipped %d of %d images under %s that could not be read: %s%s",
                len(self.skipped), len(samples), self.root, shown, more,
            )  # fmt: skip
        if not kept:
            raise DataError(
                f"None of the {len(samples)} images under {self.root} could be read (first: {shown}). "
                "Check that the files are images and not damaged."
            )
        return kept


def load_image(path: str | Path, size: int, channels: int) -> Tensor:
    """Decode an image file to a uint8 tensor (channels, size, size): shorter side resized, center-cropped.

    Args:
        path: the image file.
        size: side of the output square.
        channels: 3 for RGB, 1 for grayscale.

    Example:
        >>> load_image("cat.jpg", 32, 3).shape  # doctest: +SKIP
        torch.Size([3, 32, 32])
    """
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft(mode, (size, size))  # let libjpeg decode at a reduced scale >= size
        img = ImageOps.exif_transpose(img)
        img = _flatten(img, mode)
    w, h = img.size
    if (w, h) != (size, size):
        side = min(w, h)
        left, top = (w - side) / 2.0, (h - side) / 2.0
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    array = np.array(img, dtype=np.uint8)
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if array.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _flatten(img: Image.Image, mode: str) -> Image.Image:
    """``img`` in ``mode`` ("RGB" or "L"), with any transparency composited over :data:`BACKGROUND`."""
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        img = Image.alpha_composite(background, rgba)
    elif img.mode.startswith("I"):  # 16/32-bit grey: map a 16-bit range to 8 bits instead of clipping
        values = np.array(img.convert("I"), dtype=np.int64)
        if img.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values >> 8
        img = Image.fromarray(values.clip(0, 255).astype(np.uint8))
    return img.convert(mode) if img.mode != mode else img.copy()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


def _is_image(name: str, extensions: tuple[str, ...]) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


def _images_below(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """Image files at any depth below ``folder``, sorted, skipping hidden files and folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames if _is_image(f, extensions)]
    return sorted(found)


def _scan(root: Path, extensions: tuple[str, ...]) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes (empty when unlabelled) and (path, label) samples under ``root``; see :class:`ImageFolder`."""
    if not root.exists():
        raise DataError(f"The image folder {root} does not exist. Set data.root to a folder of images.")
    if not root.is_dir():
        raise DataError(
            f"The image folder {root} is a file, not a folder. Set data.root to a folder that holds images "
            "(directly, or in one sub-folder per class)."
        )
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    direct = [e for e in entries if e.is_file() and _is_image(e.name, extensions)]
    subdirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    per_class = {e.name: _images_below(Path(e.path), extensions) for e in subdirs} if not direct else {}
    per_class = {name: files for name, files in per_class.items() if files}
    if per_class:
        classes = sorted(per_class)
        samples = [(path, label) for label, name in enumerate(classes) for path in per_class[name]]
        return classes, samples
    samples = [(path, -1) for path in _images_below(root, extensions)]
    if not samples:
        raise DataError(
            f"The image folder {root} holds no images: found no files ending in {', '.join(extensions)} "
            "(any case) in it or its sub-folders. Set data.root to a folder of images."
        )
    return [], samples
