"""Tutorial: a useful encoder in 15 minutes on a CPU.

"Useful" is measured, not assumed: the encoder must classify held-out images better than the raw
pixels do under the same k-NN protocol (cosine, k=200, T=0.1), and better than the same network
left untrained. This script scores the raw pixels of Fashion-MNIST (28 px grey clothing photos),
pretrains SimCLR with the packaged ``fashion_mnist_cpu/simclr`` recipe (``resnet_small`` width 16,
bf16 autocast + channels-last where the CPU has bf16 units, 11 epochs, 10% of the training split
held out for choosing settings), which scores the test split once at the end, then fits a linear
probe on the frozen features. Full run (8.8 minutes on a 2-core CPU with bf16 units; Fashion-MNIST's four
IDX files in ``--root``, e.g. from ``--download`` on a machine with internet)::

    python examples/encoder_in_15_minutes.py --root data/fashion-mnist

``--tiny`` writes a small generated stand-in in Fashion-MNIST's file format and trains one epoch
on it (the test suite's budget; its figures mean nothing).
"""
from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch

import selfsup
from selfsup.cli import main as selfsup_cli
from selfsup.eval import knn_accuracy


def write_stand_in(root: Path, train: int = 384, test: int = 128, seed: int = 0) -> Path:
    """Fashion-MNIST's four gzipped IDX files with generated 28 x 28 images of 10 simple shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):  # a bar whose angle and thickness depend on the class, plus noise
            angle = np.pi * label / 10 + rng.normal(0, 0.05)
            distance = np.abs((xx - 14) * np.sin(angle) - (yy - 14) * np.cos(angle))
            images[i] = np.clip(255 * (distance < 2 + label % 3) + rng.normal(0, 30, (28, 28)), 0, 255)
        for kind, array, dims in (("images-idx3", images, images.shape), ("labels-idx1", labels, labels.shape)):
            header = bytes([0, 0, 8, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
            with gzip.open(root / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())
    return root


def raw_pixel_knn(root: Path) -> float:
    """k-NN top-1 (cosine, k=200, T=0.1) of the test split on the training split's raw pixels,
    normalised with the data set's mean and standard deviation as the encoder's inputs are."""
    train, test = (selfsup.data.get("fashion_mnist", root=str(root), split=s) for s in ("train", "test"))
    mean, std = train.mean[0], train.std[0]
    as_features = lambda ds: (torch.stack([ds[i][0] for i in range(len(ds))]).flatten(1).float() / 255 - mean) / std  # noqa: E731
    labels = lambda ds: torch.as_tensor([ds[i][1] for i in range(len(ds))])  # noqa: E731
    scores = knn_accuracy(as_features(train), labels(train), as_features(test), labels(test), num_classes=10)
    return scores["top1"]


def run(args: list[str]) -> None:
    print("$ selfsup " + " ".join(args), flush=True)
    status = selfsup_cli(args)
    if status != 0:
        raise SystemExit(status)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/fashion-mnist", help="Fashion-MNIST's folder (its IDX files)")
    parser.add_argument("--out", default="runs/examples", help="folder for the run")
    parser.add_argument("--tiny", action="store_true", help="a generated stand-in, one epoch (the test suite)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    root = write_stand_in(out / "fashion-mnist-stand-in") if args.tiny else Path(args.root)
    budget = ["--epochs", "1", "--batch-size", "64", "monitor.knn_every=1"] if args.tiny else []
    started = time.perf_counter()

    # 1. The bar to clear: k-NN on the raw pixels, the same protocol as the encoder's.
    pixels = raw_pixel_knn(root)
    print(f"raw pixels: k-NN top-1 {pixels:.2f}% on the test split")

    # 2. Pretrain with the packaged CPU recipe: validation k-NN while training, the test split once at the end.
    run(["train", "--config", "fashion_mnist_cpu/simclr", "--root", str(root), "--name", "encoder-15min",
         "--output-dir", str(out), "progress_bar=false", *budget])
    run_dir = out / "encoder-15min"
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = summary["metrics"]
    print(f"trained in {summary['wall_time_s'] / 60:.1f} min at {summary['train_images_per_s']:.0f} images/s "
          f"({summary['precision']}): k-NN top-1 {metrics['knn/top1']:.2f}% on the held-out 10% of the training "
          f"split, {metrics['test/knn_top1']:.2f}% on the test split (scored once, at the end)")

    # 3. A linear probe on the frozen features: weight decay chosen on a validation part, test scored once.
    run(["eval", "linear", str(run_dir), *(["--epochs", "5", "--solver", "sgd"] if args.tiny else [])])
    linear = json.loads(next((run_dir / "eval").glob("linear-*.json")).read_text())
    print(f"linear probe: top-1 {linear['scores']['top1']:.2f}% on the test split")
    print(f"encoder vs raw pixels (k-NN, test): {metrics['test/knn_top1']:.2f}% vs {pixels:.2f}%; "
          f"all of this took {(time.perf_counter() - started) / 60:.1f} min")
    return {"pixels": pixels, "knn": metrics["test/knn_top1"], "linear": linear["scores"]["top1"]}


if __name__ == "__main__":
    main()
