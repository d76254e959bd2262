"""Position embeddings of ViT inputs smaller (or larger) than the table: the table is resized to the
grid, so a multi-crop local view's positions span the image as in DINO / iBOT / DINOv2
(official ``interpolate_pos_encoding``), instead of taking the table's top-left corner."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfsup.backbones.vit import VisionTransformer
from selfsup.nn.patches import resized_positions, sincos_embedding_at, sincos_position_embedding


def vit(pos_embed: str = "sincos", dim: int = 32) -> VisionTransformer:
    """A 7x7 table (28 px, 4 px patches), as the CPU protocol's ViT."""
    torch.manual_seed(0)
    return VisionTransformer(image_size=28, patch_size=4, embed_dim=dim, depth=1, num_heads=2, pos_embed=pos_embed)


def grid(table: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return table.detach().reshape(h, w, -1)


@pytest.mark.parametrize("kind", ["sincos", "learned"])
def test_a_local_crop_is_not_the_top_left_block_and_its_centre_is_the_tables_centre(kind):
    net = vit(kind)
    if kind == "learned":
        with torch.no_grad():
            net.pos_embed.add_(0.1 * torch.randn_like(net.pos_embed))  # a trained-looking table
    full = grid(net.pos_embed[0], 7, 7)
    local = grid(net.position_embedding(3, 3)[0], 3, 3)
    assert not torch.allclose(local, full[:3, :3], atol=1e-3)
    # a 3x3 grid covering the 7x7 one: its middle cell sits exactly on the table's middle cell
    torch.testing.assert_close(local[1, 1], full[3, 3], atol=1e-5, rtol=0)
    # and its cells mirror around the middle, as the table's extent does (row 0 <-> row 2)
    rows = resized_positions(3, 7)
    torch.testing.assert_close(rows + rows.flip(0), torch.full((3,), 6.0, dtype=torch.float64))


def test_sincos_is_evaluated_at_the_resized_positions():
    net = vit()
    spread3, spread5 = resized_positions(3, 7), resized_positions(5, 7)
    torch.testing.assert_close(net.position_embedding(3, 5)[0], sincos_embedding_at(spread3, spread5, 32))
    # each (sin, cos) pair keeps unit norm at fractional positions
    table = net.position_embedding(3, 3)[0]
    pairs = table[:, :8] ** 2 + table[:, 8:16] ** 2
    torch.testing.assert_close(pairs, torch.ones_like(pairs))


def test_learned_and_sincos_put_a_crop_at_the_same_places():
    """A learned table initialised to the sine-cosine table and interpolated bicubically lands
    where the sine-cosine function is evaluated: both kinds resize the same way."""
    learned, fixed = vit("learned", dim=96), vit("sincos", dim=96)
    for h, w in [(3, 3), (4, 4), (2, 5), (1, 1)]:
        a, b = learned.position_embedding(h, w)[0], fixed.position_embedding(h, w)[0]
        assert (a - b).abs().max() < 0.08, (h, w)  # bicubic error on the fastest channels only
        table = learned.pos_embed.reshape(1, 7, 7, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
        torch.testing.assert_close(a, resized.permute(0, 2, 3, 1).reshape(h * w, -1))


def test_the_full_grid_keeps_the_table():
    net = vit()
    assert net.position_embedding(7, 7) is net.pos_embed
    torch.testing.assert_close(net.pos_embed[0], sincos_position_embedding(7, 7, 32))
    torch.testing.assert_close(sincos_position_embedding(7, 7, 32),
                               sincos_embedding_at(torch.arange(7.0), torch.arange(7.0), 32))


def test_mask_tokens_of_a_crop_get_the_crops_positions():
    """Masked patches become the mask token plus the same position the visible patch would get."""
    net = vit()
    crop = torch.randn(2, 1 if net.patch_embed.in_channels == 1 else 3, 12, 12)
    mask = torch.ones(2, 9, dtype=torch.bool)
    masked = net.forward_tokens(crop, mask=mask)
    # all patches masked: the output no longer depends on the pixels ...
    torch.testing.assert_close(net.forward_tokens(torch.randn_like(crop), mask=mask), masked)
    # ... and equals running the encoder on mask token + resized positions
    x = net.mask_token + net.position_embedding(3, 3)
    x = torch.cat([net.cls_token, net.registers, x], dim=1).expand(2, -1, -1)
    for block in net.blocks:
        x = block(x)
    torch.testing.assert_close(net.norm(x), masked)
