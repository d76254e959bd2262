"""What cropping from whole folder images (``data.folder_crop: full``) changes against centred squares
(``center``), on a folder of real pictures whose objects do not sit in the middle.

The folder is made from Fashion-MNIST's training split (real photographs of clothing, 28 x 28): each
item is pasted at a random horizontal offset into a 28 x 42 black picture (its own background is
black), so a centred 28 x 28 square cuts up to 7 columns off an item and never sees the picture's
sides, while whole-image crops can. Both settings train the same SimCLR recipe
(``fashion_mnist_cpu/simclr``: ``resnet_small`` width 16, 28 px views; the folder decoded at 32 px
through the decoded caches), with ``data.val_fraction`` held out, and are scored by the run's own
k-NN monitor on that validation part, read the way evaluation reads folders (centred squares), so
only the training crops differ. The settings take turns, seed by seed. No test split is touched.

    nice -n 10 .venv/bin/python benchmarks/folder_crop.py --root ../shared/data/fashion-mnist
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selfsup import data  # noqa: E402

WIDTH = 42  # the pictures are 28 high and 42 wide (3:2)


def make_folder(fashion_root: str, out: Path, count: int, seed: int) -> None:
    """``count`` training items as 28 x 42 PNGs in class folders, each at a random horizontal offset."""
    items = data.get("fashion_mnist", root=fashion_root, split="train")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(items))[:count]
    for n, i in enumerate(chosen):
        image, label, _ = items[int(i)]
        picture = np.zeros((28, WIDTH), dtype=np.uint8)
        left = int(rng.integers(0, WIDTH - 28 + 1))
        picture[:, left:left + 28] = image[0].numpy()
        folder = out / items.classes[label].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(folder / f"{n:05d}.png")


def train(folder: Path, runs: Path, crop: str, seed: int, epochs: int) -> dict:
    """One run; its final validation k-NN and wall time."""
    name = f"{crop}-seed{seed}"
    command = [sys.executable, "-m", "selfsup", "train", "--config", "fashion_mnist_cpu/simclr", "--data", str(folder),
               "--epochs", str(epochs), "--name", name, "--output-dir", str(runs), f"seed={seed}",
               f"data.folder_crop={crop}", "data.image_size=32", "data.channels=1", "data.cache=true",
               "data.val_fraction=0.1", "monitor.test_at_end=false", f"monitor.knn_every={epochs}",
               "monitor.knn_max_train=60000", "progress_bar=false", "checkpoint_every=0"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"run {name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    summary = json.loads((runs / name / "summary.json").read_text())
    return {"crop": crop, "seed": seed, "knn": summary["metrics"]["knn/top1"], "wall_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="Fashion-MNIST's folder (the IDX files)")
    parser.add_argument("--images", type=int, default=20000, help="pictures in the folder")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "folder-crop.md"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clothing-off-centre"
        make_folder(args.root, folder, args.images, seed=0)
        rows = [train(folder, Path(tmp) / "runs", crop, seed, args.epochs)
                for seed in args.seeds for crop in ("center", "full")]
    lines = [f"Fashion-MNIST items at random horizontal offsets in 28 x 42 pictures ({args.images:,} pictures, "
             f"10% held out for validation), SimCLR `fashion_mnist_cpu/simclr` for {args.epochs} epochs at 32 px; "
             "validation k-NN top-1 (k=200, T=0.1) of the final model, centred squares at evaluation in both rows.",
             f"Command: `python benchmarks/folder_crop.py --root FASHION_MNIST --images {args.images} --epochs "
             f"{args.epochs} --seeds {' '.join(map(str, args.seeds))}`", "",
             "| data.folder_crop | seed | val k-NN top-1 | wall s |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['crop']} | {r['seed']} | {r['knn']:.2f} | {r['wall_s']:.0f} |" for r in rows]
    for crop in ("center", "full"):
        scores = [r["knn"] for r in rows if r["crop"] == crop]
        lines.append(f"| {crop} | mean | {np.mean(scores):.2f} | |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
