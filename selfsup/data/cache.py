"""A decoded uint8 cache for image folders: decode every image once, then read fixed-size tensors from disk.

Layout: ``<cache_dir>/<folder name>-<hash of its path>-<size>px-<channels>ch/`` holds ``images.u8``
(N x C x H x W uint8, read through ``numpy.memmap``) and ``index.json`` (format version, library
versions, decode settings, every file's relative path, label, size and modification time, and the
files that could not be read with the reason). The index is written last, after the data file is
complete, each through a temporary file and a rename, so a build that stops half way (an error,
Ctrl-C, a killed process) leaves no index and is never taken for a valid cache.

The cache is valid while the folder's file list, labels, sizes and modification times (nanoseconds)
and the settings (``image_size``, ``channels``, ``max_pixels``, ``decoder``, library versions)
match the index; otherwise it is rebuilt with a log message that says why. A file rewritten with
the same size and modification time is not noticed (nothing short of reading every file would).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from selfsup.data.decoding import FITS
from selfsup.data.folder import ImageFolder, load_image, load_whole_image
from selfsup.data.protocol import Sample
from selfsup.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
DATA_NAME, INDEX_NAME, LOCK_NAME = "images.u8", "index.json", "lock"
DEFAULT_DIR_NAME = ".selfsup-cache"
_INDEX_BYTES_PER_FILE = 160  # a generous estimate of one file's entry in index.json


class CachedFolder(Dataset[Sample]):
    """An :class:`~selfsup.data.ImageFolder` whose decoded images are read from a memory-mapped file.

    Built by :func:`cache_folder`. Items, labels, ``samples``, ``skipped`` and every attribute of the
    data set protocol are those of the folder after bad images are left out; only the pixels come
    from the cache (byte for byte what the folder's own decoding gives). The memory map is opened
    lazily in each process, so DataLoader workers share the operating system's page cache.

    Example:
        >>> import os, tempfile; from PIL import Image; from selfsup.data import ImageFolder
        >>> photos = tempfile.mkdtemp(); os.mkdir(photos + "/cats"); os.mkdir(photos + "/dogs")
        >>> for name in ("cats/a.jpg", "cats/b.jpg", "dogs/c.png"): Image.new("RGB", (80, 60)).save(f"{photos}/{name}")
        >>> ds = cache_folder(ImageFolder(photos, 64), photos + "/cache")
        >>> ds[0][0].shape, ds.classes
        (torch.Size([3, 64, 64]), ['cats', 'dogs'])
    """

    def __init__(self, folder: ImageFolder, entry: Path, extents: list[list[int]] | None = None) -> None:
        self.root, self.entry, self.decoder = folder.root, entry, folder.decoder
        # with fit="full" (cache_folder): each image's (height, width) in the top-left of its canvas
        self.extents = torch.tensor(extents, dtype=torch.long).view(-1, 2) if extents is not None else None
        self.whole: CachedFolder | None = None  # the folder's whole-image cache, when training needs it
        self.name, self.channels, self.image_size = folder.name, folder.channels, folder.image_size
        self.classes, self.num_classes = folder.classes, folder.num_classes
        self.mean, self.std = folder.mean, folder.std
        self.samples, self.skipped, self.labels = list(folder.samples), list(folder.skipped), folder.labels
        size = folder.image_size[0]  # type: ignore[index]
        self.shape = (len(self.samples), folder.channels, size, size)
        self._array: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def _images(self) -> np.memmap:
        if self._array is None:
            self._array = np.memmap(self.entry / DATA_NAME, dtype=np.uint8, mode="r", shape=self.shape)
        return self._array

    def position(self, index: int) -> int:
        """``index`` as a position in the cache (negative counts from the end); IndexError when out of range."""
        n = len(self.samples)
        index = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= index < n:
            raise IndexError(f"index {index} is out of range for a data set of {n} images")
        return index

    def __getitem__(self, index: int) -> Sample:
        index = self.position(index)
        return torch.from_numpy(np.array(self._images()[index])), self.samples[index][1], index

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        """A batch of samples read with one fancy-indexed copy from the memory map."""
        positions = [self.position(i) for i in indices]
        block = self.read_block(positions)
        return [(block[k], self.samples[i][1], i) for k, i in enumerate(positions)]

    def read_block(self, positions: list[int]) -> Tensor:
        """The images at ``positions`` (checked, non-negative) as one uint8 tensor, one copy from the map."""
        return torch.from_numpy(self._images()[np.asarray(positions, dtype=np.int64)])

    def framed(self, index: int) -> tuple[Tensor, tuple[int, int]]:
        """A whole-image cache's (``fit="full"``) canvas and the image's ``(height, width)`` in it."""
        if self.extents is None:
            raise ValueError(f"The decoded cache in {self.entry} holds centred squares, not whole images.")
        index = self.position(index)
        height, width = self.extents[index].tolist()
        return torch.from_numpy(np.array(self._images()[index])), (height, width)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None  # each process maps the file itself (a pickled memmap would copy it)
        return state

    def __repr__(self) -> str:
        return (f"CachedFolder(root={str(self.root)!r}, size={len(self)}, image_size={self.image_size}, "
                f"cache={str(self.entry)!r})")


def default_cache_dir(root: str | Path, fallback: str | Path) -> Path:
    """``<root>/.selfsup-cache`` when the image folder is writable, else ``<fallback>/.selfsup-cache``.

    The cache sits next to the images so every run on that folder shares it (the hidden folder is
    ignored when the folder is scanned); for a read-only folder ``fallback`` (``selfsup train``
    passes its ``output_dir``, so runs in one output folder share the cache).

    Example:
        >>> import tempfile; from pathlib import Path
        >>> photos = tempfile.mkdtemp()  # a folder of images we may write to
        >>> default_cache_dir(photos, "runs") == Path(photos) / ".selfsup-cache"
        True
        >>> default_cache_dir("/no/such/photos", "runs")  # one we cannot write to
        PosixPath('runs/.selfsup-cache')
    """
    root = Path(root).expanduser()
    if os.access(root, os.W_OK | os.X_OK):
        return root / DEFAULT_DIR_NAME
    return Path(fallback).expanduser() / DEFAULT_DIR_NAME


def cache_folder(
    folder: ImageFolder,
    cache_dir: str | Path,
    *,
    skip_bad_images: bool = False,
    num_workers: int = 0,
    progress: bool | None = None,
    fit: str = "center",
) -> CachedFolder:
    """The folder's images from a decoded cache under ``cache_dir``, building it first when needed.

    Give it an :class:`~selfsup.data.ImageFolder` made with ``skip_bad_images=False`` (only
    scanned, nothing decoded; one made with ``True`` works too but has decoded everything once
    already): the build decodes each image once (in ``num_workers`` DataLoader
    worker processes) and finds the bad ones on the way. With ``skip_bad_images`` they are left
    out exactly as :class:`~selfsup.data.ImageFolder` leaves them out (same ``skipped`` entries,
    same warnings); without it the first bad image stops the build with the error that loading it
    would give. A valid cache is read without decoding anything.

    Args:
        folder: the scanned folder (its ``decoder``, ``max_pixels``, size and channels are used).
        cache_dir: where cache entries live (see :func:`default_cache_dir`).
        skip_bad_images: leave out unreadable images instead of stopping.
        num_workers: decoding processes for a build (0: in this process).
        progress: show a tqdm progress bar while building (None: only on a terminal).
        fit: ``"center"``: the folder's items (centred squares); ``"full"``: whole images in
            canvases with their extents (:func:`~selfsup.data.folder.load_whole_image`, what
            ``data.folder_crop: full`` trains on), read with :meth:`CachedFolder.framed`; a
            separate entry.

    Raises:
        DataError: a bad image (without ``skip_bad_images``), no readable image at all, or too
            little free disk space for the cache (the message gives the size needed and free).

    Example:
        >>> import os, tempfile; from PIL import Image; from selfsup.data import ImageFolder
        >>> photos = tempfile.mkdtemp(); os.mkdir(photos + "/cats"); os.mkdir(photos + "/dogs")
        >>> for name in ("cats/a.jpg", "cats/b.jpg", "dogs/c.png"): Image.new("RGB", (80, 60)).save(f"{photos}/{name}")
        >>> folder = ImageFolder(photos, 64)
        >>> ds = cache_folder(folder, default_cache_dir(photos, "runs"), num_workers=0)  # e.g. 8 decoding processes
        >>> len(ds), sorted(os.listdir(photos))  # decoded once into photos/.selfsup-cache
        (3, ['.selfsup-cache', 'cats', 'dogs'])
    """
    if fit not in FITS:
        raise ConfigError(f"cache_folder fit must be one of {', '.join(FITS)}; got {fit!r}.")
    entry = Path(cache_dir).expanduser() / (_entry_name(folder) + ("-whole" if fit == "full" else ""))
    try:
        entry.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"Cannot create the decoded-cache folder {entry}: {err}. Set data.cache_dir to a writable folder, "
            "or data.cache=false."
        ) from err
    files = _snapshot(folder)
    settings = _settings(folder) | ({"fit": "full"} if fit == "full" else {})
    with _locked(entry):  # a second process (another DDP rank) waits here, then finds the cache built
        index = _read_index(entry)
        why = _why_stale(index, settings, files, entry, folder)
        if why is not None:
            (logger.info if index is None else logger.warning)(
                "%s the decoded cache of %s in %s: %s.",
                "Building" if index is None else "Rebuilding", folder.root, entry, why,
            )  # fmt: skip
            index = _build(folder, entry, settings, files, skip_bad_images, num_workers, progress, fit)
    path_of = {rel: path for (rel, *_), (path, _) in zip(files, folder.samples)}
    bad = [(path_of[rel], reason) for rel, reason, _ in index["bad"]]
    if bad and not skip_bad_images:
        raise DataError(index["bad"][0][2])
    if bad:
        folder.leave_out(bad)
    if len(folder.samples) != index["count"]:
        raise DataError(f"The decoded cache in {entry} holds {index['count']} images, expected "
                        f"{len(folder.samples)}; delete that folder to rebuild it.")
    if fit == "full" and len(index.get("extents", ())) != index["count"]:
        raise DataError(f"The decoded cache in {entry} lacks the images' extents; delete that folder to rebuild it.")
    return CachedFolder(folder, entry, index["extents"] if fit == "full" else None)


def _entry_name(folder: ImageFolder) -> str:
    resolved = str(folder.root.resolve())
    digest = hashlib.sha1(resolved.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", folder.root.resolve().name)[:40] or "folder"
    return f"{stem}-{digest}-{folder.image_size[0]}px-{folder.channels}ch"  # type: ignore[index]


def _settings(folder: ImageFolder) -> dict[str, Any]:
    """What the cached pixels depend on besides the files."""
    import PIL
    import torchvision

    import selfsup

    return {
        "format": CACHE_FORMAT, "image_size": folder.image_size[0], "channels": folder.channels,  # type: ignore[index]
        "max_pixels": folder.max_pixels, "decoder": folder.decoder,
        "versions": {"selfsup": selfsup.__version__, "pillow": PIL.__version__, "torchvision": torchvision.__version__},
    }  # fmt: skip


def _snapshot(folder: ImageFolder) -> list[list[Any]]:
    """``[relative path, label, size, mtime_ns]`` of every scanned file (size -1 when it cannot be read)."""
    root, files = str(folder.root), []
    for path, label in folder.samples:
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        files.append([os.path.relpath(path, root), label, size, mtime])
    return files


def _read_index(entry: Path) -> dict[str, Any] | None:
    try:
        index = json.loads((entry / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def _why_stale(
    index: dict[str, Any] | None, settings: dict[str, Any], files: list[list[Any]], entry: Path, folder: ImageFolder
) -> str | None:
    """Why the cache in ``entry`` cannot be used (None: it can)."""
    if index is None:
        return "no complete cache there yet"
    for key, value in settings.items():
        if index.get(key) != value:
            return f"{key} was {index.get(key)!r} when it was built, now {value!r}"
    if index.get("classes") != folder.classes:
        return f"the classes changed from {index.get('classes')} to {folder.classes}"
    old = {rel: (label, size, mtime) for rel, label, size, mtime in index.get("files", [])}
    new = {rel: (label, size, mtime) for rel, label, size, mtime in files}
    added, removed = [r for r in new if r not in old], [r for r in old if r not in new]
    if added or removed:
        parts = [f"{len(added)} file(s) added (first: {added[0]})" if added else "",
                 f"{len(removed)} file(s) removed (first: {removed[0]})" if removed else ""]
        return "the folder changed: " + ", ".join(p for p in parts if p)
    changed = [rel for rel in new if new[rel] != old[rel]]
    if changed:
        return (f"{len(changed)} file(s) changed since it was built (label, size or modification time; "
                f"first: {changed[0]})")
    expected = int(index.get("count", -1)) * folder.channels * folder.image_size[0] ** 2  # type: ignore[index]
    try:
        actual = (entry / DATA_NAME).stat().st_size
    except OSError:
        actual = -1
    if actual != expected:
        return f"its data file {entry / DATA_NAME} has {actual} bytes, expected {expected}"
    return None


@contextlib.contextmanager
def _locked(entry: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``entry`` (POSIX ``flock``; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent builds write distinct temporary files, the last rename wins
        yield
        return
    with open(entry / LOCK_NAME, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _human(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError


def _check_space(entry: Path, folder: ImageFolder, n: int) -> None:
    per_image = folder.channels * folder.image_size[0] ** 2  # type: ignore[index]
    need = n * per_image + n * _INDEX_BYTES_PER_FILE
    free = shutil.disk_usage(entry).free
    if need > free:
        raise DataError(
            f"The decoded cache of {folder.root} needs {_human(need)} ({n} images x {per_image} bytes, plus the "
            f"index) but {entry} has only {_human(free)} free. Free space there, set data.cache_dir to a disk "
            "with room, or set data.cache=false to decode images at every epoch."
        )


class _DecodeJob(Dataset):
    """Item i: ``(i, image or None, reason, message)`` for the i-th scanned file."""

    def __init__(self, folder: ImageFolder, fit: str = "center") -> None:
        self.fit = fit
        self.paths = [path for path, _ in folder.samples]
        self.size, self.channels = folder.image_size[0], folder.channels  # type: ignore[index]
        self.max_pixels, self.decoder = folder.max_pixels, folder.decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, str, str, tuple[int, int]]:
        """``(i, image or None, reason, message, extent)``."""
        load = load_whole_image if self.fit == "full" else load_image
        try:
            decoded = load(self.paths[i], self.size, self.channels, max_pixels=self.max_pixels, decoder=self.decoder)
        except DataError as err:
            return i, None, str(getattr(err.__cause__, "reason", err)), str(err), (0, 0)
        image, extent = decoded if isinstance(decoded, tuple) else (decoded, (self.size, self.size))
        return i, image, "", "", extent


def _as_list(batch: list) -> list:
    return batch


def _build(
    folder: ImageFolder, entry: Path, settings: dict[str, Any], files: list[list[Any]], skip_bad_images: bool,
    num_workers: int, progress: bool | None, fit: str = "center",
) -> dict[str, Any]:
    """Decode every file into ``entry`` (data file, then index, each atomically); returns the index."""
    from tqdm.auto import tqdm

    for name in (INDEX_NAME, DATA_NAME):  # stale: remove first, so the space check counts it as free
        with contextlib.suppress(FileNotFoundError):
            (entry / name).unlink()
    for stale in entry.glob("*.tmp-*"):  # left by a build that was killed
        with contextlib.suppress(OSError):
            stale.unlink()
    n = len(files)
    _check_space(entry, folder, n)
    size, channels = folder.image_size[0], folder.channels  # type: ignore[index]
    tmp_data, tmp_index = entry / f"{DATA_NAME}.tmp-{os.getpid()}", entry / f"{INDEX_NAME}.tmp-{os.getpid()}"
    started, kept, bad, extents = time.perf_counter(), 0, [], []
    try:
        images = np.memmap(tmp_data, dtype=np.uint8, mode="w+", shape=(n, channels, size, size))
        loader = DataLoader(_DecodeJob(folder, fit), batch_size=32, num_workers=num_workers, collate_fn=_as_list)
        with tqdm(total=n, desc=f"Decoding {folder.root.name or folder.root} into the cache", unit="img",
                  disable=None if progress is None else not progress) as bar:
            for batch in loader:
                for i, image, reason, message, extent in batch:
                    if image is None:
                        if not skip_bad_images:
                            raise DataError(message)
                        bad.append([files[i][0], reason, message])
                    else:
                        images[kept] = image.numpy()
                        extents.append(list(extent))
                        kept += 1
                bar.update(len(batch))
        images.flush()
        del images
        if kept == 0:  # all bad: raises the error ImageFolder(skip_bad_images=True) gives
            folder.leave_out([(path, reason) for (path, _), (_, reason, _) in zip(folder.samples, bad)])
        os.truncate(tmp_data, kept * channels * size * size)
        _fsync(tmp_data)
        os.replace(tmp_data, entry / DATA_NAME)
        index = {**settings, "root": str(folder.root.resolve()), "classes": folder.classes, "count": kept,
                 "files": files, "bad": bad, **({"extents": extents} if fit == "full" else {})}
        tmp_index.write_text(json.dumps(index), encoding="utf-8")
        _fsync(tmp_index)
        os.replace(tmp_index, entry / INDEX_NAME)  # the commit: only now does the cache look valid
    finally:
        for tmp in (tmp_data, tmp_index):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    seconds = time.perf_counter() - started
    logger.info("Decoded %d images of %s into %s in %.1f s (%.0f images/s); %d unreadable.",
                n, folder.root, entry, seconds, n / max(seconds, 1e-9), len(bad))
    return index


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
