"""Write embeddings with their labels and sample names to a NumPy (.npy / .npz) or Parquet file.

Formats, chosen by the file name's ending:

- ``.npz``: one file with arrays ``embeddings`` (N, D) float32, ``labels`` (N,) int64 (-1:
  unknown) and ``names`` (N,) unicode; ``np.load(path)`` reads it without pickle.
- ``.npy``: the embeddings in ``FILE.npy``, the labels in ``FILE.labels.npy`` and the names, one
  per line (UTF-8), in ``FILE.names.txt`` next to it.
- ``.parquet``: columns ``name`` (string), ``label`` (int64) and ``embedding`` (fixed-size list of
  float32); needs pyarrow (``pip install pyarrow``, or the ``parquet`` extra).

Existing files are never replaced unless ``overwrite=True``; files are written under temporary
names and renamed once all are complete.

Example:
    >>> import tempfile
    >>> test_set = selfsup.data.get("digits", split="test")
    >>> transform = selfsup.augment.EvalTransform(8, test_set.mean, test_set.std)
    >>> feats, labels = selfsup.eval.extract_features(nn.Flatten(), test_set, transform)  # raw pixels as the encoder
    >>> files = write_embeddings(tempfile.mkdtemp() + "/test.npz", feats, labels, sample_names(test_set, "test"))
    >>> [path.name for path in files]
    ['test.npz']
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selfsup.errors import ConfigError, DataError, SelfSupError

__all__ = ["EMBEDDING_FORMATS", "output_files", "sample_names", "write_embeddings"]

EMBEDDING_FORMATS = (".npy", ".npz", ".parquet")


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as err:
        raise SelfSupError(
            "Writing .parquet files needs pyarrow: pip install pyarrow (or pip install 'selfsup[parquet]'); "
            "or write .npz / .npy instead."
        ) from err
    return pyarrow


def output_files(path: str | Path, *, overwrite: bool = False) -> list[Path]:
    """The files :func:`write_embeddings` writes for ``path``, checked before any work is done.

    Raises:
        ConfigError: the file name does not end in .npy, .npz or .parquet.
        SelfSupError: one of the files exists and ``overwrite`` is False, or a .parquet file is
            asked for and pyarrow is missing.

    Example:
        >>> output_files("emb.npy")
        [PosixPath('emb.npy'), PosixPath('emb.labels.npy'), PosixPath('emb.names.txt')]
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_FORMATS:
        raise ConfigError(
            f"Cannot tell the format of {path}: the output file must end in {', '.join(EMBEDDING_FORMATS)}."
        )
    files = [path]
    if suffix == ".npy":
        stem = path.name[: -len(path.suffix)]
        files += [path.with_name(stem + ".labels.npy"), path.with_name(stem + ".names.txt")]
    if suffix == ".parquet":
        _pyarrow()
    existing = [f for f in files if f.exists()]
    if existing and not overwrite:
        raise SelfSupError(
            f"{existing[0]} already exists; not overwriting it. Choose another --out file or pass --overwrite."
        )
    return files


def sample_names(dataset: Any, split: str) -> list[str]:
    """A name for every item of ``dataset``: its file path for image folders, else ``"<data set>/<split>/<index>"``.

    Subsets (:class:`selfsup.data.DataSubset`) name their items after the parent data set's.

    Example:
        >>> sample_names(selfsup.data.get("digits", split="test"), "test")[:2]
        ['digits/test/0', 'digits/test/1']
    """
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and len(samples) == len(dataset):
        return [str(item[0]) for item in samples]
    parent, indices = getattr(dataset, "dataset", None), getattr(dataset, "indices", None)
    if parent is not None and indices is not None:
        names = sample_names(parent, split)
        return [names[int(i)] for i in indices]
    name = getattr(dataset, "name", "data")
    return [f"{name}/{split}/{i}" for i in range(len(dataset))]


def _write(tmp: Path, kind: str, embeddings: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    if kind == "npz":
        with tmp.open("wb") as f:
            np.savez(f, embeddings=embeddings, labels=labels, names=np.array(names, dtype=str))
    elif kind in ("npy", "labels"):
        with tmp.open("wb") as f:
            np.save(f, embeddings if kind == "npy" else labels)
    elif kind == "names":
        tmp.write_text("".join(n + "\n" for n in names), encoding="utf-8")
    else:
        pa = _pyarrow()
        d = embeddings.shape[1]
        column = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1), type=pa.float32()), d)
        table = pa.table({"name": pa.array(names, type=pa.string()), "label": pa.array(labels, type=pa.int64()),
                          "embedding": column})
        pa.parquet.write_table(table, str(tmp))


def write_embeddings(
    path: str | Path,
    embeddings: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | Sequence[int],
    names: Sequence[str],
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``embeddings`` (N, D), ``labels`` (N,) and ``names`` (N) to ``path``; returns the files written.

    The format follows ``path``'s ending (see the module docstring). Nothing is written when a
    check fails.

    Raises:
        ConfigError: shapes disagree, or the file name has an unknown ending.
        DataError: a name holds a line break (only .npy's names.txt cannot hold one).
        SelfSupError: a file exists and ``overwrite`` is False; pyarrow is missing for .parquet.

    Example:
        >>> import tempfile
        >>> files = write_embeddings(tempfile.mkdtemp() + "/emb.npz", torch.randn(3, 4), [0, 1, -1], ["a.png", "b.png", "c.png"])
        >>> [path.name for path in files], sorted(np.load(files[0]))
        (['emb.npz'], ['embeddings', 'labels', 'names'])
    """
    files = output_files(path, overwrite=overwrite)
    z = (embeddings.detach().cpu().numpy() if isinstance(embeddings, Tensor) else np.asarray(embeddings))
    y = torch.as_tensor(labels).cpu().numpy() if not isinstance(labels, np.ndarray) else labels
    names = [str(n) for n in names]
    if z.ndim != 2 or y.shape != (len(z),) or len(names) != len(z):
        raise ConfigError(f"write_embeddings needs embeddings (N, D), labels (N,) and N names; got {z.shape}, "
                          f"{y.shape} and {len(names)} names.")
    z, y = z.astype(np.float32, copy=False), y.astype(np.int64, copy=False)
    suffix = files[0].suffix.lower()
    kinds = ["npy", "labels", "names"] if suffix == ".npy" else [suffix[1:]]
    if "names" in kinds:
        bad = next((n for n in names if "\n" in n or "\r" in n), None)
        if bad is not None:
            raise DataError(f"The name {bad!r} holds a line break, which {files[2]} (one name per line) cannot "
                            "hold; write a .npz or .parquet file instead.")
    files[0].parent.mkdir(parents=True, exist_ok=True)
    temps = [f.with_name(f".{f.name}.{os.getpid()}.tmp") for f in files]
    try:
        for tmp, kind in zip(temps, kinds):
            _write(tmp, kind, z, y, names)
        for tmp, final in zip(temps, files):
            tmp.replace(final)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return files
