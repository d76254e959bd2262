"""The data set registry: every data set is built by name with one uniform set of options.

``get(name, root=..., split=..., download=..., image_size=..., skip_bad_images=..., channels=...)``
works for every name; options that do not apply to a data set are accepted and ignored when left
at their defaults, and rejected with a clear error when set to a value the data set cannot honour.
"""
from __future__ import annotations

from pathlib import Path

from selfsup._registry import Registry
from selfsup.data import torchvision_sets
from selfsup.data.arrays import ArrayDataset
from selfsup.data.builtin import digits
from selfsup.data.folder import DEFAULT_MAX_PIXELS, ImageFolder, resolve_decoder
from selfsup.data.protocol import ImageDataset
from selfsup.data.shards import read_shards
from selfsup.errors import ConfigError, DataError

DATASETS: Registry[ImageDataset] = Registry("data set")

_FOLDER_SPLITS = ("train", "all")


def get(
    name: str,
    *,
    root: str | Path | None = None,
    split: str = "train",
    download: bool = False,
    image_size: int | None = None,
    skip_bad_images: bool = False,
    channels: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decoder: str = "auto",
) -> ImageDataset:
    """Build the data set registered as ``name``.

    Args:
        name: a name from :func:`names`, e.g. ``"digits"``, ``"cifar10"``, ``"folder"``.
        root: where the files are (a folder of images for ``"folder"``); unused by ``"digits"``.
        split: which split, e.g. ``"train"`` / ``"test"`` (see :func:`describe`).
        download: fetch missing files of a torchvision-format data set into ``root``.
        image_size: decode size of ``"folder"`` images (required there); for fixed-size data sets
            it may only repeat their own size.
        skip_bad_images: for ``"folder"``, leave out unreadable images instead of failing.
        channels: 3 or 1 for ``"folder"`` (default 3); for other data sets it may only repeat
            their own channel count (None = the data set's own).
        max_pixels: for ``"folder"``, images larger than this (width x height) are refused
            without being decoded (None: only PIL's own limit).
        decoder: for ``"folder"``, who decodes plain JPEGs: ``"auto"``, ``"torchvision"`` or
            ``"pil"`` (see :func:`selfsup.data.folder.load_image`).

    Example:
        >>> ds = get("digits", split="test")
        >>> len(ds), ds.channels, ds.num_classes
        (450, 1, 10)
    """
    options = dict(
        root=root, split=split, download=download, image_size=image_size,
        skip_bad_images=skip_bad_images, channels=channels,
    )  # fmt: skip
    if name in ("folder", "shards"):
        options["max_pixels"] = max_pixels
        options["decoder"] = decoder
    elif max_pixels != DEFAULT_MAX_PIXELS:
        raise ConfigError(f"data.max_pixels only applies to 'folder' and 'shards' data; {name!r} has fixed-size images.")
    elif decoder != "auto":
        resolve_decoder(decoder)  # a bad value gets its own message first
        raise ConfigError(f"data.decoder only applies to 'folder' data; {name!r} is read already decoded.")
    return DATASETS.get(name, **options)


def names() -> list[str]:
    """Registered data set names, sorted.

    Example:
        >>> "digits" in names()
        True
    """
    return DATASETS.names()


def describe() -> dict[str, str]:
    """Name -> one-line description, for ``selfsup list``.

    Example:
        >>> describe()["digits"].startswith("scikit-learn")
        True
    """
    return DATASETS.describe()


def _check_fixed(ds: ArrayDataset, image_size: int | None, channels: int | None) -> ArrayDataset:
    """Reject an ``image_size`` or ``channels`` that differs from a fixed-size data set's own."""
    assert ds.image_size is not None
    h, w = ds.image_size
    if image_size is not None and (image_size, image_size) != (h, w):
        raise ConfigError(
            f"Data set {ds.name!r} has {h}x{w} images; data.image_size={image_size} only sets the decode size "
            "of 'folder' data sets. Leave data.image_size unset and set crop sizes in the view recipe."
        )
    if channels is not None and channels != ds.channels:
        raise ConfigError(
            f"Data set {ds.name!r} has {ds.channels}-channel images; data.channels={channels} only applies to "
            "'folder' data sets. Leave data.channels unset (the backbone adapts to the channel count)."
        )
    return ds


def _need_root(name: str, root: str | Path | None) -> str | Path:
    if root is None or str(root).strip() == "":
        raise DataError(
            f"--data {name} needs data.root=PATH: the folder that holds (or, with --download, will hold) "
            f"the {name} files. Without files, try the built-in offline data set: --data digits."
        )
    return root


def _torchvision_entry(name: str, description: str) -> None:
    reader = getattr(torchvision_sets, name)

    @DATASETS.register(name, description)
    def build(
        *,
        root: str | Path | None = None,
        split: str = "train",
        download: bool = False,
        image_size: int | None = None,
        skip_bad_images: bool = False,
        channels: int | None = None,
    ) -> ArrayDataset:
        ds = reader(_need_root(name, root), split=split, download=download)
        return _check_fixed(ds, image_size, channels)


@DATASETS.register("digits", "scikit-learn's bundled 8x8 grey digits, 10 classes, offline; splits train/test/all")
def _digits(
    *,
    root: str | Path | None = None,
    split: str = "train",
    download: bool = False,
    image_size: int | None = None,
    skip_bad_images: bool = False,
    channels: int | None = None,
) -> ArrayDataset:
    return _check_fixed(digits(split), image_size, channels)


_torchvision_entry("cifar10", "CIFAR-10, 32x32 RGB, 10 classes, torchvision format under root; splits train/test")
_torchvision_entry("cifar100", "CIFAR-100, 32x32 RGB, 100 classes, torchvision format under root; splits train/test")
_torchvision_entry(
    "stl10", "STL-10, 96x96 RGB, 10 classes, torchvision format; splits train/test/unlabeled/train+unlabeled"
)
_torchvision_entry("mnist", "MNIST, 28x28 grey digits, 10 classes, torchvision format under root; splits train/test")
_torchvision_entry(
    "fashion_mnist", "Fashion-MNIST, 28x28 grey clothes, 10 classes, torchvision format; splits train/test"
)


@DATASETS.register("folder", "your images under root: one sub-folder per class, or unlabelled; needs image_size")
def _folder(
    *,
    root: str | Path | None = None,
    split: str = "train",
    download: bool = False,
    image_size: int | None = None,
    skip_bad_images: bool = False,
    channels: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decoder: str = "auto",
) -> ImageFolder:
    if root is None or str(root).strip() == "":
        raise DataError("--data folder needs data.root=PATH: the folder that holds your images.")
    if image_size is None:
        raise ConfigError(
            "--data folder needs data.image_size=N: images are resized (shorter side) and center-cropped "
            "to N x N pixels so that they stack into batches."
        )
    if split not in _FOLDER_SPLITS:
        raise ConfigError(
            f"An image folder has no {split!r} split: all images under data.root form one set. Use split "
            "'train', point data.root at a separate folder for evaluation, or split it with split_train_val."
        )
    return ImageFolder(root, image_size, channels=3 if channels is None else channels, skip_bad_images=skip_bad_images,
                       max_pixels=max_pixels, decoder=decoder)


@DATASETS.register("shards", "tar shards written by `selfsup shard` (WebDataset layout), local or fsspec URL; "
                   "splits are its split folders; read into memory here, streamed when training")
def _shards(
    *,
    root: str | Path | None = None,
    split: str = "train",
    download: bool = False,
    image_size: int | None = None,
    skip_bad_images: bool = False,
    channels: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decoder: str = "auto",
) -> ArrayDataset:
    if root is None or str(root).strip() == "":
        raise DataError("--data shards needs data.root=PATH_OR_URL: the folder `selfsup shard` wrote.")
    if download:
        raise ConfigError("data.download does not apply to shards; write them with `selfsup shard`.")
    return read_shards(root, split=split, image_size=image_size, channels=channels, max_pixels=max_pixels,
                       decoder=decoder)
