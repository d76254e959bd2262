"""Tutorial: pretrain a ResNet-18 with selfsup, then use it as the backbone of an object detector.

The usual case for self-supervised pretraining: many images, boxes drawn on few of them. This script
makes a small detection set with no download: 64 px colour canvases holding one to three digits
(scikit-learn's 8x8 digits, enlarged to 16-28 px and coloured) at random places, each with its box
and class. It pretrains torchvision's ResNet-18 with SimCLR on the 1,000 training canvases as an
unlabelled image folder (``selfsup train --data FOLDER``; no boxes), exports the backbone under
torchvision's parameter names (``selfsup export RUN --format torchvision --out backbone.pth``),
loads that file into the ResNet body of torchvision's Faster R-CNN with FPN, and fine-tunes the
detector on the boxes of 300 of those canvases, once from the pretrained backbone and once from a
random one (same seed, same 300 steps). Both are scored by mAP at IoU 0.5 (computed below) on 200
held-out canvases made from the digits' test split. Full run (about five minutes on a busy 2-core
CPU with one PyTorch thread, ``OMP_NUM_THREADS=1``; there, with other jobs running, two threads
were several times slower)::

    python examples/detection_transfer.py --epochs 10 --steps 300

``--tiny`` uses 16 training and 4 held-out canvases, one pretraining epoch and two detector steps of
batch 2 (the test suite's budget).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, box_iou

import selfsup
from selfsup.cli import main as selfsup_cli

CANVAS = 64  # side of the detection images, in pixels; the detector sees them at this size
CLASSES = 10  # the ten digits; torchvision's detectors count the background as class 0, so labels are 1..10
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what selfsup normalises RGB folders with (ImageNet's)

Canvas = tuple[np.ndarray, np.ndarray, np.ndarray]  # (H, W, 3) uint8 image, (n, 4) boxes x1 y1 x2 y2, (n,) labels 1..10


def make_canvases(split: str, count: int, seed: int) -> list[Canvas]:
    """``count`` canvases of one to three digits of ``split`` ("train" or "test"), each digit
    enlarged to 16-28 px, in a random bright colour on a random dark background; boxes are tight
    around the digit's ink, and two boxes of a canvas overlap with IoU under 0.1."""
    digits = selfsup.data.get("digits", split=split)
    rng = np.random.default_rng(seed)
    canvases = []
    for _ in range(count):
        background = rng.uniform(0, 90, size=3)
        image = np.clip(background + rng.normal(0, 8, size=(CANVAS, CANVAS, 3)), 0, 255)
        boxes: list[list[float]] = []
        labels: list[int] = []
        for _ in range(rng.integers(1, 4)):
            pixels, label = digits[int(rng.integers(len(digits)))][:2]
            side = int(rng.integers(16, 29))
            ink = np.asarray(Image.fromarray(pixels[0].numpy()).resize((side, side), Image.BILINEAR)) / 255.0
            rows, cols = np.nonzero(ink > 0.3)
            for _attempt in range(20):
                x, y = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
                box = [x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1]
                if not boxes or box_iou(torch.tensor([box], dtype=torch.float), torch.tensor(boxes)).max() < 0.1:
                    break
            else:
                continue  # no free place for this digit: leave it out
            colour = rng.uniform(150, 255, size=3)
            patch = image[y:y + side, x:x + side]
            image[y:y + side, x:x + side] = patch * (1 - ink[..., None]) + colour * ink[..., None]
            boxes.append([float(v) for v in box])
            labels.append(int(label) + 1)
        canvases.append((image.astype(np.uint8), np.array(boxes, dtype=np.float32), np.array(labels, dtype=np.int64)))
    return canvases


def write_folder(canvases: list[Canvas], folder: Path) -> Path:
    """The canvases as PNGs in ``folder`` (no class sub-folders: an unlabelled image folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (image, _, _) in enumerate(canvases):
        Image.fromarray(image).save(folder / f"{i:05d}.png")
    return folder


def run(args: list[str]) -> None:
    print("$ selfsup " + " ".join(args))
    status = selfsup_cli(args)
    if status != 0:
        raise SystemExit(status)


def build_detector(backbone_file: Path | None, seed: int) -> FasterRCNN:
    """torchvision's Faster R-CNN with a ResNet-18 FPN, sized for 64 px images on a CPU.

    The same ``seed`` gives the same FPN and heads whatever the backbone; with ``backbone_file``
    the ResNet body takes its weights (a torchvision-layout state dict), else it stays random.
    BatchNorm layers are ordinary, trained ones in both cases (torchvision's default,
    ``FrozenBatchNorm2d``, would leave a random backbone without normalisation)."""
    torch.manual_seed(seed)
    fpn = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                              norm_layer=nn.BatchNorm2d, returned_layers=[2, 3, 4])  # strides 8, 16, 32 (+ 64)
    if backbone_file is not None:
        state = torch.load(backbone_file, weights_only=True)
        missing, unexpected = fpn.body.load_state_dict(state, strict=False)
        # IntermediateLayerGetter keeps conv1 .. layer4 and drops avgpool and fc (the export has neither).
        print(f"{backbone_file.name} -> Faster R-CNN body: {len(state)} tensors, missing keys {sorted(missing)}, "
              f"unexpected keys {sorted(unexpected)}")
        assert not missing and all(key.startswith(("fc.", "avgpool.")) for key in unexpected)
    levels = ["0", "1", "2"]  # the three returned ResNet stages; the FPN's extra pooled level has no RoIs
    return FasterRCNN(
        fpn, num_classes=None, min_size=CANVAS, max_size=CANVAS, image_mean=list(MEAN), image_std=list(STD),
        rpn_anchor_generator=AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4),
        rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=64, box_batch_size_per_image=32,
        box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=1),
        box_head=TwoMLPHead(fpn.out_channels * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, CLASSES + 1))


def as_inputs(canvases: list[Canvas]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    images = [torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image, _, _ in canvases]
    targets = [{"boxes": torch.from_numpy(boxes).reshape(-1, 4), "labels": torch.from_numpy(labels)}
               for _, boxes, labels in canvases]
    return images, targets


def fine_tune(model: FasterRCNN, canvases: list[Canvas], steps: int, batch_size: int, seed: int) -> float:
    """``steps`` SGD steps on random batches of ``canvases`` (linear warm-up, then cosine decay); the
    mean total loss of the last 20 steps."""
    images, targets = as_inputs(canvases)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + np.cos(np.pi * max(0, s - warmup) / max(1, steps - warmup)))))
    order = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for _ in range(steps):
        batch = torch.randint(len(images), (batch_size,), generator=order).tolist()
        loss = sum(model([images[i] for i in batch], [targets[i] for i in batch]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return float(np.mean(losses[-20:]))


@torch.no_grad()
def detect(model: FasterRCNN, canvases: list[Canvas]) -> list[dict[str, Tensor]]:
    model.eval()
    images, _ = as_inputs(canvases)
    return [out for start in range(0, len(images), 32) for out in model(images[start:start + 32])]


def mean_average_precision(predictions: list[dict[str, Tensor]], truths: list[dict[str, Tensor]],
                           num_classes: int, iou_threshold: float = 0.5) -> float:
    """mAP at one IoU threshold, in percent: for each class, detections of all images ranked by
    score; a detection is a true positive if it overlaps a not yet matched true box of its class
    and image by at least ``iou_threshold`` (the best such box is taken), else a false positive.
    AP is the area under the precision-recall curve, precision first made non-increasing (PASCAL
    VOC 2010's all-point interpolation); classes without true boxes are left out of the mean."""
    aps = []
    for c in range(1, num_classes + 1):
        ranked: list[tuple[float, bool]] = []  # (score, true positive) of every detection of class c
        num_true = 0
        for pred, truth in zip(predictions, truths):
            true_boxes = truth["boxes"][truth["labels"] == c]
            num_true += len(true_boxes)
            keep = pred["labels"] == c
            boxes, scores = pred["boxes"][keep], pred["scores"][keep]
            order = scores.argsort(descending=True)
            overlaps = box_iou(boxes[order], true_boxes) if len(true_boxes) else torch.zeros(len(order), 0)
            matched = torch.zeros(len(true_boxes), dtype=torch.bool)
            for rank, i in enumerate(order.tolist()):
                candidates = overlaps[rank].masked_fill(matched, -1.0)
                best = int(candidates.argmax()) if len(true_boxes) else -1
                hit = best >= 0 and float(candidates[best]) >= iou_threshold
                if hit:
                    matched[best] = True
                ranked.append((float(scores[i]), hit))
        if num_true == 0:
            continue
        ranked.sort(key=lambda item: -item[0])
        hits = np.array([hit for _, hit in ranked], dtype=float)
        true_positives, false_positives = np.cumsum(hits), np.cumsum(1 - hits)
        recall = np.concatenate([[0.0], true_positives / num_true])
        precision = np.concatenate([[1.0], true_positives / np.maximum(true_positives + false_positives, 1)])
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or beyond
        aps.append(float(np.sum((recall[1:] - recall[:-1]) * precision[1:])))
    return 100 * float(np.mean(aps)) if aps else 0.0


def draw(canvases: list[Canvas], results: dict[str, list[dict[str, Tensor]]], path: Path) -> None:
    """A row of held-out canvases per model: the true boxes dashed white; in yellow, as many of the
    model's highest-scoring detections as the canvas holds digits, each with its digit and score."""
    figure = Figure(figsize=(2 * len(canvases), 2.2 * len(results)), dpi=90)
    axes = figure.subplots(len(results), len(canvases), squeeze=False)
    for row, (name, predictions) in enumerate(results.items()):
        for col, ((image, boxes, _), pred) in enumerate(zip(canvases, predictions)):
            ax = axes[row][col]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for x1, y1, x2, y2 in boxes:
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", ls="--", lw=1))
            for i in pred["scores"].argsort(descending=True)[:len(boxes)].tolist():
                x1, y1, x2, y2 = pred["boxes"][i].tolist()
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="yellow", lw=1.5))
                ax.text(x1, y1 - 1, f"{int(pred['labels'][i]) - 1}: {float(pred['scores'][i]):.2f}", color="yellow",
                        fontsize=8, bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.5, "linewidth": 0})
            if col == 0:
                ax.set_ylabel(name)
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="SimCLR epochs over the training canvases")
    parser.add_argument("--steps", type=int, default=300, help="detector fine-tuning steps (each model)")
    parser.add_argument("--out", default="runs/examples", help="folder for the canvases, the run and the picture")
    parser.add_argument("--tiny", action="store_true", help="a few canvases and steps (the test suite)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    # canvases: all training ones (pretraining, unlabelled), the labelled ones among them, held-out ones
    pretrain_count, labelled_count, held_out_count = (16, 4, 4) if args.tiny else (1000, 300, 200)
    epochs, steps, batch_size = (1, 2, 2) if args.tiny else (args.epochs, args.steps, 4)

    # 1. Canvases: training ones from the digits' training split, held-out ones from its test split.
    train = make_canvases("train", pretrain_count, seed=0)
    held_out = make_canvases("test", held_out_count, seed=1)
    labelled = train[:labelled_count]
    folder = write_folder(train, out / "canvases" / "train")
    print(f"wrote {len(train)} training canvases ({CANVAS} px, {sum(len(b) for _, b, _ in train)} digits) to "
          f"{folder}; the boxes of {len(labelled)} of them train the detector, {len(held_out)} held-out canvases "
          f"({sum(len(b) for _, b, _ in held_out)} digits) score it")

    # 2. Pretrain torchvision's ResNet-18 with SimCLR on the unlabelled folder: RGB (a folder's default) and
    # the ImageNet stem that torchvision's detectors build (selfsup's default resnet18 has the CIFAR stem).
    run_dir = out / "canvas-simclr"
    run(["train", "--data", str(folder), "--method", "simclr", "--name", run_dir.name, "--output-dir", str(out),
         "backbone.name=resnet18", "backbone.cifar_stem=false", f"data.image_size={CANVAS}", "data.eval_split=none",
         "augment.recipe=simclr", "augment.size=32", "augment.scale=[0.2,1.0]", "augment.strength=0.5",
         "augment.blur_p=0.0", "augment.hflip_p=0.0", "method.temperature=0.5", f"epochs={epochs}",
         f"batch_size={min(128, pretrain_count)}", f"optimizer.warmup_epochs={min(1, epochs - 1)}",
         "checkpoint_every=0", "data.num_workers=0", "progress_bar=false"])
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train/loss_epoch"] for row in logged if "train/loss_epoch" in row]
    print(f"SimCLR loss: {losses[0]:.3f} after the first epoch, {losses[-1]:.3f} after the last "
          f"(chance: log(2 x batch - 1) = {math.log(2 * min(128, pretrain_count) - 1):.3f})")

    # 3. Export under torchvision's names: a torch.save dict of tensors, as torchvision.models.resnet18 loads.
    backbone_file = run_dir / "backbone.pth"
    run(["export", str(run_dir), "--format", "torchvision", "--out", str(backbone_file), "--overwrite"])

    # 4-5. The same detector from the pretrained and from a random backbone, fine-tuned and scored alike.
    truths = as_inputs(held_out)[1]
    scores, results = {}, {}
    for name, weights in (("pretrained backbone", backbone_file), ("random init", None)):
        model = build_detector(weights, seed=0)
        loss = fine_tune(model, labelled, steps=steps, batch_size=batch_size, seed=0)
        results[name] = detect(model, held_out)
        scores[name] = mean_average_precision(results[name], truths, CLASSES)
        # the same with every digit one class: are the digits found, whatever they are called?
        found = mean_average_precision([{**p, "labels": torch.ones_like(p["labels"])} for p in results[name]],
                                       [{**t, "labels": torch.ones_like(t["labels"])} for t in truths], 1)
        print(f"{name}: mAP@0.5 {scores[name]:.2f}%, class-agnostic AP@0.5 {found:.2f}% on {len(held_out)} "
              f"held-out canvases (after {steps} steps of batch {batch_size}; training loss {loss:.3f})")

    picture = out / "detections.png"
    draw(held_out[:6], {name: predictions[:6] for name, predictions in results.items()}, picture)
    print(f"picture: {picture}")
    return scores


if __name__ == "__main__":
    main()
