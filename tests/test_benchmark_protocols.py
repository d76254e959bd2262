"""The benchmark protocols build a trainable config for every registered method.

``benchmarks/run.py`` trains each method for minutes (CPU) or hours (GPU) under a protocol's
overrides; a wrong key or a size that does not fit (e.g. a mask patch that is not a multiple of the
ViT's patch) must show up here, in seconds, not after an hour of other methods. Each method gets
each protocol's config, then one training step on a small random batch through its own views.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from selfsup.config import load
from selfsup.methods import METHODS, ViewBatch
from selfsup.config.build import DataFacts, build

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import protocols  # noqa: E402
import run as runner  # noqa: E402

CPU = protocols.get("cpu", None, None)
GPU = protocols.get("gpu", None, None)  # without a CIFAR-10 copy: Fashion-MNIST at 32 px
NUM_SAMPLES = 3072  # large enough for DeepCluster-v2's 3,000 prototypes, small enough to cluster fast
BATCH = {"wmse": 128}  # W-MSE whitens sub-batches of w_size = 128


def cpu_config(method: str, teacher: str | None = None):
    """The CPU protocol's config of ``method``; a distilling method gets ``teacher`` (the benchmark
    gives it the table's teacher run)."""
    extra = [f"method.teacher={teacher}"] if method in runner.TEACHERS else []
    return load(CPU.recipe(method), overrides=CPU.overrides(method) + extra)


@pytest.fixture(scope="module")
def teacher_export(tmp_path_factory) -> str:
    """A 1-channel export standing in for the table's teacher run (benchmarks/run.py TEACHERS)."""
    from selfsup import backbones
    from selfsup.backbones.export import export_backbone

    path = tmp_path_factory.mktemp("teacher") / "backbone.safetensors"
    return str(export_backbone(backbones.get("resnet_tiny", width=4, in_channels=1), path, image_size=28))


def test_cpu_protocol_sizes_backbones_for_the_cpu(teacher_export):
    for method in METHODS.names():
        config = cpu_config(method, teacher_export)
        assert config.data.name == "fashion_mnist" and config.data.val_fraction == 0.1, method
        assert config.monitor.test_at_end, method
        name = config.backbone["name"]
        if name.startswith("vit"):
            assert (name, config.backbone["depth"], config.backbone["patch_size"]) == ("vit_nano", 4, 4), method
            assert config.epochs == 4 and config.backbone["image_size"] == 28, method
        else:
            assert name == "resnet_small" and config.backbone["width"] == 16, method
            # a tuned recipe sets its own epochs within the budget (11, or SimSiam's 8: the budget of its
            # parity run against lightly; 4 for the four-view methods, as many views as 8 two-view
            # epochs); the others get the protocol's 8
            tuned = CPU.recipe(method).startswith("fashion_mnist_cpu/")
            assert config.epochs in ((4, 8, 11) if tuned else (8,)), method
    assert cpu_config("mocov2plus").method["queue_size"] == 4096  # the method cards' cpu sizes
    ibot = cpu_config("ibot")
    assert (ibot.method["out_dim"], ibot.method["hidden_dim"], ibot.augment["num_local"]) == (512, 256, 4)
    assert cpu_config("msn").backbone["pos_embed"] == "learned"  # the recipe's other ViT keys survive


def test_tuned_cpu_recipe_is_used_as_it_is():
    tuned = load("fashion_mnist_cpu/simclr")
    config = cpu_config("simclr")
    assert CPU.recipe("simclr") == "fashion_mnist_cpu/simclr"
    assert (config.epochs, config.optimizer, config.augment) == (tuned.epochs, tuned.optimizer, tuned.augment)


@pytest.mark.parametrize("method", sorted(METHODS.names()))
@pytest.mark.parametrize("protocol", [CPU, GPU], ids=["cpu", "gpu"])
def test_protocol_config_trains_one_step(protocol, method, teacher_export):
    torch.manual_seed(0)
    teacher = [f"method.teacher={teacher_export}"] if method in runner.TEACHERS else []
    config = load(protocol.recipe(method), overrides=protocol.overrides(method) + teacher)
    size = 28 if protocol is CPU else 32
    parts = build(config, DataFacts(channels=1, num_samples=NUM_SAMPLES, image_size=size, mean=(0.286,), std=(0.353,)))
    model, views = parts.method, parts.views
    # the GPU protocol's paper-sized networks cost ~2 s per 16-image step on a CPU; 4 images find the
    # same config errors
    n = BATCH.get(method, 16 if protocol is CPU else 4)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    model.configure_training(config.epochs, NUM_SAMPLES // config.batch_size)
    model.on_epoch_start(0, lambda: torch.randn(NUM_SAMPLES, model.feature_dim))
    out = model.training_step(ViewBatch(views=views(images), labels=torch.arange(n) % 10, indices=torch.arange(n)))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_gpu_protocol_is_the_cifar_resnet18_budget():
    config = load(GPU.recipe("simclr"), overrides=GPU.overrides("simclr"))
    assert (config.epochs, config.batch_size, config.backbone["name"], config.backbone["cifar_stem"]) == (
        200, 256, "resnet18", True)
    assert config.augment["size"] == 32 and config.data.name == "fashion_mnist"
    cifar = protocols.get("gpu", None, "data/cifar10")
    assert load(cifar.recipe("simclr"), overrides=cifar.overrides("simclr")).data.name == "cifar10"
