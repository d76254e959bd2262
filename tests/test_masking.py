"""The patch-masking helpers: BEiT's block-wise masks (BEiT, MaskFeat, CAE, iBOT, DINOv2) and the
per-sample random masking of MAE and MSN. Counts and distributions, plus fixed draws that pin the
random stream each method's masks come from (written down from the two implementations these
helpers replaced: ``nn/block_mask.py`` for iBOT / DINOv2, ``nn/patch_drop.py`` for MSN)."""
from __future__ import annotations

import pytest
import torch

import selfsup.nn
from selfsup.nn.block_masking import block_mask, block_masks, default_min_block, ibot_masks
from selfsup.nn.masking import num_kept, random_masking


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def positions(mask: torch.Tensor) -> list[int]:
    return mask.flatten().nonzero().flatten().tolist()


# ---------------------------------------------------------------- block-wise masking (BEiT)


def test_block_mask_exact_count_for_cae_and_never_over_for_beit():
    g = seeded(0)
    for _ in range(20):
        assert int(block_mask(14, 14, 98, exact=True, generator=g).sum()) == 98
    counts = torch.stack([block_mask(14, 14, 78, generator=g).sum() for _ in range(100)])
    assert int(counts.max()) == 78  # BEiT's generator never overshoots...
    assert counts.float().mean() > 0.97 * 78  # ...and falls short only by a block that did not fit
    small = block_masks(64, 4, 4, 0.5, min_num_patches=4, exact=True)
    assert small.shape == (64, 16) and bool((small.sum(1) == 8).all())


def test_block_mask_with_a_fractional_target_never_exceeds_and_nearly_reaches_it():
    g = seeded(5)
    fractions = []
    for _ in range(40):
        target = 0.3 * 196  # iBOT's target is ratio * N, not rounded
        mask = block_mask(14, 14, target, generator=g)
        assert int(mask.sum()) <= target
        fractions.append(mask.float().mean().item())
    assert abs(sum(fractions) / len(fractions) - 0.3) < 0.04


def test_block_mask_is_reproducible_and_made_of_blocks():
    a = block_mask(8, 8, 26, min_num_patches=4, generator=seeded(5))
    b = block_mask(8, 8, 26, min_num_patches=4, generator=seeded(5))
    assert torch.equal(a, b)
    # a single block (num_masked below twice the smallest block) is a filled rectangle
    one = block_mask(8, 8, 6, min_num_patches=6, generator=seeded(2))
    rows, cols = one.nonzero().unbind(1)
    box = one[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert bool(box.all()) and int(one.sum()) == box.numel()


def test_the_default_smallest_block_is_ibots_rule_and_beits_16_on_its_grid():
    assert default_min_block(14, 14) == 16 and default_min_block(4, 4) == 1 and default_min_block(8, 6) == 4
    # the default and the explicit value draw the same mask
    assert torch.equal(block_mask(14, 14, 60, generator=seeded(1)),
                       block_mask(14, 14, 60, min_num_patches=16, generator=seeded(1)))


def test_block_mask_rejects_bad_arguments_naming_them():
    with pytest.raises(ValueError, match="num_masked=20 on 4x4"):
        block_mask(4, 4, 20)
    with pytest.raises(ValueError, match="aspect_ratio"):
        block_mask(4, 4, 4, aspect_ratio=(2.0, 0.5))
    with pytest.raises(ValueError, match="whole num_masked"):
        block_mask(4, 4, 4.5, exact=True)
    with pytest.raises(ValueError, match="exactly one of mask_ratio and num_masked"):
        block_masks(2, 4, 4, 0.5, num_masked=8)


def test_block_masks_pin_the_beit_and_cae_streams():
    # fixed draws of the previous nn/block_masking.py (MaskFeat, CAE): the merge changed no mask
    assert positions(block_mask(6, 6, 14, min_num_patches=4, generator=seeded(7))) == [
        8, 9, 10, 11, 13, 14, 15, 16, 17, 19, 21, 22, 23, 25]
    assert positions(block_mask(6, 6, 14, min_num_patches=4, exact=True, generator=seeded(6))) == [
        13, 14, 18, 19, 20, 22, 24, 25, 26, 28, 30, 31, 32, 33]


# ---------------------------------------------------------------- iBOT / DINOv2 batches


def test_ibot_masks_masks_half_the_images_with_ratios_in_range():
    g = seeded(6)
    masks = ibot_masks(200, 14, 14, generator=g)
    per_image = masks.float().mean(1)
    masked = per_image > 0
    assert 0.4 < masked.float().mean().item() < 0.6
    assert per_image.max().item() <= 0.5 + 1e-9 and per_image[masked].min().item() > 0.04
    strat = ibot_masks(8, 14, 14, stratified=True, min_num_patches=4, max_block_fraction=0.5, generator=g)
    counts = strat.sum(1)
    assert int((counts > 0).sum()) == 4
    assert counts.max().item() <= int(196 * 0.5)


def test_ibot_masks_pin_the_ibot_and_dinov2_streams():
    # fixed draws of the previous nn/block_mask.py (iBOT, DINOv2): the merge changed no mask
    assert positions(block_mask(6, 6, 0.4 * 36, generator=seeded(3))) == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 14, 15, 21, 27]
    ibot = ibot_masks(4, 5, 5, generator=seeded(4))
    assert [positions(row) for row in ibot] == [[], [], [1, 6, 11, 16], [13, 18]]
    dinov2 = ibot_masks(4, 5, 5, stratified=True, min_num_patches=4, max_block_fraction=0.5, generator=seeded(5))
    assert [positions(row) for row in dinov2] == [[], [11, 15, 16, 17, 21, 22, 23, 24], [], [1, 6, 11, 12, 16, 17]]


# ---------------------------------------------------------------- random masking (MAE, MSN)


@pytest.mark.parametrize("n, ratio, kept", [(16, 0.75, 4), (49, 0.75, 12), (64, 0.75, 16), (10, 0.7, 3), (16, 0.0, 16)])
def test_random_masking_masks_exactly_the_ratio_and_indices_agree(n, ratio, kept):
    keep, mask, restore = random_masking(6, n, ratio, generator=seeded(0))
    assert kept == num_kept(n, ratio) and keep.shape == (6, kept)
    assert mask.dtype == torch.bool and mask.sum(dim=1).tolist() == [n - kept] * 6
    for b in range(6):  # keep = exactly the unmasked positions
        assert sorted(keep[b].tolist()) == torch.nonzero(~mask[b]).flatten().tolist()


def test_random_masking_restore_is_the_inverse_permutation_and_samples_differ():
    keep, mask, restore = random_masking(8, 16, 0.75, generator=seeded(3))
    seq = torch.arange(16).repeat(8, 1)
    # a sequence laid out as the shuffle (kept first) goes back to raster order via restore
    shuffle = torch.argsort(restore, dim=1)
    assert torch.equal(shuffle[:, :4], keep)
    assert torch.equal(torch.gather(torch.gather(seq, 1, shuffle), 1, restore), seq)
    assert len({tuple(row) for row in mask.tolist()}) > 1  # per-sample masks


def test_kept_count_is_msns_floor_and_kept_indices_are_distinct():
    # MSN keeps floor((1 - patch_drop) N) patch tokens (official src/deit.py); MAE int(N (1 - r))
    assert num_kept(16, 0.15) == 13 and num_kept(196, 0.15) == 166 and num_kept(20, 0.25) == 15
    keep, _, _ = random_masking(64, 16, 0.25, generator=seeded(0))
    assert keep.shape == (64, 12)
    assert all(len(set(row.tolist())) == 12 for row in keep) and keep.min() >= 0 and keep.max() < 16
    # every patch is dropped for some sample: masks differ across samples
    assert len({tuple(sorted(row.tolist())) for row in keep}) > 1


def test_random_masking_keeps_msns_previous_stream_and_each_patch_equally_often():
    # a fixed draw of the previous nn/patch_drop.py:random_keep_indices (MSN): the merge changed no index
    keep, _, _ = random_masking(2, 8, 0.5, generator=seeded(8))
    assert keep.tolist() == [[7, 3, 4, 0], [6, 5, 1, 4]]
    _, mask, _ = random_masking(4000, 8, 0.25, generator=seeded(1))
    rate = mask.float().mean(0)  # 2 of 8 patches masked: each one 1/4 of the time
    assert torch.allclose(rate, torch.full_like(rate, 0.25), atol=0.03)


def test_random_masking_rejects_ratios_that_keep_nothing():
    with pytest.raises(ValueError, match="mask_ratio in \\[0, 1\\), got 1.0"):
        random_masking(2, 16, 1.0)
    with pytest.raises(ValueError, match="keeps no patch of 4 at mask_ratio=0.9"):
        random_masking(2, 4, 0.9)


def test_one_helper_of_each_kind_is_exported():
    assert selfsup.nn.random_masking is random_masking and selfsup.nn.ibot_masks is ibot_masks
    assert selfsup.nn.block_masks is block_masks
    assert not hasattr(selfsup.nn, "random_keep_indices")
    for gone in ("selfsup.nn.block_mask", "selfsup.nn.patch_drop"):
        with pytest.raises(ModuleNotFoundError):
            __import__(gone)
