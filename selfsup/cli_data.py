"""Data for a trained backbone on the command line: which data set, its preprocessing, the run folder.

Used by ``selfsup eval pictures`` and ``selfsup embed``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from selfsup.errors import DataError, close_matches


def run_folder(path: str | Path) -> Path:
    """The run folder of a run folder, a ``<run>/checkpoints/*.ckpt`` or a ``<run>/backbone.safetensors``.

    A checkpoint outside a ``checkpoints`` folder, or an export anywhere, gives the folder holding it.

    Example:
        >>> run_folder("runs/demo/checkpoints/last.ckpt")
        PosixPath('runs/demo')
    """
    path = Path(path)
    if path.is_dir():
        return path
    if path.suffix == ".ckpt" and path.parent.name == "checkpoints":
        return path.parent.parent
    return path.parent


def resolve_data(data: str | None, root: str | None, info: dict[str, Any]) -> tuple[str, str | None]:
    """``(data set name, root)`` from a DATA argument, ``--root`` and what the backbone records.

    ``data`` is a registered data set name, or a path to a folder of images (then the name is
    ``"folder"`` and the path its root); None means the data set the backbone was trained on.
    Without ``root``, the training run's root is used when the data set is the one trained on.

    Example:
        >>> import tempfile
        >>> photos = tempfile.mkdtemp()  # a folder of images
        >>> resolve_data(photos, None, {"data": "cifar10"}) == ("folder", photos)
        True
        >>> resolve_data(None, None, {"data": "cifar10", "root": "~/data"})  # the data set trained on
        ('cifar10', '~/data')
    """
    from selfsup import data as datasets

    if data is None:
        if not info.get("data"):
            raise DataError("The backbone does not record its data set; pass --data NAME (and --root PATH).")
        data = str(info["data"])
    if data not in datasets.names():
        if Path(data).expanduser().is_dir():
            if root is not None:
                raise DataError(f"{data} is a folder of images; --root applies only to a data set given by name.")
            return "folder", str(Path(data).expanduser())
        raise DataError(
            f"{data!r} is neither a data set name ({', '.join(datasets.names())}) nor an existing folder of images."
            + close_matches(data, datasets.names())
        )
    if root is None and data == info.get("data"):
        root = info.get("root")
    return data, root


def open_data(name: str, *, root: str | None, split: str, info: dict[str, Any]) -> Any:
    """The data set ``name`` / ``split``; image folders are decoded at the backbone's image size and channels.

    Raises:
        DataError: the backbone was trained on another channel count than the data set has.

    Example:
        >>> test_set = open_data("digits", root=None, split="test", info={"channels": 1})
        >>> len(test_set), test_set.channels
        (450, 1)
    """
    from selfsup import data as datasets

    folder = name == "folder"
    size = info.get("image_size") if folder else None
    channels = info.get("channels") if folder else None
    dataset = datasets.get(name, root=root, split=split, image_size=int(size) if size else None,
                           channels=int(channels) if channels else None)
    if info.get("channels") is not None and int(info["channels"]) != dataset.channels:
        raise DataError(
            f"The backbone was trained on {info['channels']}-channel images but {name!r} has {dataset.channels}-"
            "channel images; use data with the same number of channels."
        )
    return dataset


def eval_transform(info: dict[str, Any], dataset: Any, name: str | None = None) -> Any:
    """The deterministic preprocessing for ``dataset``: the backbone's image size and a mean / std.

    On the data set the backbone was trained on (``name`` equal to ``info["data"]``), the training
    mean / std; on another data set (transfer) that data set's own, as ``selfsup eval knn|linear``
    do, so every command preprocesses a given data set the same way.

    Example:
        >>> test_set = open_data("digits", root=None, split="test", info={})
        >>> eval_transform({"image_size": 32, "mean": [0.5], "std": [0.5], "data": "digits"}, test_set, "digits")
        EvalTransform(size=32, mean=(0.5,), std=(0.5,))
    """
    from selfsup.augment import EvalTransform

    size = int(info.get("image_size") or dataset.image_size[0])
    same_data = name is None or name == info.get("data")
    if same_data and info.get("mean") and info.get("std"):
        return EvalTransform(size, info["mean"], info["std"])
    return EvalTransform(size, dataset.mean, dataset.std)
