"""Decoding JPEGs on the training device: DataLoader workers ship file bytes, the engine decodes the batch.

With ``data.decode_on_device`` on, the training loader reads :class:`DeviceDecodeView` items: a plain
upright JPEG (8-bit RGB or grey, EXIF orientation 1, within ``max_pixels``, not truncated) travels
as its file bytes (:class:`EncodedJPEG`); any other file is decoded by the worker as usual, so bad
files still get their named error or skip. :class:`EncodedCollate` makes an :class:`EncodedImages`
batch, which Lightning hands to the module unmoved (it is neither a tensor nor a collection), and
:meth:`EncodedImages.decode` decodes all its JPEGs in one ``torchvision.io.decode_jpeg(list,
device=...)`` call (nvjpeg on CUDA), then crops and resizes each on the device.

Tested on CUDA by ``tests/test_cuda.py`` (run on an NVIDIA H200, 2026-12-04: nvjpeg's pixels equal
libjpeg-turbo's for grey and 4:4:4 JPEGs; for 4:2:0 colour JPEGs the two upsample chroma differently,
up to 62 grey levels apart on colour noise); the CPU suite runs the same code with ``device="cpu"``
(libjpeg-turbo): the byte shipping, the collate of variable-length byte tensors and the
decode-crop-resize into a batch.
"""
from __future__ import annotations

import logging
import os
from typing import NamedTuple

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.data.decoding import center_square_resize, decode_jpegs
from selfsup.data.folder import ImageFolder, ends_early, plain_jpeg
from selfsup.data.protocol import Sample
from selfsup.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_ORIENTATION = 0x0112  # the EXIF tag


class EncodedJPEG(NamedTuple):
    """One JPEG file's bytes (1-D uint8 tensor) and its path (for error messages)."""

    data: Tensor
    path: str


class EncodedImages:
    """A training batch whose images are JPEG bytes (:class:`EncodedJPEG`) or decoded uint8 tensors.

    Deliberately a plain class, not a dataclass or sequence: Lightning's batch transfer moves
    tensors it finds inside collections, and ``decode_jpeg`` wants its input on the CPU.

    Example:
        >>> import io; from PIL import Image
        >>> jpeg = io.BytesIO(); Image.new("RGB", (80, 48), "orange").save(jpeg, "JPEG")  # e.g. a.jpg
        >>> data = torch.frombuffer(bytearray(jpeg.getvalue()), dtype=torch.uint8)  # the file's bytes
        >>> batch = EncodedImages([EncodedJPEG(data, "a.jpg")], 64, 3)
        >>> batch.decode("cpu").shape  # decoded, centre square resized; "cuda": with nvjpeg
        torch.Size([1, 3, 64, 64])
    """

    def __init__(self, items: list[Tensor | EncodedJPEG], size: int, channels: int) -> None:
        self.items, self.size, self.channels = items, size, channels

    def __len__(self) -> int:
        return len(self.items)

    def pin_memory(self) -> EncodedImages:
        """Page-locked copies (called by the DataLoader with ``pin_memory=True``)."""
        pinned = [EncodedJPEG(x.data.pin_memory(), x.path) if isinstance(x, EncodedJPEG) else x.pin_memory()
                  for x in self.items]  # fmt: skip
        return EncodedImages(pinned, self.size, self.channels)

    def decode(self, device: str | torch.device) -> Tensor:
        """The batch as uint8 (N, channels, size, size) on ``device``; JPEGs decoded there in one call.

        Raises:
            DataError: the decoder failed (a file PIL's header check passed but nvjpeg cannot
                decode); the message names the batch's JPEG files.
        """
        device = torch.device(device)
        out = torch.empty((len(self.items), self.channels, self.size, self.size), dtype=torch.uint8, device=device)
        jpegs = [k for k, item in enumerate(self.items) if isinstance(item, EncodedJPEG)]
        if jpegs:
            encoded = [item for item in self.items if isinstance(item, EncodedJPEG)]
            try:
                decoded = decode_jpegs([item.data for item in encoded], self.channels, device)
            except RuntimeError as err:
                names = ", ".join(item.path for item in encoded[:3]) + (" ..." if len(encoded) > 3 else "")
                reason = " ".join(str(err).split())[:300]
                raise DataError(
                    f"Decoding a batch of {len(encoded)} JPEGs on {device} failed ({reason}); files: {names}. Set "
                    "data.decode_on_device=false to decode on the CPU, where a damaged file is named (and left out "
                    "with --skip-bad-images)."
                ) from err
            for k, image in zip(jpegs, decoded):
                out[k] = center_square_resize(image, self.size)
        for k, item in enumerate(self.items):
            if not isinstance(item, EncodedJPEG):
                out[k] = item.to(device, non_blocking=True)
        return out


class EncodedCollate:
    """DataLoader ``collate_fn`` for :class:`DeviceDecodeView` items: ``(images, labels, indices)``.

    ``images`` is a stacked uint8 tensor when every item was decoded by a worker, else an
    :class:`EncodedImages` (byte tensors of different lengths cannot be stacked).

    Example:
        >>> import os, tempfile; from PIL import Image; from selfsup.data import ImageFolder
        >>> photos = tempfile.mkdtemp(); os.mkdir(photos + "/cats"); os.mkdir(photos + "/dogs")
        >>> for name in ("cats/a.jpg", "cats/b.jpg", "dogs/c.png"): Image.new("RGB", (80, 60)).save(f"{photos}/{name}")
        >>> collate = EncodedCollate(64, 3)
        >>> view = DeviceDecodeView(ImageFolder(photos, 64))
        >>> loader = torch.utils.data.DataLoader(view, batch_size=256, collate_fn=collate)
        >>> images, labels, indices = next(iter(loader))
        >>> type(images).__name__, labels  # two JPEG byte strings and a PNG decoded by the worker
        ('EncodedImages', tensor([0, 0, 1]))
    """

    def __init__(self, size: int, channels: int) -> None:
        self.size, self.channels = size, channels

    def __call__(
        self, batch: list[tuple[Tensor | EncodedJPEG, int, int]]
    ) -> tuple[Tensor | EncodedImages, Tensor, Tensor]:
        items = [item for item, _, _ in batch]
        labels = torch.tensor([label for _, label, _ in batch], dtype=torch.long)
        indices = torch.tensor([index for _, _, index in batch], dtype=torch.long)
        if all(isinstance(item, Tensor) for item in items):
            return torch.stack(items), labels, indices  # type: ignore[arg-type]
        return EncodedImages(items, self.size, self.channels), labels, indices


class DeviceDecodeView(Dataset):
    """The training loader's view of a folder (or a :class:`~selfsup.data.DataSubset` of one):
    plain upright JPEGs as :class:`EncodedJPEG` bytes, every other image decoded as usual.

    Example:
        >>> import os, tempfile; from PIL import Image; from selfsup.data import ImageFolder
        >>> photos = tempfile.mkdtemp(); os.mkdir(photos + "/cats"); os.mkdir(photos + "/dogs")
        >>> for name in ("cats/a.jpg", "cats/b.jpg", "dogs/c.png"): Image.new("RGB", (80, 60)).save(f"{photos}/{name}")
        >>> view = DeviceDecodeView(ImageFolder(photos, 64))
        >>> view[0][0]
        EncodedJPEG(data=tensor([255, 216, ...], dtype=torch.uint8), path='.../cats/a.jpg')
        >>> view[2][0].shape  # not a JPEG: decoded here
        torch.Size([3, 64, 64])
    """

    def __init__(self, dataset: Dataset[Sample]) -> None:
        parent = getattr(dataset, "dataset", None)
        if isinstance(dataset, ImageFolder):
            self.folder, self.positions = dataset, None
        elif isinstance(parent, ImageFolder):
            self.folder, self.positions = parent, list(dataset.indices)  # type: ignore[attr-defined]
        else:
            raise ConfigError(
                "data.decode_on_device needs an image folder ('folder' data without data.cache); got "
                f"{type(dataset).__name__}."
            )
        self.size, self.channels = self.folder.image_size[0], self.folder.channels  # type: ignore[index]

    def __len__(self) -> int:
        return len(self.folder) if self.positions is None else len(self.positions)

    def __getitem__(self, index: int) -> tuple[Tensor | EncodedJPEG, int, int]:
        position = index if self.positions is None else self.positions[index]
        path, label = self.folder.samples[position]
        data = read_plain_jpeg(path, self.folder.max_pixels)
        if data is None:
            return self.folder[position][0], label, index
        return EncodedJPEG(data, path), label, index

    def collate(self) -> EncodedCollate:
        """The matching ``collate_fn``."""
        return EncodedCollate(self.size, self.channels)


def read_plain_jpeg(path: str, max_pixels: int | None) -> Tensor | None:
    """The bytes of ``path`` when it is a plain upright JPEG that nvjpeg can take as is, else None.

    Plain: PIL reads its header as an 8-bit RGB or grey JPEG within ``max_pixels``, its EXIF
    orientation is 1 (nvjpeg does not rotate) and it ends with an end-of-image marker. Any problem
    reading it also gives None: the worker then decodes it on the CPU and reports what is wrong.

    Example:
        >>> import os, tempfile; from PIL import Image
        >>> photos = tempfile.mkdtemp(); os.mkdir(photos + "/cats"); os.mkdir(photos + "/dogs")
        >>> for name in ("cats/a.jpg", "cats/b.jpg", "dogs/c.png"): Image.new("RGB", (80, 60)).save(f"{photos}/{name}")
        >>> read_plain_jpeg(photos + "/cats/a.jpg", 89_478_485).dtype
        torch.uint8
        >>> read_plain_jpeg(photos + "/dogs/c.png", 89_478_485) is None
        True
    """
    try:
        with open(path, "rb") as fp:
            with Image.open(fp) as img:
                if not plain_jpeg(img, max_pixels) or img.getexif().get(_ORIENTATION, 1) != 1:
                    return None
            fp.seek(0)
            data = fp.read()
    except Exception:  # noqa: BLE001 - the CPU path names the problem
        return None
    if ends_early("JPEG", data):
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def resolve_decode_on_device(setting: bool | str, *, cuda: bool, folder: bool, cache: bool) -> bool:
    """Whether to decode JPEGs on the training device, for ``data.decode_on_device``.

    ``"auto"``: yes when training on CUDA from an uncached folder. ``True``: yes (checked by the
    config: folder data, no cache); on a CPU-only run this moves decoding from the workers into the
    main process, useful only for tests, and a warning says so. ``False``: no.

    Example:
        >>> resolve_decode_on_device("auto", cuda=False, folder=True, cache=False)
        False
    """
    if setting == "auto":
        return cuda and folder and not cache
    if setting is True and not cuda:
        logger.warning("data.decode_on_device=true without a CUDA device: JPEGs are decoded in the main process "
                       "(pid %d), not in the workers.", os.getpid())
    return setting is True
