"""Every registered method trains through the real engine: one epoch on digits, exported, reloadable.

The family test files check each loss against its formula and each state update; this file checks
the integration: the method's default view recipe, the engine's hooks (configure_training,
on_epoch_start with the data set's features, on_after_backward, on_step_end), num_samples filled
in by the engine, checkpoint and export.
"""
from __future__ import annotations

import json

import pytest

import selfsup.methods as methods
from selfsup.cli import main

SMALL = {  # heads, queues and cluster counts shrunk to the test's 1,347 images
    "barlowtwins": ["proj_hidden_dim=32", "proj_output_dim=32"],
    "byol": ["proj_hidden_dim=32", "pred_hidden_dim=32", "proj_output_dim=16"],
    "dcl": ["proj_output_dim=16"],
    "dclw": ["proj_output_dim=16"],
    "deepcluster": ["num_clusters=20", "pca_dim=8", "kmeans_iterations=3"],
    "deepclusterv2": ["proj_hidden_dim=32", "proj_output_dim=16", "num_prototypes=[20, 20]", "kmeans_iterations=3"],
    "densecl": ["proj_output_dim=16", "queue_size=256", "lambda_warmup_steps=5"],
    "dino": ["out_dim=64", "hidden_dim=32", "bottleneck_dim=16"],
    "mocov1": ["proj_output_dim=16", "queue_size=256"],
    "mocov2": ["proj_output_dim=16", "queue_size=256"],
    "mocov2plus": ["proj_hidden_dim=32", "proj_output_dim=16", "queue_size=256"],
    "mocov3": ["proj_hidden_dim=32", "proj_output_dim=16", "pred_hidden_dim=32"],
    "nnclr": ["proj_hidden_dim=32", "proj_output_dim=16", "pred_hidden_dim=32", "queue_size=256"],
    "npid": ["proj_output_dim=16", "num_negatives=64"],
    "odc": ["neck_hidden_dim=32", "neck_output_dim=16", "num_clusters=20", "min_cluster_size=2", "kmeans_iterations=3"],
    "relativeloc": ["hidden_dim=32"],
    "ressl": ["proj_hidden_dim=32", "proj_output_dim=16", "queue_size=256"],
    "rotation": [],
    "simclr": ["proj_output_dim=16"],
    "simsiam": ["proj_dim=32", "pred_hidden_dim=8"],
    "supcon": ["proj_output_dim=16"],
    "swav": ["proj_hidden_dim=32", "proj_output_dim=16", "num_prototypes=20", "freeze_prototypes_iters=5"],
    "tico": ["proj_hidden_dim=32", "proj_output_dim=16"],
    "vicreg": ["proj_hidden_dim=32", "proj_output_dim=32"],
    "wmse": ["proj_hidden_dim=32", "proj_output_dim=8", "w_size=32"],
}


VIT_ONLY = {  # masked-image methods that need a ViT backbone, shrunk the same way
    "a2mim": ["mask_patch_size=8"],
    "aim": ["head_blocks=1", "head_width=32"],
    "cae": ["min_block_patches=4", "regressor_depth=1", "decoder_depth=1"],
    "mae": ["decoder_embed_dim=32", "decoder_depth=1", "decoder_num_heads=4"],
    "maskfeat": ["cell_size=2", "min_block_patches=4"],
    "simmim": ["mask_patch_size=8"],
    "ibot": ["out_dim=64", "patch_out_dim=64", "hidden_dim=32", "bottleneck_dim=16"],
    "dinov2": ["out_dim=64", "hidden_dim=32", "bottleneck_dim=16"],
    "ijepa": ["predictor_dim=32", "predictor_depth=1", "predictor_heads=2", "min_keep=2"],
    "msn": ["num_prototypes=64", "hidden_dim=32", "output_dim=16"],
    "pmsn": ["num_prototypes=64", "hidden_dim=32", "output_dim=16"],
}
FEW_VIEWS = {"msn": ["augment.num_focal=2"], "pmsn": ["augment.num_focal=2"]}
LOCAL_CROPS_OF_8 = {"dino", "ibot", "dinov2"}  # multi-crop: local crops a multiple of the ViT's patch
TINY_VIT = ["--backbone", "vit_tiny", "backbone.image_size=16", "backbone.patch_size=4", "backbone.depth=2",
            "optimizer.name=adamw", "optimizer.lr=1e-3", "optimizer.lr_scaling=none"]


def test_every_registered_method_is_listed_here():
    assert set(methods.names()) == set(SMALL) | set(VIT_ONLY)


@pytest.mark.parametrize("name", sorted(SMALL) + sorted(VIT_ONLY))
def test_one_epoch_through_the_engine(name, tmp_path):
    backbone = TINY_VIT if name in VIT_ONLY else ["--backbone", "resnet_tiny", "backbone.width=4"]
    options = VIT_ONLY.get(name, SMALL.get(name))
    args = ["train", "--output-dir", str(tmp_path), "--name", name, "--epochs", "1", "--method", name,
            "--data", "digits", *backbone, "--batch-size", "64", "--precision", "32-true",
            "augment.size=16", "progress_bar=false", "monitor.knn_k=20",
            *[f"method.{option}" for option in options],
            *(["augment.local_size=8"] if name in LOCAL_CROPS_OF_8 and name in VIT_ONLY else []),
            *FEW_VIEWS.get(name, [])]
    assert main(args) == 0
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    assert summary["steps"] == 1347 // 64
    assert 0 <= summary["metrics"]["knn/top1"] <= 100
    assert main(["eval", "knn", str(tmp_path / name), "--k", "20"]) == 0


@pytest.mark.parametrize("name", ["simclr", "dino"])
def test_a_vit_trains_through_the_engine(name, tmp_path):
    """DINO's local crops are smaller than the ViT's image size: the position embedding adapts."""
    args = ["train", "--output-dir", str(tmp_path), "--name", name, "--epochs", "1", "--method", name,
            "--data", "digits", "--backbone", "vit_tiny", "--batch-size", "64", "--precision", "32-true",
            "backbone.image_size=16", "backbone.patch_size=4", "backbone.depth=2", "augment.size=16",
            "progress_bar=false", "monitor.knn_k=20", "optimizer.name=adamw", "optimizer.lr=1e-3",
            "optimizer.lr_scaling=none", *[f"method.{option}" for option in SMALL[name]]]
    if name == "dino":
        args.append("augment.local_size=8")
    assert main(args) == 0
    assert main(["eval", "knn", str(tmp_path / name), "--k", "20"]) == 0


def test_a2mim_also_trains_a_resnet_through_the_engine(tmp_path):
    args = ["train", "--output-dir", str(tmp_path), "--name", "a2mim", "--epochs", "1", "--method", "a2mim",
            "--data", "digits", "--backbone", "resnet_tiny", "backbone.width=4", "--batch-size", "64",
            "--precision", "32-true", "augment.size=16", "progress_bar=false", "monitor.knn_k=20",
            "method.mask_patch_size=8"]
    assert main(args) == 0
    assert main(["eval", "knn", str(tmp_path / "a2mim"), "--k", "20"]) == 0
