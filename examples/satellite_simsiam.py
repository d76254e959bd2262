"""Tutorial: SimSiam on overhead image tiles, with views that turn and flip them.

An aerial or satellite tile has no "up": a field seen upside down or turned a quarter is the same
field. This script writes a stand-in for such a data set (32x32 RGB tiles of six land-cover
classes, each drawn at a random orientation, seed 0: oriented crop rows, blobby forest, smooth
water, a street grid, a road across grass, a coastline) as a labelled folder (``train/<class>/``
and a held-out ``test/<class>/``), pretrains SimSiam on the training tiles with the packaged CPU
recipe ``fashion_mnist_cpu/simsiam`` (at batch 128) whose views (MoCo v2's, no blur) get
``vertical_flip`` and ``rotate90`` added, then scores the held-out tiles with a weighted k-NN
(``selfsup eval knn --test-data``), for the trained backbone and for an untrained one of the same
architecture, and draws the pictures (``selfsup eval pictures``). Full run, 600 training and 300
held-out tiles (4 minutes 11 seconds on a 2-core CPU shared with other jobs)::

    python examples/satellite_simsiam.py --epochs 8

``--tiny`` trains one epoch on 120 tiles (the test suite's budget).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

import selfsup
from selfsup.cli import main as selfsup_cli

CLASSES = ["cropland", "forest", "water", "urban", "road", "coast"]
SIZE = 32

# MoCo v2's views as the recipe has them (crop, horizontal flip, colour jitter, grayscale; no blur),
# plus the two ops that make a view of an overhead tile turn and flip like one.
VIEWS = [{"count": 2, "ops": [
    {"name": "random_resized_crop", "scale": [0.2, 1.0]},
    {"name": "horizontal_flip", "p": 0.5},
    {"name": "vertical_flip", "p": 0.5},
    {"name": "rotate90", "turns": [0, 1, 2, 3]},
    {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "p": 0.8},
    {"name": "grayscale", "p": 0.2},
]}]


def smooth_noise(rng: np.random.Generator, cells: int, size: int = SIZE) -> np.ndarray:
    """Noise in [0, 1] that varies over about ``size / cells`` pixels (a random grid, bicubic-upsampled)."""
    grid = Image.fromarray(rng.uniform(0, 1, (cells, cells)).astype(np.float32), mode="F")
    return np.clip(np.asarray(grid.resize((size, size), Image.BICUBIC)), 0, 1)


def draw_tile(label: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """One ``size x size x 3`` uint8 tile of ``CLASSES[label]``, drawn in a randomly turned frame."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - size / 2 + 0.5
    angle = rng.uniform(0, 2 * np.pi)
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)  # turned coordinates
    kind = CLASSES[label]
    grass = np.array([0.35, 0.5, 0.25]) * rng.uniform(0.8, 1.2)
    if kind == "cropland":  # parallel rows of crops
        base = rng.choice([[0.55, 0.6, 0.25], [0.6, 0.5, 0.3], [0.4, 0.55, 0.25]]) * rng.uniform(0.85, 1.15)
        rows = 0.5 + 0.5 * np.sin(2 * np.pi * u / rng.uniform(3.0, 6.0) + rng.uniform(0, 2 * np.pi))
        image = base * (0.75 + 0.4 * rows)[..., None]
    elif kind == "forest":  # blobs of canopy with dark gaps
        canopy = smooth_noise(rng, int(rng.integers(6, 10)))
        image = np.array([0.12, 0.3, 0.12]) * rng.uniform(0.8, 1.2) * (0.5 + canopy)[..., None]
    elif kind == "water":  # smooth blue, slowly varying
        depth = smooth_noise(rng, 3)
        image = np.array([0.12, 0.25, 0.5]) * rng.uniform(0.8, 1.2) * (0.8 + 0.4 * depth)[..., None]
    elif kind == "urban":  # a grid of roofs between streets
        cell = rng.uniform(6.0, 9.0)
        iu, iv = np.floor(u / cell), np.floor(v / cell)
        fu, fv = u / cell - iu, v / cell - iv
        roof = (fu > 0.25) & (fv > 0.25)
        shade = 0.45 + 0.35 * np.abs(np.sin(iu * 12.9898 + iv * 78.233 + rng.uniform(0, 100)))  # one per block
        image = np.where(roof[..., None], shade[..., None] * np.array([1.0, 0.95, 0.9]), np.array([0.3, 0.3, 0.32]))
    elif kind == "road":  # a paved band with a centre line across grass
        offset = rng.uniform(-6, 6)
        width = rng.uniform(2.0, 3.5)
        image = grass * (0.8 + 0.4 * smooth_noise(rng, 6))[..., None]
        image = np.where((np.abs(v - offset) < width)[..., None], np.array([0.45, 0.45, 0.47]), image)
        image = np.where((np.abs(v - offset) < 0.4)[..., None], np.array([0.9, 0.9, 0.8]), image)
    else:  # coast: sand meets water along a wavy line
        shore = v - rng.uniform(-6, 6) + 2.0 * np.sin(u / rng.uniform(3.0, 6.0))
        sand = np.array([0.8, 0.72, 0.5]) * rng.uniform(0.85, 1.1)
        sea = np.array([0.12, 0.3, 0.55]) * rng.uniform(0.8, 1.2)
        image = np.where((shore > 0)[..., None], sea, sand) * (0.9 + 0.2 * smooth_noise(rng, 4))[..., None]
    image = image * rng.uniform(0.8, 1.2) + rng.normal(0, 0.03, (size, size, 3))  # lighting and sensor noise
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def write_tiles(root: Path, train_per_class: int, test_per_class: int, seed: int = 0) -> tuple[Path, Path]:
    """The tiles as PNGs in ``root/train/<class>/`` and ``root/test/<class>/``."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(draw_tile(label, rng)).save(folder / f"{i:04d}.png")
    return root / "train", root / "test"


def recipe(out: Path, epochs: int, batch_size: int) -> Path:
    """The packaged ``fashion_mnist_cpu/simsiam`` recipe with the tiles' views, size and data, as a YAML file."""
    config = selfsup.config.read_yaml("fashion_mnist_cpu/simsiam")
    config["augment"] = {"size": SIZE, "views": VIEWS}
    config["data"] = {"num_workers": 0}  # the data set comes from the command line (--data FOLDER)
    config["monitor"] = {**config["monitor"], "knn_every": 0, "test_at_end": False}  # scored once, after training
    config.update(epochs=epochs, batch_size=batch_size, checkpoint_every=0)
    path = out / "satellite-simsiam.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def untrained_like(run_dir: Path, out: Path, seed: int = 0) -> Path:
    """An untrained backbone of the run's architecture, exported with the run's metadata (size, normalisation)."""
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


def knn(path: Path, train: Path, test: Path) -> dict[str, float]:
    """``selfsup eval knn`` of ``path`` (k=20) on the held-out folder; the scores of the JSON it writes."""
    run(["eval", "knn", str(path), "--data", str(train), "--test-data", str(test), "--k", "20"])
    results = (path if path.is_dir() else path.parent) / "eval"
    latest = max(results.glob("knn-folder-all*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(latest.read_text())["scores"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default="runs/examples", help="folder for the tiles, the recipe and the runs")
    parser.add_argument("--tiny", action="store_true", help="one epoch on 120 tiles (the test suite)")
    args = parser.parse_args(argv)
    epochs, batch_size, (train_count, test_count) = (1, 32, (20, 10)) if args.tiny else (args.epochs, 128, (100, 50))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. A labelled folder of tiles: one sub-folder per land-cover class, the held-out tiles in a second tree.
    train, test = write_tiles(out / "satellite-tiles", train_count, test_count)
    print(f"wrote {train_count * len(CLASSES)} training and {test_count * len(CLASSES)} held-out {SIZE}x{SIZE} "
          f"tiles of {len(CLASSES)} classes ({', '.join(CLASSES)}) under {out / 'satellite-tiles'}")

    # 2. Pretrain SimSiam on the training tiles (labels unused) with views that turn and flip them.
    config = recipe(out, epochs, batch_size)
    print(f"wrote {config}: fashion_mnist_cpu/simsiam, {epochs} epoch(s), two views of each tile made by")
    for op in VIEWS[0]["ops"]:
        print(f"  {json.dumps(op)}")
    run_dir = out / "satellite-simsiam"
    run(["train", "--config", str(config), "--data", str(train), "--name", run_dir.name, "--output-dir", str(out),
         "progress_bar=false"])

    # 3. Score the held-out tiles: the trained backbone, and an untrained one of the same architecture.
    trained = knn(run_dir, train, test)
    untrained = knn(untrained_like(run_dir, out / "satellite-untrained"), train, test)
    print(f"held-out tiles, k-NN (k=20) top-1: untrained {untrained['top1']:.2f}%, "
          f"after {epochs} epoch(s) of SimSiam {trained['top1']:.2f}%")

    # 4. Look at it: the training tiles on a map, and some tiles with their nearest neighbours.
    run(["eval", "pictures", str(run_dir), "--queries", "8", "--neighbours", "6"])
    return {"untrained_top1": untrained["top1"], "trained_top1": trained["top1"]}


if __name__ == "__main__":
    main()
