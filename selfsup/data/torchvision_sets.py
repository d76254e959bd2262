"""Standard data sets in torchvision's on-disk format, read from a local root into memory.

``cifar10``, ``cifar100``, ``stl10``, ``mnist`` and ``fashion_mnist`` look for their files under
``root`` (in torchvision's layout, or with ``root`` pointing straight at the folder that holds the
files), read one whole split into an :class:`~selfsup.data.arrays.ArrayDataset` and, only when asked
with ``download=True``, fetch missing files with torchvision first.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from selfsup.data.arrays import ArrayDataset
from selfsup.data.formats import (
    read_cifar_batches,
    read_cifar_names,
    read_idx,
    read_stl_images,
    read_stl_labels,
)
from selfsup.errors import ConfigError, DataError, close_matches

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


@dataclass(frozen=True)
class _Spec:
    """Where one data set's files live and how to describe them in errors."""

    name: str  # registry name, e.g. "fashion_mnist"
    title: str  # human name, e.g. "Fashion-MNIST"
    folder: str  # torchvision's folder under root, e.g. "FashionMNIST/raw"
    files: dict[str, tuple[str, ...]]  # split -> files the split needs
    mean: tuple[float, ...]
    std: tuple[float, ...]
    gzip_ok: bool = False  # IDX files may also be stored as "<file>.gz"


def _idx_files(prefix: str) -> tuple[str, ...]:
    return (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")


_CIFAR10 = _Spec(
    "cifar10", "CIFAR-10", "cifar-10-batches-py",
    {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
)  # fmt: skip
_CIFAR100 = _Spec(
    "cifar100", "CIFAR-100", "cifar-100-python", {"train": ("train",), "test": ("test",)},
    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
)  # fmt: skip
_STL10 = _Spec(
    "stl10", "STL-10", "stl10_binary",
    {
        "train": ("train_X.bin", "train_y.bin"),
        "test": ("test_X.bin", "test_y.bin"),
        "unlabeled": ("unlabeled_X.bin",),
        "train+unlabeled": ("train_X.bin", "train_y.bin", "unlabeled_X.bin"),
    },
    (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713),
)  # fmt: skip
_MNIST = _Spec(
    "mnist", "MNIST", "MNIST/raw", {"train": _idx_files("train"), "test": _idx_files("t10k")},
    (0.1307,), (0.3081,), gzip_ok=True,
)  # fmt: skip
_FASHION_MNIST = _Spec(
    "fashion_mnist", "Fashion-MNIST", "FashionMNIST/raw", {"train": _idx_files("train"), "test": _idx_files("t10k")},
    (0.2860,), (0.3530,), gzip_ok=True,
)  # fmt: skip


def cifar10(root: str | Path, split: str = "train", download: bool = False) -> ArrayDataset:
    """CIFAR-10 (50,000 train / 10,000 test 32x32 RGB images, 10 classes) from ``<root>/cifar-10-batches-py``.

    Args:
        root: folder holding ``cifar-10-batches-py/`` (or that folder itself).
        split: ``"train"`` or ``"test"``.
        download: fetch the files with torchvision when they are missing.

    Example:
        >>> ds = cifar10("~/data", split="test")  # doctest: +SKIP
        >>> ds[0][0].shape  # doctest: +SKIP
        torch.Size([3, 32, 32])
    """
    folder = _locate(_CIFAR10, root, split, download)
    images, labels = read_cifar_batches([folder / f for f in _CIFAR10.files[split]], "labels")
    classes = read_cifar_names(folder / "batches.meta", "label_names") or CIFAR10_CLASSES
    return _as_dataset(_CIFAR10, images, labels, classes)


def cifar100(root: str | Path, split: str = "train", download: bool = False) -> ArrayDataset:
    """CIFAR-100 (50,000 train / 10,000 test 32x32 RGB images, 100 fine classes) from ``<root>/cifar-100-python``.

    Class names come from the ``meta`` file; without it they are ``"0"`` ... ``"99"``.

    Example:
        >>> ds = cifar100("~/data", split="test")  # doctest: +SKIP
        >>> ds.num_classes  # doctest: +SKIP
        100
    """
    folder = _locate(_CIFAR100, root, split, download)
    images, labels = read_cifar_batches([folder / f for f in _CIFAR100.files[split]], "fine_labels")
    classes = read_cifar_names(folder / "meta", "fine_label_names") or [str(i) for i in range(100)]
    return _as_dataset(_CIFAR100, images, labels, classes)


def stl10(root: str | Path, split: str = "train", download: bool = False) -> ArrayDataset:
    """STL-10 96x96 RGB images from ``<root>/stl10_binary``.

    Splits: ``"train"`` (5,000 labelled), ``"test"`` (8,000 labelled), ``"unlabeled"`` (100,000,
    labels -1, ``num_classes`` 0) and ``"train+unlabeled"`` (105,000; the unlabelled ones have label
    -1, ``num_classes`` 10). The unlabelled split takes about 2.8 GB of memory.

    Example:
        >>> ds = stl10("~/data", split="test")  # doctest: +SKIP
        >>> ds[0][0].shape  # doctest: +SKIP
        torch.Size([3, 96, 96])
    """
    folder = _locate(_STL10, root, split, download)
    parts_x, parts_y = [], []
    if split in ("train", "test", "train+unlabeled"):
        prefix = "test" if split == "test" else "train"
        parts_x.append(read_stl_images(folder / f"{prefix}_X.bin"))
        parts_y.append(read_stl_labels(folder / f"{prefix}_y.bin"))
        if len(parts_x[0]) != len(parts_y[0]):
            raise DataError(
                f"STL-10 files in {folder} disagree: {prefix}_X.bin holds {len(parts_x[0])} images but "
                f"{prefix}_y.bin {len(parts_y[0])} labels. Re-download with --download into an empty root."
            )
    if split in ("unlabeled", "train+unlabeled"):
        parts_x.append(read_stl_images(folder / "unlabeled_X.bin"))
        parts_y.append(torch.full((len(parts_x[-1]),), -1, dtype=torch.long))
    classes: list[str] = []
    if split != "unlabeled":
        names_file = folder / "class_names.txt"
        names = names_file.read_text().split() if names_file.is_file() else []
        classes = names if len(names) == 10 else STL10_CLASSES
    images = parts_x[0] if len(parts_x) == 1 else torch.cat(parts_x)
    return _as_dataset(_STL10, images, torch.cat(parts_y), classes)


def mnist(root: str | Path, split: str = "train", download: bool = False) -> ArrayDataset:
    """MNIST (60,000 train / 10,000 test 28x28 grayscale digits) from ``<root>/MNIST/raw``.

    The four IDX files may be plain or gzipped (``.gz``), and ``root`` may also be ``.../MNIST``
    or the folder holding the files.

    Example:
        >>> ds = mnist("~/data", split="test")  # doctest: +SKIP
        >>> ds[0][0].shape  # doctest: +SKIP
        torch.Size([1, 28, 28])
    """
    return _read_idx_set(_MNIST, root, split, download, [str(d) for d in range(10)])


def fashion_mnist(root: str | Path, split: str = "train", download: bool = False) -> ArrayDataset:
    """Fashion-MNIST (60,000 train / 10,000 test 28x28 grayscale clothes, 10 classes) from ``<root>/FashionMNIST/raw``.

    The four IDX files may be plain or gzipped (``.gz``), and ``root`` may also be
    ``.../FashionMNIST`` or the folder holding the files.

    Example:
        >>> ds = fashion_mnist("/work/shared/data/fashion-mnist", split="test")  # doctest: +SKIP
        >>> len(ds), ds.classes[0]  # doctest: +SKIP
        (10000, 'T-shirt/top')
    """
    return _read_idx_set(_FASHION_MNIST, root, split, download, FASHION_MNIST_CLASSES)


def _read_idx_set(spec: _Spec, root: str | Path, split: str, download: bool, classes: list[str]) -> ArrayDataset:
    folder = _locate(spec, root, split, download)
    image_file, label_file = (_existing(folder, f, spec.gzip_ok) for f in spec.files[split])
    assert image_file is not None and label_file is not None  # _locate checked them
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{spec.title} files in {folder} disagree: {image_file.name} holds images of shape "
            f"{tuple(images.shape)} and {label_file.name} labels of shape {tuple(labels.shape)}; expected "
            "(N, H, W) and (N,). Re-download with --download into an empty root."
        )
    return _as_dataset(spec, images.unsqueeze(1), labels.long(), classes)


def _as_dataset(spec: _Spec, images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> ArrayDataset:
    return ArrayDataset(images, labels, name=spec.name, classes=classes, mean=spec.mean, std=spec.std)


# --- finding the files -----------------------------------------------------------------------


def _existing(folder: Path, file: str, gzip_ok: bool) -> Path | None:
    """``folder/file``, or ``folder/file.gz`` when allowed, whichever exists first."""
    for candidate in (file, file + ".gz") if gzip_ok else (file,):
        path = folder / candidate
        if path.is_file():
            return path
    return None


def _direct_candidates(spec: _Spec, root: Path) -> list[Path]:
    """torchvision's layout first, then ``root`` pointing one level too deep or at the files."""
    top = spec.folder.split("/")[0]
    found = [root / spec.folder]
    if spec.folder != top:  # e.g. MNIST/raw: root may be .../MNIST, or the files may sit in root/MNIST
        found += [root / "raw", root / top]
    return found + [root]


def _candidates(spec: _Spec, root: Path) -> list[Path]:
    """All folders that may hold the files, including ``<root>/*/<folder>`` (root one level too shallow)."""
    found = _direct_candidates(spec, root)
    if root.is_dir():
        found += sorted(p / spec.folder for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _find(spec: _Spec, root: Path, split: str) -> Path | None:
    for folder in _candidates(spec, root):
        if folder.is_dir() and all(_existing(folder, f, spec.gzip_ok) for f in spec.files[split]):
            return folder
    return None


def _locate(spec: _Spec, root: str | Path, split: str, download: bool) -> Path:
    """The folder that holds ``split``'s files, downloading them first when asked and missing."""
    if split not in spec.files:
        raise ConfigError(
            f"Data set {spec.name!r} has no split {split!r}.{close_matches(split, spec.files)} "
            f"Its splits are: {', '.join(spec.files)}."
        )
    root = Path(root).expanduser()
    folder = _find(spec, root, split)
    if folder is None and download:
        _download(spec, root)
        folder = _find(spec, root, split)
    if folder is None:
        raise DataError(_missing_message(spec, root, split, download))
    return folder


def _missing_message(spec: _Spec, root: Path, split: str, downloaded: bool) -> str:
    files = spec.files[split]
    gz = " (each may be gzipped, ending in .gz)" if spec.gzip_ok else ""
    tried = [str(p) for p in _direct_candidates(spec, root)] + [f"{root}/*/{spec.folder}"]
    where = f"The root {root} does not exist." if not root.exists() else f"Looked in: {', '.join(tried)}."
    partial = ""
    for folder in _candidates(spec, root):
        missing = [f for f in files if folder.is_dir() and not _existing(folder, f, spec.gzip_ok)]
        if folder.is_dir() and len(missing) < len(files):
            partial = f" {folder} has some of them but lacks: {', '.join(missing)}."
            break
    if downloaded:
        action = "Downloading did not produce them; check the download messages above and the free disk space."
    else:
        action = (
            f"Pass --download (config data.download=true) to fetch {spec.title} into {root}, "
            "or set data.root to the folder that holds these files."
        )
    return (
        f"Cannot find the {spec.title} data set ({split!r} split) under root {root}. "
        f"Expected <root>/{spec.folder}/ holding {', '.join(files)}{gz}. {where}{partial} {action}"
    )


def _download(spec: _Spec, root: Path) -> None:
    """Fetch ``spec``'s files into ``root`` with torchvision (which also checks their MD5 sums)."""
    from torchvision import datasets

    fetchers: dict[str, Callable[[], object]] = {
        "cifar10": lambda: datasets.CIFAR10(str(root), train=False, download=True),
        "cifar100": lambda: datasets.CIFAR100(str(root), train=False, download=True),
        "stl10": lambda: datasets.STL10(str(root), split="test", download=True),
        "mnist": lambda: datasets.MNIST(str(root), train=False, download=True),
        "fashion_mnist": lambda: datasets.FashionMNIST(str(root), train=False, download=True),
    }
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetchers[spec.name]()
    except Exception as exc:  # network, disk and checksum errors come in many types
        raise DataError(
            f"Downloading {spec.title} into {root} failed: {exc}. Check the network connection and the "
            f"free disk space, or download it by hand so that <root>/{spec.folder}/ holds its files."
        ) from exc
