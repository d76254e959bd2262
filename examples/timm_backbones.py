"""Tutorial: a timm backbone pretrained by selfsup, then loaded back into timm.

Any model of timm (github.com/huggingface/pytorch-image-models) is a selfsup backbone by name:
``backbone.name=timm:<model>``, built with ``pretrained=False`` and no classifier, so its forward
gives pooled features. This script takes timm's ``resnet10t``, scores it untrained on the built-in
digits (scikit-learn's 8x8 digits, read at 32 px), pretrains it with SimCLR through
``selfsup train``, scores it again, exports it in timm's own key layout (``selfsup export RUN
--format timm``) and loads that file into ``timm.create_model`` as a timm user would, checking that
both give the same features. Full run (about four minutes on a 2-core CPU)::

    python examples/timm_backbones.py --epochs 30

``--tiny`` trains one epoch (the test suite's budget). Needs timm: ``pip install "selfsup[timm]"``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import safetensors.torch
import timm
import torch

import selfsup
from selfsup.checkpoints import load_backbone
from selfsup.cli import main as selfsup_cli
from selfsup.eval import extract_features, knn_accuracy, linear_probe

MODEL = "resnet10t"  # timm's smallest ResNet (5 M parameters); any timm name works the same way
SIZE = 32


def evaluate(encoder: torch.nn.Module, train_set, test_set) -> dict[str, float]:
    """The frozen encoder's k-NN (k=20) and linear-probe top-1 on the digits' test split."""
    encoder.eval()
    transform = selfsup.augment.EvalTransform(SIZE, train_set.mean, train_set.std)
    train_x, train_y = extract_features(encoder, train_set, transform)
    test_x, test_y = extract_features(encoder, test_set, transform)
    return {"knn_top1": knn_accuracy(train_x, train_y, test_x, test_y, num_classes=10, k=20, temperature=0.1)["top1"],
            "linear_top1": linear_probe(train_x, train_y, test_x, test_y, num_classes=10)["top1"]}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="runs/examples", help="folder for the run")
    parser.add_argument("--tiny", action="store_true", help="one epoch (the test suite)")
    args = parser.parse_args(argv)
    epochs = 1 if args.tiny else args.epochs
    train_set, test_set = selfsup.data.get("digits", split="train"), selfsup.data.get("digits", split="test")

    # 1. A timm model as a selfsup backbone: pooled features, one input channel for the grey digits.
    torch.manual_seed(0)
    untrained = selfsup.backbones.get(f"timm:{MODEL}", in_channels=1)
    parameters = sum(p.numel() for p in untrained.parameters()) / 1e6
    print(f"timm:{MODEL}: {parameters:.2f} M parameters, {untrained.feature_dim}-d features")
    before = evaluate(untrained, train_set, test_set)
    print(f"untrained: k-NN {before['knn_top1']:.2f}%, linear probe {before['linear_top1']:.2f}%")

    # 2. Pretrain with the packaged digits recipe, the backbone swapped for the timm model.
    run = Path(args.out) / "timm-simclr"
    status = selfsup_cli(["train", "--config", "digits/simclr", "--name", run.name, "--output-dir", str(run.parent),
                          f"backbone.name=timm:{MODEL}", f"augment.size={SIZE}", f"epochs={epochs}",
                          "optimizer.warmup_epochs=0" if epochs < 3 else "optimizer.warmup_epochs=2",
                          "checkpoint_every=0", "progress_bar=false"])
    if status != 0:
        raise SystemExit(status)
    trained, _ = load_backbone(run)
    after = evaluate(trained, train_set, test_set)
    print(f"after {epochs} epoch(s) of SimCLR: k-NN {after['knn_top1']:.2f}%, linear probe {after['linear_top1']:.2f}%")

    # 3. Export in timm's key layout and load it the way a timm user would.
    status = selfsup_cli(["export", str(run), "--format", "timm"])
    if status != 0:
        raise SystemExit(status)
    exported = run / "backbone.timm.safetensors"
    build = json.loads(safetensors.safe_open(str(exported), "pt").metadata()["timm"])
    model = timm.create_model(**build)  # e.g. {"model_name": "resnet10t", "num_classes": 0, "in_chans": 1}
    model.load_state_dict(safetensors.torch.load_file(str(exported)))
    model.eval()
    images = torch.rand(4, 1, SIZE, SIZE)
    with torch.no_grad():
        difference = (model(images) - trained(images)).abs().max().item()
    print(f"timm.create_model(**{build}) loads {exported.name}: features differ by at most {difference:.1e}")
    return {**{f"before_{k}": v for k, v in before.items()}, **{f"after_{k}": v for k, v in after.items()},
            "max_difference": difference}


if __name__ == "__main__":
    main()
