"""The benchmark protocols: which data, which recipe per method, and how long to train.

A protocol turns a method name into a training config (a packaged recipe plus overrides); every
method in one table is trained and evaluated the same way.

- ``cpu``: Fashion-MNIST, 28 px, about 10 minutes per method on a 2-core CPU. A method with a
  tuned CPU recipe (``selfsup/configs/fashion_mnist_cpu/<method>.yaml``) uses it; any other method
  uses its Fashion-MNIST recipe with the CPU budget imposed: 8 epochs, batch 256, one warm-up epoch,
  and ``resnet_small`` width 16 (128-d). A ViT recipe keeps a ViT, shrunk to the same kind of cost:
  ``vit_nano`` (96-d, 3 heads) with 4 blocks on 4 px patches (7 x 7 tokens) for 4 epochs, and its
  heads, decoders, predictors and local crops shrunk as :data:`CPU_VIT_METHOD` lists (the published
  sizes are meant for 384-d+ ViTs on GPUs, and would cost many times the backbone here). Measured
  here in one run (``benchmarks/speed/backbone_throughput.py``: fwd + bwd, bf16, batch 512 of 28 px
  views): resnet_small width 16 2,087 views/s, this ViT 1,062 (0.51x), with 6 blocks 751, 6 blocks
  on 7 px patches 2,097, vit_tiny with 4 blocks on 7 px patches 1,205, vit_tiny (12 blocks, 4 px)
  145; so a ViT gets half the epochs to stay near the same wall time, and keeps the 7 x 7 grid that
  masking needs. Multi-crop ViT methods with a teacher (DINOv2, iBOT) still cost about twice that.
  A ResNet method whose own parts would set the pace gets them shrunk likewise (:data:`CPU_CNN_METHOD`).
  Each run holds out 10% of the training split for validation (``data.val_fraction``) and is
  scored on the test split once, at the end.
- ``gpu``: CIFAR-style ResNet-18 (a ViT recipe keeps its ViT), 200 epochs, batch 256, each method's
  CIFAR-10 recipe; on CIFAR-10 when a local copy is given, else on Fashion-MNIST at 32 px.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from selfsup.config import load, packaged_recipes

CPU_BUDGET = ["epochs=8", "batch_size=256", "optimizer.warmup_epochs=1", "checkpoint_every=4"]
CPU_VIT = ["backbone.name=vit_nano", "backbone.depth=4", "backbone.patch_size=4", "backbone.drop_path_rate=0.0",
           "epochs=4", "checkpoint_every=2", "monitor.knn_every=2"]
CPU_VIT_METHOD = {  # per method: the parts beside the backbone, sized for a 96-d, 4-block ViT
    "mae": ["method.decoder_embed_dim=96", "method.decoder_depth=2", "method.decoder_num_heads=3"],
    "aim": ["method.head_width=96", "method.head_blocks=2"],
    "cae": ["method.regressor_depth=2", "method.decoder_depth=2"],
    "ijepa": ["method.predictor_dim=96", "method.predictor_depth=2"],
    # DINOv2 / iBOT run their head on every patch token of the global views, so the head's size, not
    # the ViT's, sets the pace: with hidden 512 / out 1,024 a first run went at 112 images/s (~32 min
    # for 4 epochs; stopped), so the head is cut to hidden 256, bottleneck 128, out 512
    "dinov2": ["method.out_dim=512", "method.hidden_dim=256", "method.bottleneck_dim=128", "augment.num_local=4"],
    "ibot": ["method.out_dim=512", "method.patch_out_dim=512", "method.hidden_dim=256", "method.bottleneck_dim=128",
             "augment.num_local=4"],
    "msn": ["method.hidden_dim=512", "augment.num_focal=4"],
    "pmsn": ["method.hidden_dim=512", "augment.num_focal=4"],
}
CPU_CNN_METHOD = {  # per method: parts beside a ResNet that would set the pace on two cores
    # two queues of 32,768 256-d keys (solo-learn's CIFAR recipe): on a 2-core AVX2 CPU in fp32 a
    # resnet_small step took ~1.3 s (190 images/s, ~70 min for 8 epochs; stopped at step 450); with
    # MoCo v2's 4,096 (its CIFAR recipe's size; 7.6% of the 54,000 training images) 0.8 s (320 images/s)
    "mocov2plus": ["method.queue_size=4096"],
}
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
    small_vit_method: dict[str, list[str]] = field(default_factory=dict)
    small_backbone_method: dict[str, list[str]] = field(default_factory=dict)

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
        recipe_backbone = load(recipe).backbone
        if str(recipe_backbone.get("name", "")).startswith(("vit", "swin")):
            # a new backbone name drops the recipe's other backbone keys, so the ones the small ViT
            # does not set (image size, position embedding, registers) are given again
            ours = {o.split("=")[0] for o in self.small_vit}
            kept = [f"backbone.{k}={v}" for k, v in recipe_backbone.items() if f"backbone.{k}" not in ours]
            backbone = self.small_vit + kept + self.small_vit_method.get(method, []) if self.small_vit else []
        else:
            backbone = self.small_backbone + self.small_backbone_method.get(method, [])
        return data + self.budget + EVAL_OVERRIDES + backbone + self.extra  # later overrides win


def get(name: str, root: str | None, cifar10_root: str | None) -> Protocol:
    """The protocol ``name`` (``cpu`` or ``gpu``) for the given data folders."""
    if name == "cpu":
        return Protocol("cpu", "fashion_mnist", root, ["fashion_mnist_cpu", "fashion_mnist"], CPU_BUDGET,
                        ["backbone.name=resnet_small", "backbone.width=16"], small_vit=CPU_VIT,
                        small_vit_method=CPU_VIT_METHOD, small_backbone_method=CPU_CNN_METHOD)
    if name == "gpu":
        data, data_root, size = ("cifar10", cifar10_root, []) if cifar10_root else (
            "fashion_mnist", root, ["augment.size=32"])
        budget = ["epochs=200", "batch_size=256", "checkpoint_every=20", "data.num_workers=8"]
        backbone = ["backbone.name=resnet18", "backbone.cifar_stem=true"]
        return Protocol("gpu", data, data_root, ["cifar10"], budget, backbone, extra=size)
    raise SystemExit(f"unknown protocol {name!r}; expected cpu or gpu")
