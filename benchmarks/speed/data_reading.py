"""Images per second through the training loader for an image folder: PIL decoding vs torchvision
decoding vs the decoded memmap cache vs tar shards of the same files (``selfsup shard``, streamed
by ``ShardStream``), and whole images for crops from the full picture (``data.folder_crop: full``,
:class:`~selfsup.data.WholeImageView`: longer side fitted, decoded or read from the whole-image
cache) against centred squares (``center``), side by side in one run, with ratios.

A folder of ``--images`` generated JPEGs (smooth noise, sides drawn from ``--source``) is read at
``--image-size`` by a DataLoader (batch 256, ``--workers`` persistent workers, shuffled order, as
``selfsup train`` builds it) for one warm-up epoch and ``--epochs`` timed epochs per variant: wall
clock images/s. Because wall clock on a shared machine measures the neighbours too, each variant is
also read in-process (no workers, one thread) and timed by this process's CPU time: images per
CPU-second, the decode cost itself. The variants take turns, ``--repeats`` rounds, and each figure
is the best round. The one-time costs (the cache's build, writing the shards) are timed separately.
Shards hold the JPEG files as they are (``--shard-size`` images each) and are read from the local
disk with the stream's own batching, workers and shuffle buffer, so their row differs from the
folder rows by reading one tar per worker instead of one file per image.

    nice -n 10 .venv/bin/python benchmarks/speed/data_reading.py                  # 2,000 JPEGs, 64-96 px -> 64
    nice -n 10 .venv/bin/python benchmarks/speed/data_reading.py --source 256 384 # larger photos -> 64
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from selfsup.data import (EpochShuffleSampler, ImageFolder, ShardStream, WholeImageView, cache_folder,  # noqa: E402
                          write_shards)


def make_folder(root: Path, count: int, source: tuple[int, int], seed: int) -> None:
    """``count`` JPEGs in 10 class folders; each side drawn from ``source`` (inclusive range)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = (int(v) for v in rng.integers(source[0], source[1] + 1, size=2))
        small = rng.integers(0, 256, (max(2, h // 4), max(2, w // 4), 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1))
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.jpg", quality=90)


def rate(loader, set_epoch, epochs: int, clock) -> float:
    """Images per ``clock`` second over ``epochs`` timed epochs of ``loader``, after one warm-up epoch
    (workers started); ``set_epoch(e)`` reshuffles before epoch ``e``."""
    seen = 0
    for epoch in range(epochs + 1):
        set_epoch(epoch)
        if epoch == 1:
            start, seen = clock(), 0
        for images, _, _ in loader:
            seen += len(images)
    return seen / (clock() - start)


def epochs_per_second(dataset, workers: int, epochs: int, batch_size: int) -> float:
    """Wall-clock images per second through ``workers`` persistent workers, as in training."""
    if isinstance(dataset, ShardStream):
        return rate(dataset.loader(persistent_workers=workers > 0), dataset.set_epoch, epochs, time.perf_counter)
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=False, collate_fn=collate_of(dataset))
    return rate(loader, sampler.set_epoch, epochs, time.perf_counter)


def collate_of(dataset):
    """The loader's ``collate_fn``: whole images collate into one ``FramedImages`` batch."""
    return dataset.collate() if isinstance(dataset, WholeImageView) else None


def per_cpu_second(dataset, epochs: int, batch_size: int) -> float:
    """Images per CPU-second of this process, reading in-process (no workers)."""
    if isinstance(dataset, ShardStream):
        in_process = ShardStream(dataset.root, batch_size=batch_size, image_size=dataset.image_size[0], epochs=epochs + 1)
        return rate(in_process.loader(), in_process.set_epoch, epochs, time.process_time)
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0, collate_fn=collate_of(dataset))
    return rate(loader, sampler.set_epoch, epochs, time.process_time)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--source", type=int, nargs=2, default=(64, 96), metavar=("MIN", "MAX"),
                        help="range of the generated JPEGs' sides, pixels")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each figure is the best round")
    parser.add_argument("--shard-size", type=int, default=250, help="images per shard")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        started = time.perf_counter()
        make_folder(root, args.images, tuple(args.source), seed=0)
        print(f"{args.images} JPEGs, sides {args.source[0]}-{args.source[1]} px, read at {args.image_size} px, "
              f"{args.workers} workers, batch {args.batch_size}, {args.epochs} timed epochs after 1 warm-up "
              f"(folder made in {time.perf_counter() - started:.1f} s)")
        rates: dict[str, tuple[float, float]] = {}
        datasets = {f"decode: {d}": ImageFolder(root, args.image_size, decoder=d)
                    for d in ("pil", "torchvision", "auto")}
        started = time.perf_counter()
        cached = cache_folder(ImageFolder(root, args.image_size), Path(tmp) / "cache", num_workers=args.workers,
                              progress=False)
        build_s = time.perf_counter() - started
        datasets["memmap cache"] = cached
        datasets["whole image: auto"] = WholeImageView(ImageFolder(root, args.image_size))
        started = time.perf_counter()
        cached.whole = cache_folder(ImageFolder(root, args.image_size), Path(tmp) / "cache", num_workers=args.workers,
                                    progress=False, fit="full")
        whole_build_s = time.perf_counter() - started
        datasets["whole-image cache"] = WholeImageView(cached)
        started = time.perf_counter()
        write_shards(ImageFolder(root, args.image_size), Path(tmp) / "shards" / "train", shard_size=args.shard_size)
        shards_s = time.perf_counter() - started
        shard_mb = sum(p.stat().st_size for p in (Path(tmp) / "shards" / "train").glob("*.tar")) / 1e6
        datasets["tar shards"] = ShardStream(Path(tmp) / "shards", batch_size=args.batch_size, image_size=args.image_size,
                                             num_workers=args.workers, epochs=args.epochs + 1)
        for _ in range(args.repeats):  # variants take turns, so a busy spell on the machine hits them all
            for name, ds in datasets.items():
                wall = epochs_per_second(ds, args.workers, args.epochs, args.batch_size)
                cpu = per_cpu_second(ds, args.epochs, args.batch_size)
                best = rates.get(name, (0.0, 0.0))
                rates[name] = (max(best[0], wall), max(best[1], cpu))
    wall0, cpu0 = rates["decode: pil"]
    cached_mb = len(cached) * cached.channels * args.image_size**2 / 1e6
    print(f"\nBest of {args.repeats} rounds.\n")
    print(f"| reading | images / s (wall, {args.workers} workers) | vs PIL | images / CPU-s (in-process) | vs PIL |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (wall, cpu) in rates.items():
        print(f"| {name} | {wall:,.0f} | {wall / wall0:.2f} | {cpu:,.0f} | {cpu / cpu0:.2f} |")
    print(f"\nCache build (once, decoder auto, {args.workers} workers): {build_s:.1f} s = "
          f"{args.images / build_s:,.0f} images/s; cache file {cached_mb:.1f} MB. Whole-image cache: "
          f"{whole_build_s:.1f} s = {args.images / whole_build_s:,.0f} images/s, the same size.")
    wall_a, cpu_a = rates["decode: auto"]
    wall_w, cpu_w = rates["whole image: auto"]
    print(f"Whole images vs centred squares (decoder auto): {wall_w / wall_a:.2f}x wall, {cpu_w / cpu_a:.2f}x per "
          f"CPU-second; whole-image cache vs cache: {rates['whole-image cache'][0] / rates['memmap cache'][0]:.2f}x wall.")
    shards = datasets["tar shards"]
    print(f"Shards written (once, one process, files stored as they are): {shards_s:.1f} s = "
          f"{args.images / shards_s:,.0f} images/s; {len(shards.source.shards)} shards, {shard_mb:.1f} MB; the stream "
          f"reads {shards.samples_per_epoch} of {len(shards)} images per epoch (whole batches per worker).")


if __name__ == "__main__":
    main()
