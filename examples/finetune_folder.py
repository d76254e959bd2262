"""Tutorial: pretrain on a folder of images, then fine-tune the checkpoint on its labelled classes.

The usual layout of a labelled image set is one folder per class, with the held-out images in a
second tree of the same class folders (``train/cat/1.png``, ``test/cat/7.png``). This script writes
the built-in digits in that layout (1,347 training and 450 held-out PNGs), pretrains SimCLR on the
training folder with the packaged ``digits/simclr`` recipe (``--data FOLDER``; the class folders are
ignored while pretraining), then evaluates the checkpoint on the labels: a linear probe on frozen
features, and fine-tuning of the whole backbone with a new linear head (``selfsup eval finetune``,
MAE's recipe), each scoring the held-out folder once (``--test-data``). Full run (about two minutes
on a 2-core CPU)::

    python examples/finetune_folder.py --epochs 100 --finetune-epochs 30

``--tiny`` runs one epoch of each (the test suite's budget).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

import selfsup
from selfsup.cli import main as selfsup_cli


def write_folders(root: Path) -> tuple[Path, Path]:
    """The digits as PNGs in ``root/train/<digit>/`` and ``root/test/<digit>/``."""
    for split in ("train", "test"):
        digits = selfsup.data.get("digits", split=split)
        for i in range(len(digits)):
            image, label = digits[i][0], digits[i][1]
            folder = root / split / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")
    return root / "train", root / "test"


def run(args: list[str]) -> None:
    print("$ selfsup " + " ".join(args))
    status = selfsup_cli(args)
    if status != 0:
        raise SystemExit(status)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=100, help="pretraining epochs")
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--out", default="runs/examples", help="folder for the images and the run")
    parser.add_argument("--tiny", action="store_true", help="one epoch of each (the test suite)")
    args = parser.parse_args(argv)
    epochs, finetune_epochs = (1, 1) if args.tiny else (args.epochs, args.finetune_epochs)
    out = Path(args.out)

    # 1. A labelled folder: one sub-folder per class, the held-out images in a second tree.
    train, test = write_folders(out / "digit-folders")
    print(f"wrote {sum(1 for _ in train.rglob('*.png'))} training and {sum(1 for _ in test.rglob('*.png'))} "
          f"held-out PNGs under {out / 'digit-folders'}")

    # 2. Pretrain on the training folder (its labels unused), with the packaged recipe.
    run_dir = out / "folder-simclr"
    run(["train", "--config", "digits/simclr", "--data", str(train), "--name", run_dir.name,
         "--output-dir", str(out), f"epochs={epochs}", f"optimizer.warmup_epochs={min(2, epochs - 1)}",
         "checkpoint_every=0", "data.num_workers=0", "progress_bar=false"])

    # 3. The labels: a linear probe on frozen features, then fine-tuning, each scoring the held-out folder.
    results = {}
    for protocol, extra in (("linear", []), ("finetune", ["--epochs", str(finetune_epochs)])):
        run(["eval", protocol, str(run_dir), "--data", str(train), "--test-data", str(test), *extra])
        result = json.loads(max((run_dir / "eval").glob(f"{protocol}-folder-*.json"),
                                key=lambda p: p.stat().st_mtime).read_text())
        results[protocol] = result["scores"]["top1"]
    print(f"held-out top-1: linear probe {results['linear']:.2f}%, fine-tuned {results['finetune']:.2f}%")
    return results


if __name__ == "__main__":
    main()
