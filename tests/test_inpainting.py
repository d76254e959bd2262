"""Context Encoders (reconstruction only): the weighted loss against a loop reference, the hidden
region and its visible border, and the centre prediction learning on a fixed batch.
"""
from __future__ import annotations

import pytest
import torch

from selfsup import backbones, methods
from selfsup.losses import InpaintingLoss, centre_weights
from selfsup.methods import ViewBatch
from selfsup.methods.inpainting import centre_box


def ref_loss(p: torch.Tensor, t: torch.Tensor, overlap: int, weight: float) -> float:
    b, c, s, _ = p.shape
    num = den = 0.0
    for i in range(s):
        for j in range(s):
            w = 1.0 if overlap <= i < s - overlap and overlap <= j < s - overlap else weight
            for k in range(b):
                for ch in range(c):
                    num += w * float(p[k, ch, i, j] - t[k, ch, i, j]) ** 2
            den += w * b * c
    return num / den


@pytest.mark.parametrize("overlap", [0, 1, 2])
def test_inpainting_loss_matches_reference(overlap: int) -> None:
    g = torch.Generator().manual_seed(overlap)
    p, t = torch.randn(2, 3, 6, 6, generator=g), torch.randn(2, 3, 6, 6, generator=g)
    assert float(InpaintingLoss(overlap, 10.0)(p, t)) == pytest.approx(ref_loss(p, t, overlap, 10.0), rel=1e-6)
    with pytest.raises(ValueError, match="overlap"):
        centre_weights(4, 3, 10.0)


def test_the_centre_is_hidden_except_its_border_and_the_paper_sizes_hold() -> None:
    assert centre_box(128, 0.5) == (32, 64)
    method = methods.get("inpainting", backbone=backbones.get("resnet_tiny", width=4))
    assert method.overlap_for(64) == 4 and method.overlap_for(14) == 1
    seen = {}
    original = method.backbone.feature_map

    def recording(images: torch.Tensor) -> torch.Tensor:
        seen["x"] = images.clone()
        return original(images)

    method.backbone.feature_map = recording
    x = torch.ones(2, 3, 28, 28)
    method.training_step(ViewBatch(views=[x], labels=None, indices=torch.arange(2)))
    hidden = seen["x"]
    start, side = centre_box(28, 0.5)  # 7, 14; border 1
    assert hidden[..., start + 1:start + side - 1, start + 1:start + side - 1].eq(0).all()
    assert hidden.eq(0).sum() == 2 * 3 * 12 * 12 and torch.equal(x, torch.ones(2, 3, 28, 28))  # input untouched


def test_the_centre_prediction_improves_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    method = methods.get("inpainting", backbone=backbones.get("resnet_tiny", width=4), decoder_width=8).train()
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(8):
        out = method.training_step(ViewBatch(views=[x], labels=None, indices=torch.arange(8)))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    assert out.features.shape == (8, method.feature_dim)
