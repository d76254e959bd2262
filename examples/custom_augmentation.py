"""Tutorial: a user-defined augmentation op in a YAML recipe.

Defines ``gaussian_noise`` (add noise of a per-image random strength), registers it, draws a grid
of the views it makes, then trains SimCLR on the built-in digits twice from one YAML recipe, with
and without the new op, and prints both k-NN accuracies. Full run (about a minute on a 2-core CPU)::

    python examples/custom_augmentation.py --epochs 50

``--tiny`` trains one epoch of each (the test suite's budget).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
import yaml

import selfsup
from selfsup.augment import RandomOp, register_op


@register_op("gaussian_noise")
@dataclass
class GaussianNoise(RandomOp):
    """Add Gaussian noise of a standard deviation drawn per image from [0, max_sigma], with probability ``p``."""

    p: float = 0.5
    max_sigma: float = 0.2

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        # every random number comes from `generator` (the op's own stream): a resumed run draws the same
        sigma = torch.rand(batch, generator=generator, device=generator.device) * self.max_sigma
        noise = torch.randn(batch, 1, height, width, generator=generator, device=generator.device)
        return {"sigma": sigma, "noise": noise}

    def transform(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        # images: floats in [0, 1], before normalisation: the chosen samples (on a GPU the whole
        # batch, kept where chosen), so treat each image on its own
        noisy = images + params["sigma"].view(-1, 1, 1, 1) * params["noise"].to(images.dtype)
        return noisy.clamp(0.0, 1.0)


VIEWS_WITH_NOISE = [{"count": 2, "ops": [
    {"name": "random_resized_crop", "scale": [0.4, 1.0]},
    {"name": "gaussian_noise", "p": 0.8, "max_sigma": 0.3},
]}]
VIEWS_WITHOUT = [{"count": 2, "ops": [{"name": "random_resized_crop", "scale": [0.4, 1.0]}]}]


def recipe(views: list[dict], epochs: int, out: Path, name: str) -> Path:
    """digits/simclr's settings with the views written out as a list of ops."""
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "method": {"name": "simclr", "temperature": 0.5, "proj_output_dim": 64},
        "backbone": {"name": "resnet_small", "width": 16},
        "augment": {"size": 16, "views": views},
        "data": {"name": "digits", "num_workers": 0},  # 1,347 small images: loader workers cost more than they save
        "optimizer": {"name": "sgd", "lr": 0.3, "weight_decay": 5.0e-4, "warmup_epochs": min(2, epochs - 1)},
        "monitor": {"knn_every": 0},
        "epochs": epochs, "batch_size": 256, "checkpoint_every": epochs, "name": name, "output_dir": str(out), "progress_bar": False,
    }))
    return path


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--out", default="runs/examples/custom-augmentation")
    parser.add_argument("--tiny", action="store_true", help="one epoch each (the test suite)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = 1 if args.tiny else args.epochs

    # 1. The op in Python: eight digits, then two views of each (rows: image, view 1, view 2).
    digits = selfsup.data.get("digits", split="train")
    images = torch.stack([digits[i][0] for i in range(8)])
    make_views = selfsup.augment.get("custom", views=VIEWS_WITH_NOISE, size=16, mean=(0.0,), std=(1.0,), seed=0)
    views = make_views(images)
    resized = torch.nn.functional.interpolate(images.float() / 255, size=16, mode="bilinear", antialias=True)
    grid = torch.cat([resized, *[v.clamp(0, 1) for v in views]])
    torchvision.utils.save_image(torchvision.transforms.functional.resize(grid, [64, 64], antialias=False),
                                 out / "views.png", nrow=8, padding=2, pad_value=1.0)
    print(f"wrote {out / 'views.png'}")

    # 2. The op in a YAML recipe: the same name and options, trained with and without it.
    accuracies = {}
    for name, views_spec in (("with-noise", VIEWS_WITH_NOISE), ("without-noise", VIEWS_WITHOUT)):
        config = selfsup.config.load(recipe(views_spec, epochs, out, name))
        result = selfsup.training.train(config)
        accuracies[name] = result.metrics["knn/top1"]
        print(f"{name}: k-NN top-1 {accuracies[name]:.2f}% on the held-out digits after {epochs} epoch(s)")
    return accuracies


if __name__ == "__main__":
    main()
