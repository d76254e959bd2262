"""Images per second through the training loader for an image folder: PIL decoding vs torchvision
decoding vs the decoded memmap cache, side by side in one run, with ratios.

A folder of ``--images`` generated JPEGs (smooth noise, sides drawn from ``--source``) is read at
``--image-size`` by a DataLoader (batch 256, ``--workers`` persistent workers, shuffled order, as
``selfsup train`` builds it) for one warm-up epoch and ``--epochs`` timed epochs per variant: wall
clock images/s. Because wall clock on a shared machine measures the neighbours too, each variant is
also read in-process (no workers, one thread) and timed by this process's CPU time: images per
CPU-second, the decode cost itself. The variants take turns, ``--repeats`` rounds, and each figure
is the best round. The cache's one-time build is timed separately.

    nice -n 10 .venv/bin/python benchmarks/speed/folder_cache.py                  # 2,000 JPEGs, 64-96 px -> 64
    nice -n 10 .venv/bin/python benchmarks/speed/folder_cache.py --source 256 384 # larger photos -> 64
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

from selfsup.data import EpochShuffleSampler, ImageFolder, cache_folder  # noqa: E402


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


def epochs_per_second(dataset, workers: int, epochs: int, batch_size: int) -> float:
    """Images per second over ``epochs`` timed epochs, after one warm-up epoch (workers started)."""
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=False)
    seen = 0
    for epoch in range(epochs + 1):
        sampler.set_epoch(epoch)
        if epoch == 1:
            start, seen = time.perf_counter(), 0
        for images, _, _ in loader:
            seen += len(images)
    return seen / (time.perf_counter() - start)


def per_cpu_second(dataset, epochs: int, batch_size: int) -> float:
    """Images per CPU-second of this process, reading in-process (no workers) after one warm-up epoch."""
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0)
    seen = 0
    for epoch in range(epochs + 1):
        sampler.set_epoch(epoch)
        if epoch == 1:
            start, seen = time.process_time(), 0
        for images, _, _ in loader:
            seen += len(images)
    return seen / (time.process_time() - start)


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
          f"{args.images / build_s:,.0f} images/s; cache file {cached_mb:.1f} MB.")


if __name__ == "__main__":
    main()
