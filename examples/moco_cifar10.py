"""Tutorial: MoCo v2 on CIFAR-10 with the packaged recipe, scored by k-NN.

Pretrains with the packaged recipe ``cifar10/mocov2`` (the official MoCo CIFAR-10 demo's settings
with MoCo v2's MLP head: a CIFAR ResNet-18, 200 epochs of batch 512, a queue of 4,096 keys) through
``selfsup train``, scores the test split with ``selfsup eval knn`` (weighted k-NN, k=200, T=0.1, the
demo's monitor) next to an untrained backbone of the same architecture, and draws the pictures
(``selfsup eval pictures``). Full run on CIFAR-10 (the recipe as written: a GPU job)::

    python examples/moco_cifar10.py --root /path/to/data

``--root`` is the folder holding ``cifar-10-batches-py/`` (``data_batch_1`` ... ``data_batch_5``,
``test_batch``, ``batches.meta``); ``--download`` lets torchvision fetch it there first.

Without internet, ``--generated`` writes a stand-in in the same files (2,000 training and 1,000
test 32x32 images of ten drawn shapes in random colours, seed 0) and trains on it at a CPU budget:
the recipe with the narrow ``resnet_small`` backbone (width 16), batch 256, a queue of 1,024 keys
and six epochs, scored with k=20 (3 minutes 6 seconds on a 2-core CPU shared with other jobs)::

    python examples/moco_cifar10.py --generated

``--tiny`` (the test suite) is ``--generated`` with 300 training images and one epoch.
"""
from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import torch

import selfsup
from selfsup.cli import main as selfsup_cli

SHAPES = ["disc", "square", "triangle", "ring", "plus", "stripes", "checkers", "cross", "dots", "frame"]

STAND_IN_EPOCHS = 6


def stand_in_budget(tiny: bool) -> list[str]:
    """``selfsup train`` flags and overrides for the stand-in (``tiny``: the test suite's 300 images).

    What of the recipe does not fit the stand-in or a shared CPU: the backbone (the narrow
    ``resnet_small`` of the CPU recipes), the batch, the queue (under one epoch of keys, so an image
    never meets its own older key), fp32, no loader workers, no checkpoints but the last, and a k-NN
    monitor sized to the small data set. The method, views, optimizer and schedule are the recipe's.
    """
    batch, queue = (64, 128) if tiny else (256, 1024)
    return ["backbone.name=resnet_small", "backbone.width=16", "--batch-size", str(batch),
            f"method.queue_size={queue}", "--precision", "32-true", "data.num_workers=0", "checkpoint_every=0",
            "monitor.knn_every=2", "monitor.knn_k=20"]


def draw_shape(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """One ``size x size x 3`` uint8 image of shape ``SHAPES[label]``: random place, size and colours, light noise."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = y - rng.uniform(0.4, 0.6) * size, x - rng.uniform(0.4, 0.6) * size
    r = rng.uniform(0.28, 0.4) * size
    shape = SHAPES[label]
    if shape == "disc":
        mask = dy**2 + dx**2 <= r**2
    elif shape == "square":
        mask = (abs(dy) <= 0.8 * r) & (abs(dx) <= 0.8 * r)
    elif shape == "triangle":
        mask = (dy >= -r) & (dy <= 0.7 * r) & (abs(dx) <= 0.6 * (dy + r))
    elif shape == "ring":
        mask = (dy**2 + dx**2 <= r**2) & (dy**2 + dx**2 >= (0.55 * r) ** 2)
    elif shape == "plus":
        mask = ((abs(dy) <= 0.3 * r) & (abs(dx) <= r)) | ((abs(dx) <= 0.3 * r) & (abs(dy) <= r))
    elif shape == "stripes":  # at a random angle, over the whole image
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 7)
        mask = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period) > 0
    elif shape == "checkers":
        cell = rng.uniform(3, 6)
        mask = (np.floor(x / cell) + np.floor(y / cell)) % 2 == 0
    elif shape == "cross":
        mask = ((abs(dy - dx) <= 2) | (abs(dy + dx) <= 2)) & (abs(dy) <= r) & (abs(dx) <= r)
    elif shape == "dots":
        mask = np.zeros((size, size), dtype=bool)
        for cy, cx in rng.uniform(3, size - 3, (rng.integers(4, 8), 2)):
            mask |= (y - cy) ** 2 + (x - cx) ** 2 <= 4
    else:  # frame: the outline of a square
        mask = (abs(dy) <= r) & (abs(dx) <= r) & ~((abs(dy) <= r - 2.5) & (abs(dx) <= r - 2.5))
    background, colour = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    while np.abs(colour - background).sum() < 0.6:  # keep the shape visible
        colour = rng.uniform(0, 1, 3)
    image = np.where(mask[..., None], colour, background) + rng.normal(0, 0.05, (size, size, 3))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def write_stand_in(root: Path, train: int = 2000, test: int = 1000, seed: int = 0) -> Path:
    """CIFAR-10's python-pickle files under ``root/cifar-10-batches-py/``, filled with drawn shapes.

    ``data_batch_1`` ... ``data_batch_5`` share ``train`` images, ``test_batch`` holds ``test``, and
    ``batches.meta`` names the ten classes; each row is an image's 3,072 bytes, channel-major, as in
    CIFAR-10.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(count: int) -> dict:
        labels = [i % len(SHAPES) for i in range(count)]
        data = np.stack([draw_shape(label, rng).transpose(2, 0, 1).reshape(-1) for label in labels])
        return {"data": data, "labels": labels}

    files = {f"data_batch_{i}": batch(train // 5) for i in range(1, 6)}
    files["test_batch"] = batch(test)
    files["batches.meta"] = {"label_names": SHAPES}
    for name, content in files.items():
        (folder / name).write_bytes(pickle.dumps(content))
    return root


def untrained_like(run_dir: Path, out: Path, seed: int = 0) -> Path:
    """An untrained backbone of the run's architecture, exported with the run's metadata (data, size, normalisation)."""
    metadata = selfsup.backbones.read_metadata(run_dir / "backbone.safetensors")
    torch.manual_seed(seed)
    backbone = selfsup.backbones.get(str(metadata.pop("backbone")), **metadata.pop("backbone_config"))
    out.mkdir(parents=True, exist_ok=True)
    return selfsup.backbones.export_backbone(backbone, out / "backbone.safetensors", **metadata)


def run(args: list[str]) -> None:
    print("$ selfsup " + " ".join(args), flush=True)
    status = selfsup_cli(args)
    if status != 0:
        raise SystemExit(status)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="folder holding cifar-10-batches-py/")
    parser.add_argument("--download", action="store_true", help="fetch CIFAR-10 into --root first")
    parser.add_argument("--generated", action="store_true", help="train on a generated stand-in (no internet)")
    parser.add_argument("--epochs", type=int,
                        help=f"pretraining epochs (default: the recipe's 200; stand-in {STAND_IN_EPOCHS})")
    parser.add_argument("--out", default="runs/examples", help="folder for the stand-in and the run")
    parser.add_argument("--tiny", action="store_true", help="one epoch on a small stand-in (the test suite)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    generated = args.generated or args.tiny
    if not generated and args.root is None:
        parser.error("give --root (the folder holding cifar-10-batches-py/, or where --download puts it), "
                     "or --generated without internet")

    # 1. The data: CIFAR-10 under --root, or a stand-in written in its file format.
    extra: list[str] = []  # what the run adds to the recipe
    root = args.root
    if generated:
        train, test = (300, 100) if args.tiny else (2000, 1000)
        root = str(write_stand_in(out / "cifar10-stand-in", train=train, test=test))
        print(f"NOTE: not CIFAR-10. Training on a generated stand-in in CIFAR-10's file format ({train:,} training "
              f"and {test:,} test 32x32 images of 10 drawn shapes: {', '.join(SHAPES)}) under {root}, at a CPU "
              "budget; its figures say nothing about CIFAR-10.")
        extra = stand_in_budget(args.tiny)
    elif args.download:
        extra = ["--download"]
    epochs = 1 if args.tiny else args.epochs or (STAND_IN_EPOCHS if generated else None)
    if epochs is not None:
        extra = [*extra, "--epochs", str(epochs)]

    # 2. Pretrain with the packaged recipe (its comment names its source and what differs).
    run_dir = out / "moco-cifar10"
    run(["train", "--config", "cifar10/mocov2", "--root", str(root), "--name", run_dir.name, "--output-dir", str(out),
         *extra, "progress_bar=false"])

    # 3. Score the test split with a weighted k-NN on the frozen backbone, and an untrained one for scale.
    k = 20 if generated else 200  # the demo's 200 on CIFAR-10 (5,000 images a class); the stand-in has 200
    scores = {}
    for name, path in (("untrained", untrained_like(run_dir, out / "moco-cifar10-untrained")), ("trained", run_dir)):
        run(["eval", "knn", str(path), "--root", str(root), "--k", str(k), "--temperature", "0.1"])
        results = (path if path.is_dir() else path.parent) / "eval"
        latest = max(results.glob("knn-cifar10-test*.json"), key=lambda p: p.stat().st_mtime)
        scores[name] = json.loads(latest.read_text())["scores"]
    print(f"k-NN (k={k}) top-1 on the test split of {'the generated stand-in' if generated else 'CIFAR-10'}: "
          f"untrained {scores['untrained']['top1']:.2f}%, after MoCo v2 {scores['trained']['top1']:.2f}% "
          f"(top-5 {scores['untrained']['top5']:.2f}% -> {scores['trained']['top5']:.2f}%)")

    # 4. Look at it: test images on a map, and some with their nearest training images.
    run(["eval", "pictures", str(run_dir), "--queries", "8", "--neighbours", "6"])
    return {"untrained_top1": scores["untrained"]["top1"], "trained_top1": scores["trained"]["top1"]}


if __name__ == "__main__":
    main()
