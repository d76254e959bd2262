"""Every registered method trains through the real engine: one epoch on digits, exported, reloadable.

The family test files check each loss against its formula and each state update; this file checks
the integration: the method's default view recipe, the engine's hooks (configure_training,
on_epoch_start with the data set's features, begin_step, on_after_backward, end_step), num_samples
filled in by the engine, checkpoint and export.
"""
from __future__ import annotations

import json

import pytest

import selfsup.methods as methods
from method_sizes import ENGINE_VIT, engine_args
from selfsup.cli import main

@pytest.mark.parametrize("name", methods.names())
def test_one_epoch_through_the_engine(name, tmp_path):
    """Each method on the backbone its card puts first (resnet_tiny, else the tiny ViT) with its card's sizes,
    for one epoch of half of digits' training split (673 images: 10 steps of 64; the other half is
    the k-NN monitor's held-out split)."""
    args = ["train", "--output-dir", str(tmp_path), "--name", name, "--epochs", "1", "--method", name,
            "--data", "digits", "data.val_fraction=0.5", "--batch-size", "64", "--precision", "32-true",
            "augment.size=16", "progress_bar=false", "monitor.knn_k=20", "log_every_n_steps=5", *engine_args(name)]
    assert main(args) == 0
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["steps"] == 673 // 64
    assert 0 <= summary["metrics"]["knn/top1"] <= 100
    lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    probe_trained = any("probe/train_loss" in line for line in lines)
    # the held-out probe score only where the probe trained (not a chance-level number for MIM methods)
    assert ("probe/val_top1" in summary["metrics"]) == probe_trained, name
    assert main(["eval", "knn", str(tmp_path / name), "--k", "20"]) == 0


@pytest.mark.parametrize("name", ["simclr", "dino"])
def test_a_vit_trains_through_the_engine(name, tmp_path):
    """DINO's local crops are smaller than the ViT's image size: the position embedding adapts."""
    args = ["train", "--output-dir", str(tmp_path), "--name", name, "--epochs", "1", "--method", name,
            "--data", "digits", "--backbone", "vit_tiny", "--batch-size", "64", "--precision", "32-true",
            "backbone.image_size=16", "backbone.patch_size=4", "backbone.depth=2", "augment.size=16",
            "progress_bar=false", "monitor.knn_k=20", "optimizer.name=adamw", "optimizer.lr=1e-3",
            "optimizer.lr_scaling=none", *methods.card(name).overrides("small")]  # dino: 8 px local crops
    assert main(args) == 0
    assert main(["eval", "knn", str(tmp_path / name), "--k", "20"]) == 0


def test_a2mim_also_trains_a_vit_through_the_engine(tmp_path):
    """The generic test above trains A2MIM on a ResNet (the first kind its card accepts)."""
    args = ["train", "--output-dir", str(tmp_path), "--name", "a2mim", "--epochs", "1", "--method", "a2mim",
            "--data", "digits", *ENGINE_VIT, "--batch-size", "64", "--precision", "32-true", "augment.size=16",
            "progress_bar=false", "monitor.knn_k=20", *methods.card("a2mim").overrides("small")]
    assert main(args) == 0
    assert main(["eval", "knn", str(tmp_path / "a2mim"), "--k", "20"]) == 0
