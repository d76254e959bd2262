"""Gradient accumulation (`micro_batches`): each step's batch is trained in equal parts, one
optimizer step takes their mean gradient, and state deferred by every part reaches on_step_end."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from selfsup import data
from selfsup.cli import main
from selfsup.config import load
from selfsup.config.build import DataFacts, build
from selfsup.engine.module import SelfSupervisedModule
from selfsup.errors import ConfigError
from selfsup.methods.base import ViewBatch
from selfsup.training import per_device_batch

MAE = ["--method", "mae", "--backbone", "vit_nano", "backbone.image_size=16", "backbone.patch_size=4",
       "backbone.depth=2", "method.decoder_embed_dim=32", "method.decoder_depth=1", "method.decoder_num_heads=4",
       "optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.lr_scaling=none"]


def test_two_micro_batches_train_as_one_batch_when_the_loss_is_a_mean_over_samples(tmp_path, monkeypatch):
    """MAE's loss is a mean over samples (each masks the same number of patches) and a ViT has no
    batch statistics, so with fixed views and SGD eight steps of 64 in two micro-batches of 32 end with
    the weights of eight steps of 64: the step takes the mean of the micro-batches' gradients. (Random
    views are drawn per micro-batch, so they would differ; the masks come from the global generator
    in the same order.)"""
    def fixed_views(self, images):
        x = torch.nn.functional.interpolate(images.float() / 255, size=16)
        return [x, x.flip(-1).contiguous()]

    monkeypatch.setattr(SelfSupervisedModule, "make_views", fixed_views)
    common = ["--output-dir", str(tmp_path), "--data", "digits", "data.val_fraction=0.6", "monitor.test_at_end=false",
              "--batch-size", "64", "--precision", "32-true", "augment.size=16", "progress_bar=false",
              "monitor.knn_every=0", "--epochs", "1", *MAE]
    for parts in (1, 2):
        assert main(["train", "--name", f"parts{parts}", f"micro_batches={parts}", *common]) == 0
    one, two = (load_file(tmp_path / f"parts{p}" / "backbone.safetensors") for p in (1, 2))
    L.seed_everything(0, verbose=False)
    config = load(overrides=[
        "method.name=mae", "backbone.name=vit_nano", "backbone.image_size=16", "backbone.patch_size=4",
        "backbone.depth=2", "augment.size=16"])
    initial = build(config, DataFacts.of(data.get("digits"))).method.backbone.state_dict()
    moved = max((one[k] - initial[k]).abs().max().item() for k in one if one[k].numel())
    differ = max((one[k] - two[k]).abs().max().item() for k in one if one[k].numel())
    assert moved > 1e-3  # the steps changed the weights
    assert differ < 1e-6 and differ < moved * 1e-3


def test_every_micro_batch_defers_its_memory_rows_and_a_skipped_step_drops_them():
    torch.manual_seed(0)
    config = load(overrides=["method.name=npid", "backbone.name=resnet_tiny", "backbone.width=4", "augment.size=8",
                             "method.proj_output_dim=8"])
    digits = data.get("digits")
    method = build(config, DataFacts.of(digits)).method
    method.criterion.memory.copy_(torch.nn.functional.normalize(torch.randn_like(method.criterion.memory), dim=1))
    method._memory_checked = True
    method.train()
    images = digits.images[:8].float().div(255).expand(-1, 1, -1, -1)

    def part(rows):
        idx = torch.arange(rows.start, rows.stop)
        return ViewBatch([images[rows], images[rows]], torch.zeros(len(idx), dtype=torch.long), idx)

    before = method.criterion.memory.clone()
    method.begin_step(0)
    method.training_step(part(slice(0, 4)))
    method.training_step(part(slice(4, 8)))
    method.end_step()
    changed = (method.criterion.memory != before).any(1)
    assert changed[:8].all() and not changed[8:].any()  # both micro-batches' rows, nothing else

    before = method.criterion.memory.clone()
    method.begin_step(1)
    method.training_step(part(slice(0, 4)))  # this step is skipped: no end_step
    method.begin_step(1)
    method.training_step(part(slice(4, 8)))
    method.end_step()
    changed = (method.criterion.memory != before).any(1)
    assert changed[4:8].all() and not changed[:4].any()


def test_micro_batches_must_divide_each_process_batch():
    with pytest.raises(ConfigError, match="micro_batches"):
        load(overrides=["micro_batches=0"])
    with pytest.raises(ConfigError, match="micro_batches=3 must divide each process's batch.*= 32"):
        per_device_batch(load(overrides=["batch_size=64", "devices=2", "micro_batches=3"]))
    assert per_device_batch(load(overrides=["batch_size=64", "devices=2", "micro_batches=4"])) == 32


# micro-batches under DDP: tests/test_multinode.py trains with two per step on two processes
