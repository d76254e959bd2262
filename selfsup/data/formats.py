"""Readers for the on-disk formats torchvision downloads: CIFAR pickles, IDX (MNIST) and STL-10 binaries.

They read whole files into uint8 tensors. torchvision's own data set classes check MD5 sums of
every file on each load (slow for STL-10's 2.6 GB, and they refuse small or re-packed copies) and
cannot read gzipped IDX files, so selfsup reads the files itself and uses torchvision to download.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from selfsup.errors import DataError

IDX_UBYTE = 0x08


def read_cifar_batches(paths: list[Path], label_key: str) -> tuple[Tensor, Tensor]:
    """Read CIFAR "python version" batch files into uint8 images (N, 3, 32, 32) and labels (N,).

    Args:
        paths: batch files (e.g. ``data_batch_1`` ... ``data_batch_5``), read in order.
        label_key: ``"labels"`` (CIFAR-10) or ``"fine_labels"`` (CIFAR-100).

    Example:
        >>> import pickle, tempfile; from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "test_batch"  # as in cifar-10-batches-py/
        >>> _ = path.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [3, 8]}))
        >>> images, labels = read_cifar_batches([path], "labels")
        >>> images.shape, labels
        (torch.Size([2, 3, 32, 32]), tensor([3, 8]))
    """
    images, labels = [], []
    for path in paths:
        entry = _unpickle(path)
        if "data" not in entry or label_key not in entry:
            raise DataError(
                f"CIFAR file {path} is not a CIFAR batch: it lacks the keys 'data' and {label_key!r} "
                f"(found: {', '.join(map(str, entry)) or 'none'}). Re-download it with --download into an empty root."
            )
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(entry[label_key]):
            raise DataError(
                f"CIFAR file {path} has data of shape {data.shape} for {len(entry[label_key])} labels; "
                "expected (N, 3072) uint8 rows. Re-download it with --download into an empty root."
            )
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(list(entry[label_key]), dtype=torch.long))
    return torch.cat(images), torch.cat(labels)


def read_cifar_names(path: Path, key: str) -> list[str] | None:
    """Class names from a CIFAR meta file (``batches.meta`` / ``meta``), or None if it is absent.

    Example:
        >>> import pickle, tempfile; from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "batches.meta"  # as in cifar-10-batches-py/
        >>> _ = path.write_bytes(pickle.dumps({"label_names": ["airplane", "automobile", "bird"]}))
        >>> read_cifar_names(path, "label_names")
        ['airplane', 'automobile', 'bird']
    """
    if not path.is_file():
        return None
    names = _unpickle(path).get(key)
    return [str(n) for n in names] if names is not None else None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as exc:  # pickle raises many types for damaged files
        raise DataError(
            f"Cannot read CIFAR file {path}: {exc}. The file is damaged or not a CIFAR pickle; "
            "delete it and re-download with --download."
        ) from exc
    if not isinstance(entry, dict):
        raise DataError(f"CIFAR file {path} does not hold a dict; delete it and re-download with --download.")
    return entry


def read_idx(path: Path) -> Tensor:
    """Read an IDX file of unsigned bytes (MNIST format), plain or gzipped (``.gz``), as a uint8 tensor.

    Example:
        >>> import gzip, tempfile; from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "t10k-labels-idx1-ubyte.gz"  # 3 labels: 7, 2, 1
        >>> with gzip.open(path, "wb") as f: _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> read_idx(path)
        tensor([7, 2, 1], dtype=torch.uint8)
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read IDX file {path}: {exc}. Delete it and re-download with --download.") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE or data[3] == 0:
        raise DataError(
            f"{path} is not an IDX file of unsigned bytes (it must start with 00 00 08 <ndim>). "
            "Delete it and re-download with --download."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(data) < header or len(data) - header != count:
        raise DataError(
            f"IDX file {path} is truncated or padded: its header says {dims} ({count} bytes) "
            f"but it holds {max(0, len(data) - header)} bytes. Delete it and re-download with --download."
        )
    array = np.frombuffer(data, dtype=np.uint8, count=count, offset=header).reshape(dims)
    return torch.from_numpy(array.copy())


def read_stl_images(path: Path) -> Tensor:
    """Read an STL-10 ``*_X.bin`` file (column-major 3x96x96 uint8 images) as a tensor (N, 3, 96, 96).

    Example:
        >>> import tempfile; from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "test_X.bin"  # as in stl10_binary/
        >>> _ = path.write_bytes(bytes(2 * 3 * 96 * 96))  # two black images
        >>> read_stl_images(path).shape
        torch.Size([2, 3, 96, 96])
    """
    per_image = 3 * 96 * 96
    size = path.stat().st_size
    if size == 0 or size % per_image:
        raise DataError(
            f"STL-10 file {path} has {size} bytes, not a multiple of {per_image} (one 3x96x96 image); "
            "it is truncated or damaged. Delete it and re-download with --download."
        )
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // per_image, 3, 96, 96))
    images = torch.from_numpy(np.ascontiguousarray(mapped.transpose(0, 1, 3, 2)))
    del mapped
    return images


def read_stl_labels(path: Path) -> Tensor:
    """Read an STL-10 ``*_y.bin`` file (labels 1..10, one byte each) as 0-based long labels.

    Example:
        >>> import tempfile; from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "test_y.bin"  # as in stl10_binary/
        >>> _ = path.write_bytes(bytes([7, 3, 2]))
        >>> read_stl_labels(path)
        tensor([6, 2, 1])
    """
    raw = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if raw.size and (raw.min() < 0 or raw.max() > 9):
        raise DataError(f"STL-10 label file {path} holds values outside 1..10; re-download it with --download.")
    return torch.from_numpy(raw)
