"""Tar shards in the WebDataset layout: written once by ``selfsup shard``, streamed by training.

Why this format: a WebDataset shard is a plain POSIX tar whose members ``<key>.<ext>`` group into
samples by key, so shards are written and checked with any tar tool, read sequentially from a local
disk or any object store that ``fsspec`` reaches (``s3://``, ``gs://``, ``https://``, ...), and read
by the ``webdataset`` library and by the many pipelines built on it (the test suite reads selfsup's
shards with it). LitData's chunks need its own binary index and reader. The reading here is
selfsup's own (about a hundred lines over ``tarfile`` and ``fsspec``) because training needs two
things the generic readers do not give: every process takes the same number of steps (DDP would
hang otherwise) and a run stopped in the middle of an epoch resumes at exactly the next batch.

A shard folder holds ``shard-000000.tar``, ``shard-000001.tar``, ... and ``shards.json``, the
manifest (written last, so a folder whose writing was interrupted is refused). Each sample is
``<key>.png`` or the original image file (``<key>.jpg`` ...), ``<key>.cls`` (the label as text,
-1 unknown) and ``<key>.json`` (``{"index": i, "source": ...}``). Samples are shuffled once (seeded)
when written, so every shard is a random sample of the data set; sample ``i`` is the ``i``-th in
shard order, its index for memory banks.

Reading (:class:`ShardStream`): at each epoch the shard order is reshuffled from ``(seed, epoch)``;
shards are dealt to the processes (ranks) round robin and, within a process, to its loader workers;
each worker mixes its samples through a shuffle buffer and cuts them into batches. Every rank takes
the same number of batches, the smallest any rank can fill in any epoch of the run, so a few
samples per epoch are left out (logged; a shard count that divides evenly by ranks x workers keeps
that small), and which ones changes from epoch to epoch. The order is a pure function of
(seed, epoch, rank, worker), so a run resumed from a mid-epoch checkpoint sees exactly the batches
the uninterrupted run would have seen next: the batches before it are read again as bytes (not
decoded) and skipped.

Example:
    >>> import tempfile
    >>> from selfsup.data import get
    >>> root = tempfile.mkdtemp()  # a local folder or an fsspec URL (s3://..., gs://...)
    >>> _ = write_shards(get("digits", split="test"), root + "/test", shard_size=200)
    >>> len(read_shards(root, split="test"))
    450
"""
from __future__ import annotations

import io
import json
import logging
import os
import random
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from selfsup.data.arrays import ArrayDataset
from selfsup.data.tar_stream import TarFormatError, tar_files
from selfsup.data.folder import (DEFAULT_MAX_PIXELS, GRAY_MEAN, GRAY_STD, IMAGENET_MEAN, IMAGENET_STD, ImageFolder,
                                 _BadImage, _open_and_decode, resolve_decoder)
from selfsup.errors import ConfigError, DataError

log = logging.getLogger("selfsup")

MANIFEST = "shards.json"
FORMAT = "selfsup-shards/1 (WebDataset tar layout)"
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "ppm", "pgm", "pbm")


# ---------------------------------------------------------------------------------------------- writing

def write_shards(dataset: Any, out: str | Path, *, shard_size: int = 1000, seed: int = 0,
                 indices: Sequence[int] | None = None, source: str = "") -> dict[str, Any]:
    """Write ``dataset`` (or its ``indices``) as tar shards of ``shard_size`` samples into ``out``.

    Files of an :class:`~selfsup.data.ImageFolder` are stored as they are (decoded at the
    training's ``data.image_size`` when read); images of the other data sets as lossless PNGs
    (read back bit for bit). ``out`` must be new or empty: nothing already there is overwritten.

    Returns the manifest (also written to ``out/shards.json``).

    Example:
        >>> import tempfile
        >>> from selfsup.data import get
        >>> manifest = write_shards(get("digits", split="test"), tempfile.mkdtemp() + "/shards", shard_size=200)
        >>> manifest["count"], len(manifest["shards"])
        (450, 3)
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard_size must be a positive number of samples per shard, got {shard_size!r}.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not an empty folder; shards are written into a new folder "
                        "(nothing was overwritten).")
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    if not chosen:
        raise DataError(f"Nothing to write into {out}: the data set has no images.")
    order = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = [chosen[i] for i in order]
    files = isinstance(dataset, ImageFolder)
    shards = []
    for number, start in enumerate(range(0, len(chosen), shard_size)):
        name = f"shard-{number:06d}.tar"
        part = chosen[start:start + shard_size]
        labels = _write_one(out / name, dataset, part, first=start, files=files)
        shards.append({"name": name, "count": len(part), "labels": labels})
    manifest = {
        "format": FORMAT, "count": len(chosen), "seed": seed, "source": source or getattr(dataset, "name", ""),
        "classes": list(dataset.classes), "channels": int(dataset.channels),
        "mean": list(dataset.mean), "std": list(dataset.std),
        # None: files stored as they are, decoded at the training's data.image_size
        "image_size": None if files else list(dataset.image_size), "shards": shards,
    }
    partial = out / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest))
    os.replace(partial, out / MANIFEST)
    return manifest


def _write_one(path: Path, dataset: Any, part: list[int], *, first: int, files: bool) -> list[int]:
    """One shard, written under a temporary name and renamed when complete; returns its labels."""
    partial = path.with_name(path.name + ".partial")
    labels = []
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
        for offset, index in enumerate(part):
            key = f"{first + offset:09d}"
            if files:
                file, label = dataset.samples[index]
                payload, ext, origin = Path(file).read_bytes(), Path(file).suffix.lower().lstrip("."), str(file)
                if ext not in IMAGE_EXTENSIONS:
                    ext = "img"
            else:
                image, label, _ = dataset[index]
                payload, ext, origin = _png(image), "png", index
            labels.append(int(label))
            meta = json.dumps({"index": first + offset, "source": origin}).encode()
            for suffix, data in ((ext, payload), ("cls", str(int(label)).encode()), ("json", meta)):
                member = tarfile.TarInfo(f"{key}.{suffix}")
                member.size, member.mode, member.mtime = len(data), 0o644, 0
                tar.addfile(member, io.BytesIO(data))
    os.replace(partial, path)
    return labels


def _png(image: Tensor) -> bytes:
    array = image.numpy()
    pil = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- reading

def shard_root(root: str | Path, split: str = "train") -> str:
    """The shard folder for ``split``: ``root/split`` when it holds a manifest, else ``root`` itself
    (for the training split). Local paths and fsspec URLs alike.

    Example:
        >>> import tempfile
        >>> from selfsup.data import get
        >>> root = tempfile.mkdtemp()
        >>> _ = write_shards(get("digits", split="test"), root + "/test", shard_size=200)
        >>> shard_root(root, "test") == root + "/test"
        True
        >>> shard_root("/tmp/shards-that-do-not-exist", "train")
        Traceback (most recent call last):
        selfsup.errors.DataError: No shards for split 'train' under /tmp/shards-that-do-not-exist: ...
    """
    import fsspec

    base = str(root).rstrip("/")
    candidates = [f"{base}/{split}"] + ([base] if split in ("train", "all") else [])
    for candidate in candidates:
        fs, path = fsspec.core.url_to_fs(candidate)
        if fs.exists(f"{path}/{MANIFEST}"):
            return candidate
    raise DataError(f"No shards for split {split!r} under {root}: looked for "
                    f"{' and '.join(c + '/' + MANIFEST for c in candidates)}. Write them with "
                    f"`selfsup shard SOURCE {root}` (see `selfsup shard --help`).")


def read_manifest(root: str) -> dict[str, Any]:
    """The manifest of the shard folder ``root``, checked."""
    import fsspec

    where = f"{root.rstrip('/')}/{MANIFEST}"
    try:
        with fsspec.open(where, "rt") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{where} does not exist: {root} is not a shard folder written by `selfsup shard` "
                        "(or its writing was interrupted before the manifest).") from None
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read the shard manifest {where}: {err}") from None
    missing = [k for k in ("count", "classes", "channels", "mean", "std", "image_size", "shards") if k not in manifest]
    if missing:
        raise DataError(f"{where} lacks the key(s) {', '.join(missing)}; rewrite the shards with `selfsup shard`.")
    if sum(s["count"] for s in manifest["shards"]) != manifest["count"]:
        raise DataError(f"{where}: the shards' counts do not add up to count={manifest['count']}.")
    return manifest


def shards_hold_files(root: str | Path, split: str = "train") -> bool:
    """Whether the shards hold image files of any size (decoded at a chosen size), not fixed-size pixels."""
    return read_manifest(shard_root(root, split))["image_size"] is None


@dataclass(frozen=True)
class _Shard:
    url: str
    first: int
    count: int


class _ShardSource:
    """What every reader of one shard folder shares: the manifest, the decode settings, the shard list."""

    def __init__(self, root: str | Path, *, split: str = "train", image_size: int | None = None,
                 channels: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 decoder: str = "auto") -> None:
        self.root = shard_root(root, split)
        manifest = read_manifest(self.root)
        self.name = "shards"
        self.classes = [str(c) for c in manifest["classes"]]
        self.num_classes = len(self.classes)
        stored = manifest["image_size"]
        if channels not in (None, 1, 3):
            raise ConfigError(f"data.channels must be 1 or 3, got {channels!r}.")
        if channels not in (None, manifest["channels"]) and stored is not None:
            raise ConfigError(f"data.channels={channels}, but the shards in {self.root} hold "
                              f"{manifest['channels']}-channel images.")
        self.channels = int(channels or manifest["channels"])
        if stored is not None:
            if image_size not in (None, stored[0]) or stored[0] != stored[1]:
                raise ConfigError(f"data.image_size={image_size}, but the shards in {self.root} hold "
                                  f"{stored[0]}x{stored[1]} images; leave data.image_size unset.")
            size = int(stored[0])
        elif image_size is None:
            raise ConfigError(f"The shards in {self.root} hold image files of any size: set data.image_size "
                              "(the size they are decoded at).")
        else:
            size = int(image_size)
        self.image_size: tuple[int, int] = (size, size)
        self.stored_pixels = stored is not None
        self.max_pixels, self.decoder = max_pixels, resolve_decoder(decoder)
        if self.channels == manifest["channels"]:
            self.mean, self.std = tuple(manifest["mean"]), tuple(manifest["std"])
        else:  # image files decoded at another channel count than the folder they came from: the folder's defaults
            self.mean, self.std = (IMAGENET_MEAN, IMAGENET_STD) if self.channels == 3 else (GRAY_MEAN, GRAY_STD)
        first, self.shards = 0, []
        for entry in manifest["shards"]:
            self.shards.append(_Shard(f"{self.root.rstrip('/')}/{entry['name']}", first, int(entry["count"])))
            first += int(entry["count"])
        self.labels = torch.tensor([label for entry in manifest["shards"] for label in entry["labels"]],
                                   dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def raw_samples(self, shard: _Shard) -> Iterator[tuple[int, int, str, bytes]]:
        """``(index, label, key, image bytes)`` of each sample of ``shard``, in order, undecoded."""
        import fsspec

        position, key, parts = 0, None, {}
        try:
            with fsspec.open(shard.url, "rb") as f:
                for path, content in tar_files(f):
                    stem, _, ext = path.rsplit("/", 1)[-1].partition(".")
                    if stem != key and key is not None:
                        yield self._sample(shard, position, key, parts)
                        position, parts = position + 1, {}
                    key = stem
                    parts[ext.lower()] = content
                if key is not None:
                    yield self._sample(shard, position, key, parts)
                    position += 1
        except (TarFormatError, OSError) as err:
            raise DataError(f"Shard {shard.url} cannot be read after {position} samples: {err}. "
                            "Rewrite the shards with `selfsup shard`.") from None
        if position != shard.count:
            raise DataError(f"Shard {shard.url} holds {position} samples, its manifest says {shard.count}: "
                            "the shard is truncated or was replaced. Rewrite the shards with `selfsup shard`.")

    def _sample(self, shard: _Shard, position: int, key: str, parts: dict[str, bytes]) -> tuple[int, int, str, bytes]:
        image = next((parts[e] for e in (*IMAGE_EXTENSIONS, "img") if e in parts), None)
        if image is None:
            raise DataError(f"Shard {shard.url}, sample {key!r}: no image member (has {', '.join(sorted(parts))}); "
                            f"expected one of .{', .'.join(IMAGE_EXTENSIONS)}.")
        try:
            label = int(parts.get("cls", b"-1").decode().strip())
        except ValueError:
            raise DataError(f"Shard {shard.url}, sample {key!r}: its .cls is not an integer label.") from None
        return shard.first + position, label, f"{shard.url}:{key}", image

    def decode(self, where: str, data: bytes) -> Tensor:
        """The uint8 image (C, H, W) of one sample's bytes."""
        size = self.image_size[0]
        try:
            if self.stored_pixels:
                with Image.open(io.BytesIO(data)) as img:
                    array = np.array(img)
                image = torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
                if tuple(image.shape) != (self.channels, size, size):
                    raise _BadImage(f"it holds an image of shape {tuple(image.shape)}, the manifest says "
                                    f"({self.channels}, {size}, {size})")
                return image.contiguous()
            return _open_and_decode(io.BytesIO(data), size, self.channels, self.max_pixels, self.decoder)
        except _BadImage as err:
            raise DataError(f"{where}: {err}. Rewrite the shards with `selfsup shard ... --skip-bad-images`, "
                            "which leaves unreadable images out.") from None

    def in_order(self) -> Iterator[tuple[Tensor, int, int]]:
        for shard in self.shards:
            for index, label, where, data in self.raw_samples(shard):
                yield self.decode(where, data), label, index


def read_shards(root: str | Path, *, split: str = "train", image_size: int | None = None,
                channels: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                decoder: str = "auto", limit: int | None = None) -> ArrayDataset:
    """The first ``limit`` samples (all when None) of a shard folder, decoded into memory.

    For evaluation sets and the k-NN monitor's memory; training streams with :class:`ShardStream`.

    Example:
        >>> import tempfile
        >>> from selfsup.data import get
        >>> root = tempfile.mkdtemp()
        >>> _ = write_shards(get("digits", split="test"), root + "/test", shard_size=200)
        >>> test_set = read_shards(root, split="test")
        >>> test_set.images.shape, test_set.labels.shape
        (torch.Size([450, 1, 8, 8]), torch.Size([450]))
    """
    source = _ShardSource(root, split=split, image_size=image_size, channels=channels, max_pixels=max_pixels,
                          decoder=decoder)
    wanted = len(source) if limit is None else min(int(limit), len(source))
    images, labels = [], []
    for image, label, _ in source.in_order():
        if len(images) == wanted:
            break
        images.append(image)
        labels.append(label)
    return ArrayDataset(torch.stack(images), torch.tensor(labels), name="shards", classes=source.classes,
                        mean=source.mean, std=source.std)


class ShardStream(IterableDataset):
    """Training batches ``(uint8 images (B, C, H, W), labels (B,), indices (B,))`` streamed from shards.

    ``len(stream)`` is the number of samples (indices run over ``range(len(stream))``); read it
    through :meth:`loader`: each rank yields ``stream.steps`` batches per epoch. Call :meth:`set_epoch` before each epoch (selfsup's
    ``DataPosition`` callback does) and :meth:`resume_at` to start part-way into one.

    The epoch and resume position live in shared memory, so persistent loader workers see them
    change between epochs.

    Args:
        root: a shard folder (or a folder of split folders), local path or fsspec URL.
        batch_size: samples per batch on each rank.
        world_size: number of training processes (devices x nodes).
        rank: this process's rank; None: read from ``torch.distributed`` by ``loader()`` (0 without
            a process group).
        num_workers: the loader's worker processes (0: read in the main process).
        epochs: the run's length; the batch count per epoch is the smallest over these epochs.
        shuffle_buffer: samples each worker mixes before cutting batches (undecoded bytes).

    Example:
        >>> import tempfile
        >>> from selfsup.data import get
        >>> root = tempfile.mkdtemp()
        >>> _ = write_shards(get("digits", split="train"), root + "/train", shard_size=500)
        >>> stream = ShardStream(root, batch_size=64)
        >>> images, labels, indices = next(iter(stream.loader()))
        >>> images.shape, images.dtype, len(stream), stream.steps
        (torch.Size([64, 1, 8, 8]), torch.uint8, 1347, 21)
    """

    def __init__(self, root: str | Path, *, batch_size: int, split: str = "train", seed: int = 0,
                 world_size: int = 1, rank: int | None = None, num_workers: int = 0, epochs: int = 1, shuffle_buffer: int = 1000,
                 image_size: int | None = None, channels: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, decoder: str = "auto") -> None:
        self.source = _ShardSource(root, split=split, image_size=image_size, channels=channels,
                                   max_pixels=max_pixels, decoder=decoder)
        for attr in ("name", "classes", "num_classes", "channels", "image_size", "mean", "std", "labels", "root"):
            setattr(self, attr, getattr(self.source, attr))
        if shuffle_buffer < 1:
            raise ConfigError(f"data.shuffle_buffer must be >= 1 sample, got {shuffle_buffer}.")
        self.batch_size, self.seed, self.world_size, self.rank = int(batch_size), int(seed), int(world_size), rank
        if rank is not None and not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside the {world_size} process(es).")
        self.num_workers, self.shuffle_buffer = int(num_workers), int(shuffle_buffer)
        # (epoch, batches to skip) in shared memory: persistent loader workers read them at each epoch
        self._position = torch.zeros(2, dtype=torch.long).share_memory_()
        self.steps = min(self.batches_on_rank(e, r) for e in range(max(1, epochs)) for r in range(self.world_size))
        if self.steps == 0:
            raise DataError(
                f"The shards in {self.root} ({len(self.source)} samples in {len(self.source.shards)} shards) cannot "
                f"fill one batch of {self.batch_size} on every one of {self.world_size} process(es) x "
                f"{max(1, self.num_workers)} worker(s): write smaller shards (`selfsup shard --shard-size`), or use "
                "fewer workers or a smaller batch.")
        left_out = len(self.source) - self.steps * self.batch_size * self.world_size
        share = left_out / len(self.source)
        (log.warning if share > 0.1 else log.info)(
            "Shards: %d of %d samples per epoch are left out (%.1f%%) so that every process takes %d batches; a "
            "shard count that is a multiple of processes x workers (%d x %d) keeps this small.", left_out,
            len(self.source), 100 * share, self.steps, self.world_size, max(1, self.num_workers))

    def __len__(self) -> int:
        return len(self.source)

    def loader(self, **options: Any) -> "ShardLoader":
        """The training loader: ``DataLoader`` options but ``batch_size`` (the stream batches) and
        ``num_workers`` (the stream's own). The process's rank is fixed here, in the main process, so
        that workers started by spawn or forkserver (which hold no process group) read its shards."""
        if self.rank is None:
            self.rank = self._process_rank()
        return ShardLoader(EpochBatches(self), batch_size=None, num_workers=self.num_workers, **options)

    def _process_rank(self) -> int:
        """This process's rank in ``torch.distributed`` (0 without a process group), checked against
        the planned world size."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return 0
        if torch.distributed.get_world_size() != self.world_size:
            raise ConfigError(f"ShardStream was planned for {self.world_size} process(es), the run has "
                              f"{torch.distributed.get_world_size()}.")
        return torch.distributed.get_rank()

    @property
    def samples_per_epoch(self) -> int:
        return self.steps * self.batch_size * self.world_size

    @property
    def epoch(self) -> int:
        return int(self._position[0])

    def set_epoch(self, epoch: int) -> None:
        self._position[0] = int(epoch)

    def resume_at(self, position: int) -> None:
        """Start the next pass after its first ``position`` samples (a whole number of batches)."""
        self._position[1] = int(position) // self.batch_size

    def worker_shards(self, epoch: int, rank: int) -> list[list[_Shard]]:
        """The shards each worker of ``rank`` reads in ``epoch``, in reading order."""
        shards = self.source.shards
        order = torch.randperm(len(shards), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        mine = [shards[i] for i in order.tolist()[rank::self.world_size]]
        workers = max(1, self.num_workers)
        return [mine[w::workers] for w in range(workers)]

    def batches_on_rank(self, epoch: int, rank: int) -> int:
        return sum(sum(s.count for s in part) // self.batch_size for part in self.worker_shards(epoch, rank))

    def batch_positions(self, epoch: int, rank: int) -> list[list[int]]:
        """For each worker, the positions its batches take in the rank's batch sequence: the loader
        takes one batch from each worker in turn, passing over workers that have run out."""
        counts = [sum(s.count for s in part) // self.batch_size for part in self.worker_shards(epoch, rank)]
        positions: list[list[int]] = [[] for _ in counts]
        position = 0
        for round_ in range(max(counts, default=0)):
            for worker, count in enumerate(counts):
                if round_ < count:
                    positions[worker].append(position)
                    position += 1
        return positions

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        rank = self.rank if self.rank is not None else self._process_rank()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != max(1, self.num_workers):
            raise ConfigError(f"ShardStream was planned for {self.num_workers} loader worker(s), the loader has "
                              f"{workers}; pass num_workers={workers} to ShardStream.")
        epoch, start = (int(v) for v in self._position)
        positions = self.batch_positions(epoch, rank)[worker]
        samples = self._shuffled(self.worker_shards(epoch, rank)[worker], epoch, rank, worker)
        for position in positions:
            batch = [next(samples) for _ in range(self.batch_size)]
            if position < start:  # trained on before the checkpoint: read, not decoded; the marker keeps the
                yield SKIPPED     # loader's turn-taking between workers as in the uninterrupted epoch
                continue
            if position >= self.steps:
                return
            images = torch.stack([self.source.decode(where, data) for _, _, where, data in batch])
            yield (images, torch.tensor([label for _, label, _, _ in batch]),
                   torch.tensor([index for index, _, _, _ in batch]))

    def _shuffled(self, shards: list[_Shard], epoch: int, rank: int, worker: int) -> Iterator[tuple[int, int, str, bytes]]:
        rng = random.Random(f"{self.seed}/{epoch}/{rank}/{worker}")
        buffer: list[tuple[int, int, str, bytes]] = []
        for shard in shards:
            for sample in self.source.raw_samples(shard):
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(sample)
                    continue
                slot = rng.randrange(len(buffer))
                buffer[slot], sample = sample, buffer[slot]
                yield sample
        rng.shuffle(buffer)
        yield from buffer

    def in_order(self) -> "ShardSequence":
        """Every sample, one at a time in index order (for a pass over the whole training set)."""
        return ShardSequence(self.source)


class EpochBatches(IterableDataset):
    """A :class:`ShardStream` as the loader sees it: ``len`` is the number of batches per epoch."""

    def __init__(self, stream: ShardStream) -> None:
        self.stream = stream

    def __len__(self) -> int:
        return self.stream.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        return iter(self.stream)


SKIPPED = "skipped"
"""What a worker yields in place of a batch before the resume position."""


class ShardLoader(DataLoader):
    """A ``DataLoader`` over :class:`EpochBatches` that drops the markers of batches skipped on resume.

    Workers yield a marker for each batch before the resume position, so the loader still takes one
    item from each worker in turn exactly as in the uninterrupted epoch; the markers go no further.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return (batch for batch in super().__iter__() if not (isinstance(batch, str) and batch == SKIPPED))


class ShardSequence(IterableDataset):
    """All samples ``(image, label, index)`` of a shard folder in index order, decoded one by one."""

    def __init__(self, source: _ShardSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[tuple[Tensor, int, int]]:
        if get_worker_info() is not None and get_worker_info().num_workers > 1:
            raise ConfigError("ShardSequence is read by one process (num_workers 0 or 1).")
        return self.source.in_order()
