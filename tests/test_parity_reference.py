"""The parity benchmark's lightly references (benchmarks/parity/lightly_reference.py) build the network
selfsup's row trains. Skipped unless lightly is installed (``bash benchmarks/parity/setup.sh``)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import selfsup

pytest.importorskip("lightly", reason="lightly is not installed (bash benchmarks/parity/setup.sh)")
pytest.importorskip("timm")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "parity"))
from lightly_reference import REFERENCES  # noqa: E402


def trainable(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> dict[str, int]:
    return {name: p.numel() for name, p in module.named_parameters() if p.requires_grad and not name.endswith(skip)}


def test_mae_reference_trains_a_vit_of_the_rows_dimensions():
    reference = REFERENCES["mae"]
    assert reference.backbone_row.startswith("vit_nano (depth=4, patch_size=4")
    vit, feature_dim = reference.backbone(1)
    ours = selfsup.backbones.get("vit_nano", image_size=28, patch_size=4, depth=4, in_channels=1)
    assert feature_dim == ours.feature_dim == 96
    model = reference.build(vit, feature_dim)
    assert not vit.pos_embed.requires_grad  # lightly's MAE: fixed sine-cosine position embedding, as ours
    # the same trainable weights, apart from selfsup's mask token (its ViT's own, for SimMIM-style methods)
    assert sum(trainable(vit).values()) == sum(trainable(ours, skip=("mask_token",)).values())

    torch.manual_seed(0)
    images = torch.randn(4, 1, 28, 28)
    loss = model.loss([images], epoch=0, epochs=4)
    loss.backward()
    assert torch.isfinite(loss) and vit.cls_token.grad is not None and vit.cls_token.grad.abs().sum() > 0
    assert vit(images).shape == (4, 96)  # what the parity run scores: the class token


def test_mae_reference_optimiser_leaves_biases_and_norms_undecayed():
    reference = REFERENCES["mae"]
    vit, feature_dim = reference.backbone(1)
    model = reference.build(vit, feature_dim)
    optimizer = reference.optimizer(model, batch_size=256)
    decayed, undecayed = optimizer.param_groups
    assert (decayed["weight_decay"], undecayed["weight_decay"]) == (0.05, 0.0)
    assert optimizer.defaults["lr"] == pytest.approx(1.5e-4) and optimizer.defaults["betas"] == (0.9, 0.95)
    assert all(p.ndim <= 1 for p in undecayed["params"]) and all(p.ndim > 1 for p in decayed["params"])


def test_simmim_reference_is_scored_on_the_mean_patch_token_its_loss_trains():
    reference = REFERENCES["simmim"]
    vit, feature_dim = reference.backbone(1)
    model = reference.build(vit, feature_dim)
    final = []

    def keep_final_tokens(module, inputs, output):
        output.retain_grad()
        final.append(output)

    vit.norm.register_forward_hook(keep_final_tokens)
    torch.manual_seed(0)
    images = torch.randn(4, 1, 28, 28)
    model.loss([images], epoch=0, epochs=4).backward()
    # the loss reaches the final patch tokens, never the final class token (what the file's probe reads)
    assert final[0].grad[:, 0].abs().sum() == 0 and final[0].grad[:, 1:].abs().sum() > 0
    encoder = reference.scored(vit)
    tokens = vit.forward_features(images)
    assert torch.allclose(encoder(images), tokens[:, 1:].mean(dim=1))  # normed patch tokens, averaged
    ours = selfsup.backbones.get("vit_nano", image_size=28, patch_size=4, depth=4, in_channels=1, pool="avg")
    assert encoder(images).shape == ours(images).shape == (4, 96)
