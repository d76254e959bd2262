"""Tutorial: SimCLR on clothing (Fashion-MNIST), ending with the neighbour grid and the embedding map.

Trains with the packaged CPU recipe ``fashion_mnist_cpu/simclr`` through the same commands a user
types (``selfsup train``, then ``selfsup eval pictures``), here called from Python. Full run (about
two minutes per epoch on a 2-core CPU)::

    python examples/clothing_simclr.py --root /path/to/fashion-mnist --epochs 3

``--root`` is the folder holding ``FashionMNIST/raw/`` (or the raw files); ``--download`` fetches
them. ``--tiny`` trains two steps on a generated stand-in in Fashion-MNIST's file format, the
way the test suite runs this script.
"""
from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np

from selfsup.cli import main as selfsup


def write_stand_in(root: Path, train: int = 512, test: int = 128) -> Path:
    """Fashion-MNIST's four idx files, filled with random 28x28 images of 10 classes."""
    rng = np.random.default_rng(0)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            header = np.array([magic, *array.shape], dtype=">i4").tobytes()
            with gzip.open(raw / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())
    return root


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="folder holding FashionMNIST/raw/")
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="runs/examples", help="folder for the run")
    parser.add_argument("--tiny", action="store_true", help="two steps on generated data (the test suite)")
    args = parser.parse_args(argv)

    budget = ["--epochs", str(args.epochs)]
    root = args.root
    if args.tiny:
        root = str(write_stand_in(Path(tempfile.mkdtemp())))
        budget = ["--epochs", "1", "--batch-size", "256"]
    if root is None and not args.download:
        parser.error("give --root (the folder holding FashionMNIST/raw/), --download or --tiny")

    # 1. Pretrain. The recipe names its source and the validation runs it was chosen from.
    run = Path(args.out) / "clothing-simclr"
    status = selfsup(["train", "--config", "fashion_mnist_cpu/simclr", "--name", run.name,
                      "--output-dir", str(run.parent), *(["--root", root] if root else ["--download"]),
                      *budget, "progress_bar=false", "monitor.test_at_end=true"])
    assert status == 0, f"selfsup train exited with {status}"
    summary = json.loads((run / "summary.json").read_text())
    metrics = summary["metrics"]
    print(f"k-NN top-1: {metrics['knn/top1']:.2f}% on the held-out 10% of the training split, "
          f"{metrics['test/knn_top1']:.2f}% on the test split (scored once, at the end)")

    # 2. Look at it: held-out embeddings on a map, and each query's nearest training images.
    status = selfsup(["eval", "pictures", str(run), "--queries", "8", "--neighbours", "6"])  # prints the paths
    assert status == 0, f"selfsup eval pictures exited with {status}"
    return {"summary": summary, "pictures": sorted((run / "eval" / "pictures").glob("*.png"))}


if __name__ == "__main__":
    main()
