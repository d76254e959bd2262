"""The benchmark protocols: which data, which recipe per method, and how long to train.

A protocol turns a method name into a training config (a packaged recipe plus overrides); every
method in one table is trained and evaluated the same way.

- ``cpu``: Fashion-MNIST, 28 px, about 10 minutes per method on a 2-core CPU. A method with a
  tuned CPU recipe (``selfsup/configs/fashion_mnist_cpu/<method>.yaml``) uses it; any other method
  uses its Fashion-MNIST recipe with the CPU budget imposed (resnet_small width 16 unless the recipe
  needs a ViT, 8 epochs, batch 256, one warm-up epoch). Each run holds out 10% of the training split
  for validation (``data.val_fraction``) and is scored on the test split once, at the end.
- ``gpu``: CIFAR-style ResNet-18 (a ViT recipe keeps its ViT), 200 epochs, batch 256, each method's
  CIFAR-10 recipe; on CIFAR-10 when a local copy is given, else on Fashion-MNIST at 32 px.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from selfsup.config import load, packaged_recipes

CPU_BUDGET = ["epochs=8", "batch_size=256", "optimizer.warmup_epochs=1", "checkpoint_every=4"]
EVAL_OVERRIDES = ["data.val_fraction=0.1", "monitor.test_at_end=true", "monitor.knn_every=4",
                  "monitor.knn_max_train=60000", "data.num_workers=0"]


@dataclass
class Protocol:
    """One benchmark protocol: data set, recipe choice and budget."""

    name: str
    data: str
    root: str | None
    recipe_dirs: list[str]
    budget: list[str]
    small_backbone: list[str]
    extra: list[str] = field(default_factory=list)

    def recipe(self, method: str) -> str:
        """The first packaged recipe for ``method`` among ``recipe_dirs``."""
        names = set(packaged_recipes())
        for folder in self.recipe_dirs:
            if f"{folder}/{method}" in names:
                return f"{folder}/{method}"
        raise SystemExit(f"no packaged recipe for {method!r} in {self.recipe_dirs}")

    def overrides(self, method: str) -> list[str]:
        """Overrides applied on top of :meth:`recipe` (none beyond the data for a tuned CPU recipe)."""
        recipe = self.recipe(method)
        data = [f"data.name={self.data}"] + ([f"data.root={self.root}"] if self.root else [])
        if recipe.startswith("fashion_mnist_cpu/"):
            return data
        is_vit = str(load(recipe).backbone.get("name", "")).startswith(("vit", "swin"))
        backbone = [] if is_vit else self.small_backbone
        return data + self.budget + backbone + EVAL_OVERRIDES + self.extra


def get(name: str, root: str | None, cifar10_root: str | None) -> Protocol:
    """The protocol ``name`` (``cpu`` or ``gpu``) for the given data folders."""
    if name == "cpu":
        return Protocol("cpu", "fashion_mnist", root, ["fashion_mnist_cpu", "fashion_mnist"], CPU_BUDGET,
                        ["backbone.name=resnet_small", "backbone.width=16"])
    if name == "gpu":
        data, data_root, size = ("cifar10", cifar10_root, []) if cifar10_root else (
            "fashion_mnist", root, ["augment.size=32"])
        budget = ["epochs=200", "batch_size=256", "checkpoint_every=20", "data.num_workers=8"]
        backbone = ["backbone.name=resnet18", "backbone.cifar_stem=true"]
        return Protocol("gpu", data, data_root, ["cifar10"], budget, backbone, extra=size)
    raise SystemExit(f"unknown protocol {name!r}; expected cpu or gpu")
