"""Context Encoders (reconstruction only): the weighted centre loss and the hidden-pixel loss against
loop references, the random-region masks, the hidden centre and its visible border, and both
variants learning on a fixed batch.
"""
from __future__ import annotations

import pytest
import torch

from selfsup import backbones, methods
from selfsup.losses import InpaintingLoss, centre_weights, hidden_pixels_loss
from selfsup.methods import ViewBatch
from selfsup.methods.inpainting import centre_box
from selfsup.nn import random_region_mask


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


def record_backbone_input(method) -> tuple[dict, object]:
    """Make ``method``'s backbone keep a copy of the images it is given under ``seen["x"]``; returns
    ``seen`` and the original ``feature_map``."""
    seen = {}
    original = method.backbone.feature_map

    def recording(images: torch.Tensor) -> torch.Tensor:
        seen["x"] = images.clone()
        return original(images)

    method.backbone.feature_map = recording
    return seen, original


@pytest.mark.parametrize("overlap", [0, 1, 2])
def test_inpainting_loss_matches_reference(overlap: int) -> None:
    g = torch.Generator().manual_seed(overlap)
    p, t = torch.randn(2, 3, 6, 6, generator=g), torch.randn(2, 3, 6, 6, generator=g)
    assert float(InpaintingLoss(overlap, 10.0)(p, t)) == pytest.approx(ref_loss(p, t, overlap, 10.0), rel=1e-6)
    with pytest.raises(ValueError, match="overlap"):
        centre_weights(4, 3, 10.0)


def test_the_centre_is_hidden_except_its_border_and_the_paper_sizes_hold() -> None:
    assert centre_box(128, 0.5) == (32, 64)
    method = methods.get("inpainting", backbone=backbones.get("resnet_tiny", width=4), mask="centre")
    assert method.overlap_for(64) == 4 and method.overlap_for(14) == 1
    seen, original = record_backbone_input(method)
    x = torch.ones(2, 3, 28, 28)
    method.training_step(ViewBatch(views=[x], labels=None, indices=torch.arange(2)))
    hidden = seen["x"]
    start, side = centre_box(28, 0.5)  # 7, 14; border 1
    assert hidden[..., start + 1:start + side - 1, start + 1:start + side - 1].eq(0).all()
    assert hidden.eq(0).sum() == 2 * 3 * 12 * 12 and torch.equal(x, torch.ones(2, 3, 28, 28))  # input untouched


@pytest.mark.parametrize("mask", ["random_region", "centre"])
def test_the_prediction_improves_on_a_fixed_batch(mask: str) -> None:
    torch.manual_seed(0)
    method = methods.get("inpainting", backbone=backbones.get("resnet_tiny", width=4), decoder_width=8,
                         mask=mask).train()
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-2)
    # smooth images, so the visible context says something about the hidden pixels
    x = torch.nn.functional.interpolate(torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(1)),
                                        size=(16, 16), mode="bilinear", align_corners=False)
    losses = []
    for _ in range(8):
        out = method.training_step(ViewBatch(views=[x], labels=None, indices=torch.arange(8)))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    assert out.features.shape == (8, method.feature_dim)


def test_hidden_pixels_loss_matches_a_loop_over_the_hidden_pixels() -> None:
    g = torch.Generator().manual_seed(3)
    p, t = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 3, 5, 5, generator=g)
    hidden = torch.rand(2, 1, 5, 5, generator=g) < 0.3
    num = count = 0.0
    for k in range(2):
        for i in range(5):
            for j in range(5):
                if hidden[k, 0, i, j]:
                    for ch in range(3):
                        num += float(p[k, ch, i, j] - t[k, ch, i, j]) ** 2
                        count += 1
    assert float(hidden_pixels_loss(p, t, hidden)) == pytest.approx(num / count, rel=1e-6)
    with pytest.raises(ValueError, match="mask"):
        hidden_pixels_loss(p, t, hidden[:, :, :4])


def test_random_regions_hide_the_asked_fraction_in_smooth_blobs_that_differ_per_image() -> None:
    mask = random_region_mask(64, 28, fraction=0.25, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (64, 1, 28, 28)
    assert mask.flatten(1).sum(1).eq(196).all()  # exactly a quarter of every image
    assert len({tuple(m.flatten().tolist()) for m in mask}) == 64  # a new place for every image
    assert mask.float().mean(0).max() < 0.6  # no pixel hidden in most images (a centre hole would be: 1.0)
    # smooth blobs, not salt and pepper: a hidden pixel's right neighbour is hidden far more often than 25%
    pairs = mask[..., :, 1:] & mask[..., :, :-1]
    assert float(pairs.sum() / mask[..., :, :-1].sum()) > 0.7
    with pytest.raises(ValueError, match="fraction"):
        random_region_mask(2, 28, fraction=1.0)


def test_random_region_inpainting_hides_the_mask_and_scores_only_the_hidden_pixels() -> None:
    torch.manual_seed(0)
    method = methods.get("inpainting", backbone=backbones.get("resnet_tiny", width=4), decoder_width=8).eval()
    assert method.mask == "random_region"
    seen, original = record_backbone_input(method)
    x = torch.rand(3, 3, 16, 16) + 1.0  # no pixel is 0 before masking
    original_x = x.clone()
    out = method.training_step(ViewBatch(views=[x], labels=None, indices=torch.arange(3)))
    hidden = seen["x"].eq(0)
    assert hidden.flatten(1).sum(1).eq(3 * 64).all() and torch.equal(x, original_x)  # a quarter; input untouched
    assert hidden.all(dim=1).eq(hidden.any(dim=1)).all()  # the same pixels in every channel
    hidden = hidden[:, :1]
    # the loss is the squared error of the decoder's full-image prediction over exactly those pixels
    prediction = method.decoder(original(seen["x"]), 16)
    expected = hidden_pixels_loss(prediction, x, hidden).detach()
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="mask must be one of"):
        methods.get("inpainting", backbone=backbones.get("resnet_tiny", width=4), mask="center")
