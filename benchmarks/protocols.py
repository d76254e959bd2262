"""The benchmark protocols: which data, which recipe per method, and how long to train.

A protocol turns a method name into a training config (a packaged recipe plus overrides); every
method in one table is trained and evaluated the same way.

- ``cpu``: Fashion-MNIST, 28 px, about 10 minutes per method on a 2-core CPU. A method with a
  tuned CPU recipe (``selfsup/configs/fashion_mnist_cpu/<method>.yaml``) uses it; any other method
  uses its Fashion-MNIST recipe with the CPU budget imposed: 8 epochs, batch 256, one warm-up epoch,
  and ``resnet_small`` width 16 (128-d). A ViT recipe keeps a ViT, shrunk to the same kind of cost:
  ``vit_nano`` (96-d, 3 heads) with 4 blocks on 4 px patches (7 x 7 tokens) for 4 epochs, and its
  heads, decoders, predictors and local crops shrunk as their method cards say (the published
  sizes are meant for 384-d+ ViTs on GPUs, and would cost many times the backbone here). Measured
  here in one run (``benchmarks/speed/backbone_throughput.py``: fwd + bwd, bf16, batch 512 of 28 px
  views): resnet_small width 16 2,087 views/s, this ViT 1,062 (0.51x), with 6 blocks 751, 6 blocks
  on 7 px patches 2,097, vit_tiny with 4 blocks on 7 px patches 1,205, vit_tiny (12 blocks, 4 px)
  145; so a ViT gets half the epochs to stay near the same wall time, and keeps the 7 x 7 grid that
  masking needs. Multi-crop ViT methods with a teacher (DINOv2, iBOT) still cost about twice that.
  A ResNet method whose own parts would set the pace gets them shrunk likewise. These per-method
  sizes are the methods' own: ``card.cpu`` (method options) and ``card.cpu_views`` (view options)
  of each :class:`~selfsup.methods.MethodCard`, read by :func:`cpu_method_sizes`.
  Each run holds out 10% of the training split for validation (``data.val_fraction``) and is
  scored on the test split once, at the end.
- ``gpu``: CIFAR-style ResNet-18 (a ViT recipe keeps its ViT), 200 epochs, batch 256, each method's
  CIFAR-10 recipe; on CIFAR-10 when a local copy is given, else on Fashion-MNIST at 32 px.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from selfsup.config import packaged_recipes
from selfsup.config.load import read_yaml
from selfsup.methods import METHODS

CPU_BUDGET = ["epochs=8", "batch_size=256", "optimizer.warmup_epochs=1", "checkpoint_every=4"]
CPU_VIT = ["backbone.name=vit_nano", "backbone.depth=4", "backbone.patch_size=4", "backbone.drop_path_rate=0.0",
           "epochs=4", "checkpoint_every=2", "monitor.knn_every=2"]


def cpu_method_sizes(method: str) -> list[str]:
    """The CPU protocol's sizes of ``method``'s own parts (heads, queues, local crops), from its card.

    Example:
        >>> cpu_method_sizes("mocov2plus")
        ['method.queue_size=4096']
    """
    return METHODS.card(method).overrides("cpu")


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
    small_vit: list[str] = field(default_factory=list)
    method_sizes: Callable[[str], list[str]] | None = None  # per-method overrides after the backbone's

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
        recipe_backbone = read_yaml(recipe).get("backbone") or {}  # read, not built: a teacher may be missing
        if str(recipe_backbone.get("name", "")).startswith(("vit", "swin")):
            # a new backbone name drops the recipe's other backbone keys, so the ones the small ViT
            # does not set (image size, position embedding, registers) are given again
            ours = {o.split("=")[0] for o in self.small_vit}
            kept = [f"backbone.{k}={v}" for k, v in recipe_backbone.items() if f"backbone.{k}" not in ours]
            backbone = self.small_vit + kept + self._method_sizes(method) if self.small_vit else []
        else:
            backbone = self.small_backbone + self._method_sizes(method)
        return data + self.budget + EVAL_OVERRIDES + backbone + self.extra  # later overrides win

    def _method_sizes(self, method: str) -> list[str]:
        return self.method_sizes(method) if self.method_sizes else []


def get(name: str, root: str | None, cifar10_root: str | None) -> Protocol:
    """The protocol ``name`` (``cpu`` or ``gpu``) for the given data folders."""
    if name == "cpu":
        return Protocol("cpu", "fashion_mnist", root, ["fashion_mnist_cpu", "fashion_mnist"], CPU_BUDGET,
                        ["backbone.name=resnet_small", "backbone.width=16"], small_vit=CPU_VIT,
                        method_sizes=cpu_method_sizes)
    if name == "gpu":
        data, data_root, size = ("cifar10", cifar10_root, []) if cifar10_root else (
            "fashion_mnist", root, ["augment.size=32"])
        budget = ["epochs=200", "batch_size=256", "checkpoint_every=20", "data.num_workers=8"]
        backbone = ["backbone.name=resnet18", "backbone.cifar_stem=true"]
        return Protocol("gpu", data, data_root, ["cifar10"], budget, backbone, extra=size)
    raise SystemExit(f"unknown protocol {name!r}; expected cpu or gpu")
