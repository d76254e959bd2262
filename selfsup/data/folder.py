"""A folder of image files, labelled by sub-folder or unlabelled, decoded to fixed-size uint8 tensors.

Every bad input ends in one of two ways: a :class:`~selfsup.errors.DataError` whose one-paragraph
message names the file and what is wrong with it, or (with ``skip_bad_images=True``) an entry in
:attr:`ImageFolder.skipped` that is logged and reported. Nothing is dropped silently.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.data.decoding import (center_square_resize, decode_jpeg_bytes, fit_in_canvas, fitted_size,
                                   torchvision_decoding_available)
from selfsup.data.protocol import Sample
from selfsup.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN = (0.5,)
GRAY_STD = (0.5,)
BACKGROUND = (255, 255, 255)  # transparent pixels are composited over white
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default decompression-bomb limit (Image.MAX_IMAGE_PIXELS)
DECODERS = ("auto", "torchvision", "pil")
SKIP_HINT = (
    "pass --skip-bad-images (config data.skip_bad_images=true) to check every image at start and leave out "
    "unreadable ones"
)


class ImageFolder(Dataset[Sample]):
    """Image files under ``root``, each decoded, resized and center-cropped to ``image_size`` squared.

    Labelling rule: the folder is *labelled* if and only if ``root`` holds no image file directly
    and at least one of its sub-folders holds images (at any depth). Then each such top-level
    sub-folder is a class (classes sorted by name) and its images are all files below it. Otherwise
    every image below ``root`` (at any depth) is used, unlabelled: label -1, ``num_classes`` 0.
    Hidden files and folders (names starting with ".") are ignored; extensions match case-insensitively.

    Left out, with a logged warning and an entry in ``skipped`` (never an error): a class folder
    (labelled layout) that holds no image files, which would otherwise be an empty class; a
    sub-folder reached a second time through a symbolic link (a link loop, or two links to the same
    folder), which is not followed again; a sub-folder that cannot be listed.

    Decoding (see :func:`load_image`): EXIF orientation applied, transparency composited over
    white, 16-bit images scaled to 8 bits, converted to RGB (``channels=3``) or grey (``channels=1``),
    the shorter side resized to ``image_size`` (bilinear, antialiased) and the center square kept,
    giving a uint8 tensor (channels, image_size, image_size). An image whose header claims more than
    ``max_pixels`` pixels is refused without being decoded. PIL reads every header; plain 8-bit
    RGB / grey JPEGs may be decoded by torchvision (``decoder``, see :func:`load_image`), everything
    else, and every file torchvision fails on, by PIL.

    Args:
        root: the folder.
        image_size: side of the square output images, in pixels.
        channels: 3 (RGB) or 1 (grayscale).
        skip_bad_images: decode every image once now and leave out (with a logged warning) those
            that fail, listing them in ``skipped``; otherwise a bad image raises
            :class:`~selfsup.errors.DataError` naming the file when it is loaded.
        extensions: file name endings (with the dot) counted as images.
        max_pixels: largest width x height accepted (None: only PIL's own limit applies).
        decoder: ``"auto"``, ``"torchvision"`` or ``"pil"``: who decodes plain JPEGs (see
            :func:`load_image`; the pixels differ by a few grey levels between them).

    Attributes:
        skipped: ``(path, reason)`` for every image and folder left out, in the order found.

    Example:
        >>> import os, tempfile; from PIL import Image
        >>> photos = tempfile.mkdtemp(); os.mkdir(photos + "/cats"); os.mkdir(photos + "/dogs")
        >>> for name in ("cats/a.jpg", "cats/b.jpg", "dogs/c.png"): Image.new("RGB", (80, 60)).save(f"{photos}/{name}")
        >>> ds = ImageFolder(photos, image_size=64)
        >>> ds[0][0].shape, ds.classes
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
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        decoder: str = "auto",
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ConfigError(f"image_size must be a positive int (pixels), got {image_size!r}.")
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
        bad_limit = isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1
        if max_pixels is not None and bad_limit:
            raise ConfigError(f"max_pixels must be a positive int (width x height) or None, got {max_pixels!r}.")
        self.decoder = resolve_decoder(decoder)
        self.root = Path(root).expanduser()
        self.extensions = tuple(sorted({e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}))
        self.name = "folder"
        self.channels = channels
        self.max_pixels = max_pixels
        self.image_size: tuple[int, int] | None = (image_size, image_size)
        self.mean = IMAGENET_MEAN if channels == 3 else GRAY_MEAN
        self.std = IMAGENET_STD if channels == 3 else GRAY_STD

        self.skipped: list[tuple[str, str]] = []
        self.classes, samples = _scan(self.root, self.extensions, self.skipped)
        self.num_classes = len(self.classes)
        if self.skipped:
            logger.warning("Left out %d folder(s) under %s: %s", len(self.skipped), self.root, _summary(self.skipped))
        self.samples: list[tuple[str, int]] = samples
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        if skip_bad_images:
            self.leave_out(self._unreadable())

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        n = len(self.samples)
        index = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= index < n:
            raise IndexError(f"index {index} is out of range for a data set of {n} images")
        path, label = self.samples[index]
        image = load_image(path, self.image_size[0], self.channels, max_pixels=self.max_pixels,  # type: ignore[index]
                           decoder=self.decoder)
        return image, label, index

    def __repr__(self) -> str:
        return (
            f"ImageFolder(root={str(self.root)!r}, size={len(self)}, image_size={self.image_size}, "
            f"channels={self.channels}, num_classes={self.num_classes}, skipped={len(self.skipped)})"
        )

    def _unreadable(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every sample that cannot be decoded (decodes them all once)."""
        bad = []
        for path, _ in self.samples:
            try:
                _decode(path, self.image_size[0], self.channels, self.max_pixels, self.decoder)  # type: ignore[index]
            except _BadImage as exc:
                bad.append((path, exc.reason))
        return bad

    def leave_out(self, bad: list[tuple[str, str]]) -> None:
        """Remove the unreadable images ``bad`` (``(path, reason)``, found by decoding) from the samples.

        They are appended to :attr:`skipped` and logged; a class left without images stays in the
        class list (with a warning) so labels match other folders. What ``skip_bad_images=True``
        does after decoding every image; the decoded cache calls it with what its build found.

        Raises:
            DataError: no image would be left.

        Example:
            >>> import os, tempfile; from PIL import Image
            >>> photos = tempfile.mkdtemp(); os.mkdir(photos + "/cats"); os.mkdir(photos + "/dogs")
            >>> for name in ("cats/a.jpg", "cats/b.jpg", "dogs/c.png"): Image.new("RGB", (80, 60)).save(f"{photos}/{name}")
            >>> ds = ImageFolder(photos, image_size=64)
            >>> ds.leave_out([(ds.samples[0][0], "its image data is damaged")])
            >>> len(ds), [reason for _, reason in ds.skipped]
            (2, ['its image data is damaged'])
        """
        gone = {path for path, _ in bad}
        kept = [(path, label) for path, label in self.samples if path not in gone]
        self.skipped += bad
        if bad:
            logger.warning(
                "Skipped %d of %d images under %s that could not be read: %s",
                len(bad), len(self.samples), self.root, _summary(bad),
            )  # fmt: skip
        if not kept:
            raise DataError(
                f"None of the {len(self.samples)} images under {self.root} could be read (first: {_summary(bad, 1)}). "
                "Check that the files are images and not damaged."
            )
        emptied = sorted(set(range(self.num_classes)) - {label for _, label in kept})
        if emptied:
            logger.warning(
                "Class(es) %s under %s have no readable images left; they stay in the class list so that labels "
                "match other folders with the same classes.", ", ".join(self.classes[i] for i in emptied), self.root,
            )  # fmt: skip
        self.samples = kept
        self.labels = torch.tensor([label for _, label in kept], dtype=torch.long)


def resolve_decoder(decoder: str) -> str:
    """Check a ``decoder`` option; ``"auto"`` becomes ``"pil"`` where torchvision's decoder does not load.

    Example:
        >>> resolve_decoder("pil")
        'pil'
    """
    if decoder not in DECODERS:
        raise ConfigError(f"decoder (config data.decoder) must be one of {', '.join(DECODERS)}; got {decoder!r}.")
    if decoder == "pil" or torchvision_decoding_available():
        return decoder
    if decoder == "torchvision":
        raise ConfigError(
            "decoder='torchvision' (config data.decoder): this torchvision has no image decoders (they are "
            "deprecated since torchvision 0.29 and may be missing). Use data.decoder=pil or auto."
        )
    return "pil"


def load_image(
    path: str | Path, size: int, channels: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, decoder: str = "auto"
) -> Tensor:
    """Decode an image file to a uint8 tensor (channels, size, size): shorter side resized, center-cropped.

    Modes: transparency (RGBA, LA, PA, palette or colour-key transparency) is composited over white;
    CMYK is converted by PIL (Adobe-inverted JPEGs included); 16-bit grey (``I;16``, and ``I``
    from PNG or with values up to 65535) is scaled to 8 bits by ``round(v / 257)``; 32-bit ``I``
    with larger values is scaled from its full range 0..2**31-1; float ``F`` is taken as 0..1 when
    its maximum is at most 1, else clipped to 0..255. EXIF orientation is applied (damaged EXIF is
    ignored). Truncated files are refused even when ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is set
    (checked by the end markers of JPEG and PNG files).

    PIL reads the header (format, mode, size) in every case. With ``decoder="torchvision"`` an
    8-bit RGB or grey JPEG is then decoded by torchvision (EXIF orientation applied) and resized by
    :func:`~selfsup.data.decoding.center_square_resize` (integer crop offsets; PIL decodes JPEGs at
    a reduced DCT scale and crops at half pixels, so the two differ by a few grey levels).
    ``"auto"`` (the default) does so only for JPEGs whose shorter side is under twice ``size``;
    larger ones are faster through PIL, whose libjpeg decodes them at 1/2, 1/4 or 1/8 scale
    (torchvision always decodes the full size); ``"pil"`` uses PIL for all. Every other file (PNG
    included: torchvision's PNG decoder crashes on damaged files, see :mod:`selfsup.data.decoding`),
    and any JPEG torchvision fails on, goes through PIL, so errors and their messages do not
    depend on the decoder.

    Args:
        path: the image file.
        size: side of the output square.
        channels: 3 for RGB, 1 for grayscale.
        max_pixels: refuse, before decoding, an image whose header claims more than this many
            pixels (None: only PIL's decompression-bomb limit applies).
        decoder: ``"auto"``, ``"torchvision"`` or ``"pil"`` (see above).

    Raises:
        DataError: the file is missing, empty, unreadable, not an image, damaged, truncated or
            too large; the one-paragraph message names the file and the reason.

    Example:
        >>> import tempfile; from PIL import Image
        >>> path = tempfile.mkdtemp() + "/cat.jpg"; Image.new("RGB", (80, 60), "orange").save(path)
        >>> load_image(path, 32, 3).shape
        torch.Size([3, 32, 32])
    """
    try:
        return _decode(path, size, channels, max_pixels, resolve_decoder(decoder))
    except _BadImage as exc:
        raise DataError(_message(path, exc)) from exc


Framed = tuple[Tensor, tuple[int, int]]
"""A whole image in the top-left corner of a square canvas, and its ``(height, width)`` there."""


def load_whole_image(
    path: str | Path, size: int, channels: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, decoder: str = "auto"
) -> Framed:
    """Decode an image file whole: its longer side resized to ``size`` (aspect ratio kept), in the
    top-left corner of a zero uint8 canvas (channels, size, size), and its ``(height, width)`` there.

    What ``data.folder_crop: full`` trains on, so random resized crops are drawn from the whole
    image (:class:`~selfsup.augment.FramedImages`). Modes, checks, errors and decoders as
    :func:`load_image`; JPEGs at least twice ``size`` on their longer side are decoded by PIL at a
    reduced DCT scale (``decoder="auto"``).

    Example:
        >>> import tempfile; from PIL import Image
        >>> path = tempfile.mkdtemp() + "/cat.jpg"; Image.new("RGB", (80, 60), "orange").save(path)
        >>> canvas, extent = load_whole_image(path, 32, 3)
        >>> canvas.shape, extent
        (torch.Size([3, 32, 32]), (24, 32))
    """
    try:
        return _decode(path, size, channels, max_pixels, resolve_decoder(decoder), fit="full")
    except _BadImage as exc:
        raise DataError(_message(path, exc)) from exc


class _BadImage(Exception):
    """Why one image cannot be used; turned into a DataError or a skip, never seen by users."""

    def __init__(self, reason: str, *, too_large: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def _message(path: str | Path, exc: _BadImage) -> str:
    if exc.too_large:
        return (
            f"Image {path} is too large to load safely: {exc.reason}. It was not decoded. Shrink or remove the "
            f"file, raise the limit (config data.max_pixels), or {SKIP_HINT}."
        )
    return f"Cannot read image {path}: {exc.reason}. Fix or remove the file, or {SKIP_HINT}."


def _decode(
    path: str | Path, size: int, channels: int, max_pixels: int | None, decoder: str = "pil", fit: str = "center"
) -> Tensor | Framed:
    """:func:`load_image` (``fit="full"``: :func:`load_whole_image`), raising :class:`_BadImage` with a short reason."""
    path = os.fspath(path)
    try:
        nbytes = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise _BadImage("the file does not exist (deleted since the folder was scanned, or a broken link)") from exc
    except OSError as exc:
        raise _BadImage(f"cannot access the file ({_reason(exc)})") from exc
    if nbytes == 0:
        raise _BadImage("the file is empty (0 bytes)")
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below; PIL leaves a passed file open
    except PermissionError as exc:
        raise _BadImage(f"permission denied ({_reason(exc)})") from exc
    except OSError as exc:
        raise _BadImage(f"cannot open the file ({_reason(exc)})") from exc
    with fp:
        try:
            return _open_and_decode(fp, size, channels, max_pixels, decoder, fit)
        except _BadImage:
            raise
        except Exception as exc:  # an I/O error while reading, or memory PIL could not get
            raise _BadImage(f"reading it failed ({_reason(exc)})") from exc


def _open_and_decode(
    fp: BinaryIO, size: int, channels: int, max_pixels: int | None, decoder: str = "pil", fit: str = "center"
) -> Tensor | Framed:
    """Identify the image in the open file ``fp``, check its size, decode it; raises :class:`_BadImage`."""
    try:
        img = Image.open(fp)
    except UnidentifiedImageError as exc:
        fp.seek(0)
        raise _BadImage(_unidentified_reason(fp.read(16))) from exc
    except Image.DecompressionBombError as exc:  # PIL checks the header size before we can
        raise _BadImage(_bomb_reason(exc, max_pixels), too_large=True) from exc
    except Exception as exc:  # PIL raises many exception types for damaged headers
        if "truncated" in str(exc).lower():
            raise _BadImage(f"the file is truncated: it ends inside its header ({_reason(exc)})") from exc
        raise _BadImage(f"its header is damaged ({_reason(exc)})") from exc
    with img:
        # "auto": PIL for JPEGs at least twice the output size, which libjpeg then decodes at a
        # reduced DCT scale (img.draft), faster than torchvision's full-size decode
        fitted_side = max(img.size) if fit == "full" else min(img.size)  # the side resized to ``size``
        if decoder == "torchvision" or (decoder == "auto" and fitted_side < 2 * size):
            fast = _torchvision_pixels(img, fp, size, channels, max_pixels, fit)
            if fast is not None:
                return fast
        return _pixels(img, fp, size, channels, max_pixels, fit)


def plain_jpeg(img: Image.Image, max_pixels: int | None) -> bool:
    """Whether the opened (header-only) ``img`` is an 8-bit RGB / grey JPEG within ``max_pixels``:
    the files torchvision decodes to (nearly) the same pixels as PIL.

    Example:
        >>> import tempfile; from PIL import Image
        >>> path = tempfile.mkdtemp() + "/cat.jpg"; Image.new("RGB", (80, 60), "orange").save(path)
        >>> with Image.open(path) as img:
        ...     plain_jpeg(img, DEFAULT_MAX_PIXELS)
        True
    """
    w, h = img.size
    return (
        img.format == "JPEG" and img.mode in ("RGB", "L") and w >= 1 and h >= 1
        and (max_pixels is None or w * h <= max_pixels)
    )  # fmt: skip


def ends_early(kind: str | None, data: bytes) -> bool:
    """Whether JPEG or PNG ``data`` stops before its end marker (a truncated file; other kinds: False).

    Example:
        >>> ends_early("PNG", b"...IDAT...")
        True
    """
    if kind == "JPEG":  # the EOI marker must follow the last start-of-scan
        return data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")
    if kind == "PNG":
        return data.rfind(b"IEND") < data.rfind(b"IDAT")
    return False


def _torchvision_pixels(
    img: Image.Image, fp: BinaryIO, size: int, channels: int, max_pixels: int | None, fit: str = "center"
) -> Tensor | Framed | None:
    """The tensor of a plain JPEG decoded by torchvision, or None to leave the file to PIL (another
    format or mode, a truncated file, or any torchvision failure: PIL then decodes it or names what
    is wrong)."""
    if not plain_jpeg(img, max_pixels):
        return None
    fp.seek(0)
    data = fp.read()
    if ends_early("JPEG", data):
        return None
    try:
        image = decode_jpeg_bytes(torch.frombuffer(bytearray(data), dtype=torch.uint8), channels)
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != channels:
            return None
        return fit_in_canvas(image, size) if fit == "full" else center_square_resize(image, size)
    except Exception:  # noqa: BLE001 - PIL gives the reason
        return None


_SIGNATURES = (
    (b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"), (b"RIFF", "RIFF/WebP"),
)  # fmt: skip


def _unidentified_reason(head: bytes) -> str:
    """The reason for a file PIL cannot identify, from its first bytes."""
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return f"it starts like a {name} file but PIL cannot read its header (damaged or unsupported variant)"
    return f"it is not an image in a format PIL can read (it starts with {head!r})"


def _bomb_reason(exc: Image.DecompressionBombError, max_pixels: int | None) -> str:
    """The reason for an image PIL refused at open as a possible decompression bomb."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found and max_pixels is not None and int(found.group(1)) > max_pixels:
        return f"its header claims {found.group(1)} pixels, above the limit of {max_pixels} pixels"
    return f"PIL refused it as a possible decompression bomb ({_reason(exc)}; the limit is PIL.Image.MAX_IMAGE_PIXELS)"


def _pixels(
    img: Image.Image, fp: BinaryIO, size: int, channels: int, max_pixels: int | None, fit: str = "center"
) -> Tensor | Framed:
    """The tensor of the opened image ``img`` (read from ``fp``), refusing it first if it is too large."""
    w, h = img.size
    if w < 1 or h < 1:
        raise _BadImage(f"it has no pixels ({w} x {h})")
    if max_pixels is not None and w * h > max_pixels:
        raise _BadImage(f"it is {w} x {h} = {w * h} pixels, above the limit of {max_pixels} pixels", too_large=True)
    mode = "RGB" if channels == 3 else "L"
    try:
        if img.format == "JPEG":  # let libjpeg decode at a reduced scale, each side >= its resized size
            img.draft(mode, (size, size) if fit == "center" else fitted_size(h, w, size)[::-1])
        img.load()
    except Exception as exc:  # PIL raises many exception types for damaged data
        if "truncated" in str(exc).lower():
            raise _BadImage(f"the file is truncated: its image data ends too early ({_reason(exc)})") from exc
        raise _BadImage(f"its image data is damaged ({_reason(exc)})") from exc
    if ImageFile.LOAD_TRUNCATED_IMAGES and _lacks_end(img, fp):  # PIL padded a cut-off file silently
        raise _BadImage("the file is truncated: its image data ends too early (no end marker)")
    deep_png = img.format == "PNG"  # a PNG in mode I holds 16-bit values; the format is lost on copying
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # damaged EXIF: the pixels are fine, the orientation unknown
        logger.debug("Ignoring unreadable EXIF orientation of %s", getattr(fp, "name", "?"))
    try:
        img = _to_mode(img, mode, sixteen_bit=deep_png)
        w, h = img.size
        if fit == "full":
            return _fit_pil(img, size)
        if (w, h) != (size, size):
            side = min(w, h)
            left, top = (w - side) / 2.0, (h - side) / 2.0
            img = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
        array = np.array(img, dtype=np.uint8)
    except Exception as exc:  # e.g. a colour mode PIL cannot convert
        raise _BadImage(f"cannot convert it from PIL mode {img.mode!r} ({_reason(exc)})") from exc
    if array.shape[:2] != (size, size):
        raise _BadImage(f"decoding gave an array of shape {array.shape}")
    tensor = torch.from_numpy(array)
    return tensor.unsqueeze(0) if array.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _fit_pil(img: Image.Image, size: int) -> Framed:
    """The whole PIL image, longer side resized to ``size`` (bilinear), in a zero canvas's top-left corner."""
    w, h = img.size
    nh, nw = fitted_size(h, w, size)
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    array = np.array(img, dtype=np.uint8)
    image = torch.from_numpy(array)
    image = image.unsqueeze(0) if array.ndim == 2 else image.permute(2, 0, 1)
    canvas = torch.zeros(image.shape[0], size, size, dtype=torch.uint8)
    canvas[:, :nh, :nw] = image
    return canvas, (nh, nw)


def _lacks_end(img: Image.Image, fp: BinaryIO) -> bool:
    """Whether a JPEG or PNG file stops before its end marker (other formats: False)."""
    if img.format not in ("JPEG", "PNG"):
        return False
    fp.seek(0)
    data = fp.read()
    return (img.format == "JPEG" and bool(getattr(img, "_ended", False))) or ends_early(img.format, data)


def _to_mode(img: Image.Image, mode: str, *, sixteen_bit: bool = False) -> Image.Image:
    """``img`` in ``mode`` ("RGB" or "L"): deep grey scaled to 8 bits, transparency composited over white.

    ``sixteen_bit``: a mode ``I`` image holds 16-bit values (as 16-bit PNGs do in older Pillow).
    """
    if img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(_to_uint8(img, sixteen_bit))
    elif img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode) if img.mode != mode else img.copy()


def _to_uint8(img: Image.Image, sixteen_bit: bool) -> np.ndarray:
    """8-bit grey values of an ``I;16*``, ``I`` or ``F`` image (rules in :func:`load_image`)."""
    if img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if values.max(initial=0.0) <= 1.0:
            values = values * 255.0
        return np.rint(values.clip(0, 255)).astype(np.uint8)
    values = np.asarray(img.convert("I") if img.mode != "I" else img, dtype=np.int64).clip(0, None)
    top = int(values.max(initial=0))
    if img.mode.startswith("I;16") or (sixteen_bit and top <= 65535) or 255 < top <= 65535:
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    if top > 65535:
        return ((values * 255 + (2**31 - 1) // 2) // (2**31 - 1)).clip(0, 255).astype(np.uint8)
    return values.astype(np.uint8)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())  # one line
    return text if len(text) < 200 else text[:197] + "..."


def _summary(entries: list[tuple[str, str]], limit: int = 5) -> str:
    shown = "; ".join(f"{p} ({r})" for p, r in entries[:limit])
    return shown + (f"; and {len(entries) - limit} more" if len(entries) > limit else "")


def _is_image(name: str, extensions: tuple[str, ...]) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


def _folder_key(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _images_below(
    folder: str | Path, extensions: tuple[str, ...], visited: set[tuple[int, int]], problems: list[tuple[str, str]]
) -> list[str]:
    """Image files at any depth below ``folder``, sorted, skipping hidden files and folders.

    Symbolic links to folders are followed, but a folder already in ``visited`` (a link loop, or a
    second link to the same folder) is not entered again; it and any folder that cannot be listed
    are recorded in ``problems`` as ``(path, reason)``.
    """

    def unlisted(exc: OSError) -> None:
        where = str(exc.filename or folder)
        problems.append((where, f"cannot list this folder ({_reason(exc)}); its images are left out"))

    found = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlisted, followlinks=True):
        keep = []
        for name in dirnames:
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            try:
                key = _folder_key(full)
            except OSError as exc:
                problems.append((full, f"cannot open this folder ({_reason(exc)}); its images are left out"))
                continue
            if key in visited:
                target = f" to {os.path.realpath(full)}" if os.path.islink(full) else ""
                reason = f"a link{target}, a folder already scanned (a loop or a duplicate); not followed"
                problems.append((full, reason))
                continue
            visited.add(key)
            keep.append(name)
        dirnames[:] = keep
        found += [os.path.join(dirpath, f) for f in filenames if _is_image(f, extensions)]
    return sorted(found)


def _scan(
    root: Path, extensions: tuple[str, ...], problems: list[tuple[str, str]]
) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes (empty when unlabelled) and (path, label) samples under ``root``; see :class:`ImageFolder`.

    Folders left out (empty classes, link loops, unlistable folders) are appended to ``problems``.
    """
    if not root.exists():
        raise DataError(f"The image folder {root} does not exist. Set data.root to a folder of images.")
    if not root.is_dir():
        raise DataError(
            f"The image folder {root} is a file, not a folder. Set data.root to a folder that holds images "
            "(directly, or in one sub-folder per class)."
        )
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
        visited = {_folder_key(root)}
    except OSError as exc:
        raise DataError(f"Cannot list the image folder {root}: {_reason(exc)}. Check its permissions.") from exc
    subdirs = [e for e in entries if not e.name.startswith(".") and _entry_is_dir(e)]
    direct = [e for e in entries if _is_image(e.name, extensions) and not _entry_is_dir(e)]
    if not direct:
        per_class: dict[str, list[str]] = {}
        folder_problems: list[tuple[str, str]] = []
        empty: list[tuple[str, str]] = []
        for entry in subdirs:
            try:
                key = _folder_key(entry.path)
            except OSError as exc:
                folder_problems.append((entry.path, f"cannot open this folder ({_reason(exc)}); left out"))
                continue
            if key in visited:
                folder_problems.append((entry.path, "a link to a folder already scanned (a loop); not a class"))
                continue
            visited.add(key)
            files = _images_below(entry.path, extensions, visited, folder_problems)
            if files:
                per_class[entry.name] = files
            else:
                empty.append((entry.path, "this class folder holds no image files; left out of the classes"))
        if per_class:
            problems += folder_problems + empty
            classes = sorted(per_class)
            samples = [(path, label) for label, name in enumerate(classes) for path in per_class[name]]
            return classes, samples
    visited = {_folder_key(root)}
    samples = [(path, -1) for path in _images_below(root, extensions, visited, problems)]
    if not samples:
        left_out = f" Left out: {_summary(problems)}." if problems else ""
        raise DataError(
            f"The image folder {root} holds no images: found no files ending in {', '.join(extensions)} "
            f"(any case) in it or its sub-folders. Set data.root to a folder of images.{left_out}"
        )
    return [], samples


def _entry_is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
