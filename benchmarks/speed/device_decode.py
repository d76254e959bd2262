"""JPEG folder to uint8 batch on the training device: workers decode (PIL / libjpeg-turbo) and the
batch is copied, vs workers ship the file bytes and the device decodes the batch
(``data.decode_on_device``: one batched nvjpeg call on CUDA), side by side in one run, with ratios.

A folder of ``--images`` generated JPEGs (smooth noise, sides drawn from ``--source``) is read at
``--image-size`` through a DataLoader as ``selfsup train`` builds it (batch ``--batch-size``,
``--workers`` persistent workers, pinned memory on CUDA, shuffled order), for one warm-up epoch and
``--epochs`` timed epochs per variant; each batch ends as a uint8 (B, C, size, size) tensor on the
device (the network is left out: this is the data path alone). The variants take turns for
``--repeats`` rounds and each figure is the best round. Without CUDA the device path decodes on the
CPU in the main process (what ``decode_on_device=true`` does there), which is no speed comparison.

    python benchmarks/speed/device_decode.py --device cuda --workers 8                 # 375-500 px -> 224
    python benchmarks/speed/device_decode.py --device cpu --images 200 --workers 2     # a quick CPU run
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _common import fmt_rate, fmt_ratio, machine_line, print_table, synchronize  # noqa: E402
from data_reading import make_folder  # noqa: E402

from selfsup.data import EpochShuffleSampler, ImageFolder  # noqa: E402
from selfsup.data.device_decode import DeviceDecodeView, EncodedImages  # noqa: E402


def loader_of(dataset, collate, workers: int, batch_size: int, pin: bool) -> tuple[DataLoader, EpochShuffleSampler]:
    """A training-style loader over ``dataset`` and its sampler."""
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                        persistent_workers=workers > 0, pin_memory=pin, drop_last=False)
    return loader, sampler


def to_device(images, device: torch.device) -> torch.Tensor:
    """The batch as a uint8 tensor on ``device`` (decoding it there when it holds JPEG bytes)."""
    if isinstance(images, EncodedImages):
        return images.decode(device)
    return images.to(device, non_blocking=True)


def images_per_second(loader: DataLoader, sampler: EpochShuffleSampler, epochs: int, device: torch.device) -> float:
    """Images per wall-clock second over ``epochs`` timed epochs, after one warm-up epoch."""
    seen, start = 0, 0.0
    for epoch in range(epochs + 1):
        sampler.set_epoch(epoch)
        if epoch == 1:
            synchronize(device)
            start, seen = time.perf_counter(), 0
        for images, _, _ in loader:
            seen += to_device(images, device).shape[0]
    synchronize(device)
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--source", type=int, nargs=2, default=(375, 500), metavar=("MIN", "MAX"),
                        help="range of the generated JPEGs' sides in px")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(machine_line(device))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        start = time.perf_counter()
        make_folder(root, args.images, tuple(args.source), seed=0)
        print(f"{args.images} JPEGs ({args.source[0]}-{args.source[1]} px) written in {time.perf_counter() - start:.1f} s; "
              f"read at {args.image_size} px, batch {args.batch_size}, {args.workers} workers, {args.epochs} timed epochs, "
              f"best of {args.repeats} rounds")
        folder = ImageFolder(root, args.image_size)
        on_device = DeviceDecodeView(folder)
        pin = device.type == "cuda"
        variants = {
            "workers decode": loader_of(folder, None, args.workers, args.batch_size, pin),
            f"{device.type} decodes (decode_on_device)": loader_of(on_device, on_device.collate(), args.workers,
                                                                   args.batch_size, pin),
        }
        best = dict.fromkeys(variants, 0.0)
        for _ in range(args.repeats):
            for name, (loader, sampler) in variants.items():
                best[name] = max(best[name], images_per_second(loader, sampler, args.epochs, device))
    base = best["workers decode"]
    print_table(("data path", "images / s (wall)", "vs workers decode"),
                [(name, fmt_rate(rate), fmt_ratio(rate, base)) for name, rate in best.items()])


if __name__ == "__main__":
    main()
