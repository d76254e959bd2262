"""Open file descriptors while an 8-worker data loader reads a folder of 10,000 images.

Writes ``--classes`` x ``--per-class`` small PNGs (default 10 x 1,000 of 16x16, random pixels) to a
temporary folder, builds ``selfsup.data.get("folder", ...)`` on it and iterates a torch DataLoader
with ``--workers`` worker processes (default 8) the way ``selfsup train`` builds its loader
(``EpochShuffleSampler``, ``drop_last``, ``persistent_workers``) for ``--epochs`` full epochs.
It counts the open file descriptors of this process (``/proc/self/fd``) and of each worker
(``/proc/<pid>/fd``):

  before         no loader yet
  during         sampled every ``--sample-every`` batches (min / max per epoch)
  after epoch e  the epoch's iterator exhausted (persistent workers still alive)
  after          the loader and its iterator deleted, workers gone

Verdict (exit status 1 when it fails): no "Too many open files"; the count after every epoch equals
the count after the first one (no growth from epoch to epoch); after the loader is gone the count
is back to ``before``; no worker's count rises during an epoch by more than ``--fd-slack`` above its
first sample, and no worker's largest count grows from epoch to epoch (images are opened and closed
by the workers, so a leak there would show as a rising count; with the default ``file_descriptor``
sharing strategy a worker also holds one descriptor per tensor of each batch in flight, up to
prefetch_factor (2) x 3 tensors = 6, which the default slack of 8 allows).
``--train`` also runs ``selfsup train --epochs 1 --num-workers <workers>`` on the same folder and
prints the ResourceMonitor's ``resources/open_files`` readings every 5 steps; it passes when the
last reading is the lowest. Usage:

    .venv/bin/python benchmarks/open_files.py
    .venv/bin/python benchmarks/open_files.py --workers 8 --epochs 3 --train
"""
from __future__ import annotations

import argparse
import errno
import gc
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup import data
from selfsup.engine.logger import read_metrics


def open_fds(pid: int | str = "self") -> int:
    """Open file descriptors of process ``pid`` (-1 when it is gone or unreadable)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def child_pids() -> list[int]:
    """Process ids whose parent is this process (the DataLoader's workers), from ``/proc``."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name (field 2) may hold spaces; fields after its closing parenthesis are fixed
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry))
    return sorted(found)


def write_image_folder(root: Path, classes: int, per_class: int, size: int, seed: int = 0) -> int:
    """``classes`` sub-folders of ``per_class`` random ``size`` x ``size`` RGB PNGs; returns the count."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (per_class, size, size, 3), dtype=np.uint8)
        for i in range(per_class):
            Image.fromarray(pixels[i]).save(folder / f"{i:05d}.png", compress_level=1)
    return classes * per_class


@dataclass
class EpochFds:
    """Descriptor counts seen during one epoch."""

    main_min: int = 1 << 30
    main_max: int = 0
    main_after: int = 0
    worker_first: dict[int, int] = field(default_factory=dict)
    worker_max: dict[int, int] = field(default_factory=dict)
    worker_last: dict[int, int] = field(default_factory=dict)
    batches: int = 0
    seconds: float = 0.0

    def sample(self, workers: list[int]) -> None:
        n = open_fds()
        self.main_min, self.main_max = min(self.main_min, n), max(self.main_max, n)
        for pid in workers:
            count = open_fds(pid)
            if count < 0:
                continue
            self.worker_first.setdefault(pid, count)
            self.worker_max[pid] = max(self.worker_max.get(pid, 0), count)
            self.worker_last[pid] = count

    def worker_growth(self) -> int:
        """Largest rise of one worker's count above its first sample in this epoch."""
        return max((self.worker_max[p] - self.worker_first[p] for p in self.worker_first), default=0)


def run_loader(root: Path, *, workers: int, epochs: int, batch_size: int, image_size: int,
               sample_every: int) -> tuple[int, list[EpochFds], int]:
    """Iterate the loader; returns the count before, each epoch's figures and the count after."""
    gc.collect()
    before = open_fds()
    dataset = data.get("folder", root=root, image_size=image_size)
    sampler = data.EpochShuffleSampler(len(dataset), seed=0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0,
    )
    epochs_seen = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        figures = EpochFds()
        started = time.perf_counter()
        kids: list[int] = []
        for i, (images, labels, indices) in enumerate(loader):
            assert images.shape[1:] == (3, image_size, image_size) and images.dtype == torch.uint8
            if i == 0 or not kids:
                kids = child_pids()
            if i % sample_every == 0:
                figures.sample(kids)
            figures.batches += 1
            del images, labels, indices
        figures.seconds = time.perf_counter() - started
        gc.collect()
        figures.main_after = open_fds()
        epochs_seen.append(figures)
    del loader
    gc.collect()
    deadline = time.time() + 10
    while child_pids() and time.time() < deadline:  # workers exit asynchronously
        time.sleep(0.1)
    return before, epochs_seen, open_fds()


def train_readings(root: Path, workers: int, image_size: int, batch_size: int) -> list[tuple[int, int]]:
    """``selfsup train --epochs 1`` on ``root``: (step, resources/open_files) every 5 steps."""
    with tempfile.TemporaryDirectory(prefix="selfsup-fd-run-") as out:
        command = [sys.executable, "-m", "selfsup", "train", "--method", "simclr", "--backbone", "resnet_tiny",
                   "--data", "folder", "--root", str(root), "--epochs", "1", "--batch-size", str(batch_size),
                   "--num-workers", str(workers), "--output-dir", out, "--name", "fd", f"data.image_size={image_size}",
                   "monitor.resources_every=5", "log_every_n_steps=5", "progress_bar=false"]
        print("train:", " ".join(command[1:]))
        # one intra-op thread: with 8 workers on a small CPU, more only oversubscribe it
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"open_files: selfsup train failed with status {done.returncode}")
        return [(int(r["step"]) + 1, int(r["resources/open_files"]))
                for r in read_metrics(Path(out) / "fd" / "metrics.jsonl") if "resources/open_files" in r]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sample-every", type=int, default=1, help="batches between samples")
    parser.add_argument("--fd-slack", type=int, default=8, help="allowed rise of a worker's count in an epoch")
    parser.add_argument("--train", action="store_true", help="also run selfsup train --epochs 1 on the folder")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")  # more workers than cores: asked for

    with tempfile.TemporaryDirectory(prefix="selfsup-fd-") as tmp:
        root = Path(tmp) / "images"
        started = time.perf_counter()
        count = write_image_folder(root, args.classes, args.per_class, args.image_size)
        print(f"wrote {count} PNGs of {args.image_size}x{args.image_size} in {time.perf_counter() - started:.1f} s; "
              f"{args.workers} workers, batch {args.batch_size}, {args.epochs} epochs")
        try:
            before, epochs, after = run_loader(root, workers=args.workers, epochs=args.epochs,
                                               batch_size=args.batch_size, image_size=args.image_size,
                                               sample_every=args.sample_every)
        except OSError as err:
            if err.errno == errno.EMFILE:
                print(f"FAIL: {err}")
                return 1
            raise
        readings = train_readings(root, args.workers, args.image_size, 256) if args.train else []

    print(f"\nopen file descriptors of the main process: before {before}\n")
    print("| epoch | batches | s | during min | during max | after epoch | workers: first -> max (largest) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for e, f in enumerate(epochs, 1):
        first = max(f.worker_first.values(), default=-1)
        print(f"| {e} | {f.batches} | {f.seconds:.1f} | {f.main_min} | {f.main_max} | {f.main_after} | "
              f"{len(f.worker_first)} workers: {first} -> {max(f.worker_max.values(), default=-1)} |")
    print(f"\nafter the loader is deleted: {after}; largest rise of one worker's count within an epoch: "
          + ", ".join(str(f.worker_growth()) for f in epochs))
    if readings:
        print("selfsup train --epochs 1, resources/open_files by step: "
              + ", ".join(f"{s}: {n}" for s, n in readings))

    per_epoch_ok = all(f.main_after == epochs[0].main_after for f in epochs)
    back_ok = after == before
    worker_peak = [max(f.worker_max.values(), default=0) for f in epochs]
    workers_ok = (all(f.worker_growth() <= args.fd_slack for f in epochs)
                  and all(peak <= worker_peak[0] + 2 for peak in worker_peak))
    # a reading counts the batches in flight at that moment (up to workers x prefetch 2 x 3 tensors),
    # most while the workers start up; a leak would end the epoch at its highest count, not its lowest
    train_ok = not readings or readings[-1][1] == min(n for _, n in readings)
    print(f"\nafter-epoch count constant over epochs: {'ok' if per_epoch_ok else 'GROWS'}; back to before "
          f"after the loader: {'ok' if back_ok else f'NO ({after - before:+d})'}; worker counts within an epoch: "
          f"{'ok' if workers_ok else 'GROW'}" + (f"; train run: {'ok' if train_ok else 'GROWS'}" if readings else ""))
    ok = per_epoch_ok and back_ok and workers_ok and train_ok
    print(f"verdict: {'PASS, no descriptor growth' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
