"""Tests of selfsup.augment: functional ops against torchvision, crop sampling, views, recipes."""
from __future__ import annotations

import math
import re

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from selfsup.augment import EvalTransform, MultiView, ViewSpec, apply_view, byol, get, names, simclr
from selfsup.augment import functional as AF
from selfsup.augment import ops
from selfsup.errors import ConfigError, UnknownNameError

# torchvision weighs red by 0.2989 instead of ITU-R 601-2's 0.299, so ops that use the luma differ
# from it by up to 1e-4 per unit of red.
LUMA_ATOL = 2e-4
ATOL = 1e-5


def rgb_images(batch: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Random colours plus the edge cases of HSV: black, white, grey and tied maximum channels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=g)
    x[:, :, 0, 0] = 0.0
    x[:, :, 0, 1] = 1.0
    x[:, :, 0, 2] = 0.5
    x[:, 1, 1, :] = x[:, 0, 1, :]  # red == green on one row
    x[:, 2, 2, :] = x[:, 1, 2, :]  # green == blue on another
    return x


def uint8_images(batch: int, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), generator=g, dtype=torch.uint8)


def spec(**kwargs) -> ViewSpec:
    """A ViewSpec with identity normalisation, so outputs are the [0, 1] augmented images."""
    channels = kwargs.pop("channels", 3)
    return ViewSpec(**{"size": 16, "mean": (0.0,) * channels, "std": (1.0,) * channels, **kwargs})


def per_sample_reference(fn, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(img, float(p)) for img, p in zip(images, params)])


# ----------------------------------------------------------------------------- functional vs torchvision


@pytest.mark.parametrize(
    "ours, theirs, params, atol",
    [
        (AF.adjust_brightness, TF.adjust_brightness, [0.0, 0.5, 1.0, 1.3, 1.8, 3.0], ATOL),
        (AF.adjust_contrast, TF.adjust_contrast, [0.0, 0.5, 1.0, 1.3, 1.8, 3.0], LUMA_ATOL),
        (AF.adjust_saturation, TF.adjust_saturation, [0.0, 0.5, 1.0, 1.3, 1.8, 3.0], LUMA_ATOL),
        (AF.adjust_hue, TF.adjust_hue, [-0.5, -0.27, 0.0, 0.1, 0.33, 0.5], 1e-5),
    ],
    ids=["brightness", "contrast", "saturation", "hue"],
)
def test_color_ops_match_torchvision(ours, theirs, params, atol):
    x = rgb_images()
    p = torch.tensor(params)
    torch.testing.assert_close(ours(x, p), per_sample_reference(theirs, x, p), atol=atol, rtol=0)


def test_color_ops_on_one_channel_match_torchvision():
    x = rgb_images()[:, :1]
    p = torch.tensor([0.0, 0.5, 1.0, 1.3, 1.8, 3.0])
    reference = per_sample_reference(TF.adjust_contrast, x, p)
    torch.testing.assert_close(AF.adjust_contrast(x, p), reference, atol=ATOL, rtol=0)
    assert torch.equal(AF.adjust_saturation(x, p), x)
    assert torch.equal(AF.adjust_hue(x, p / 10), x)
    assert torch.equal(AF.to_grayscale(x), x)


def test_grayscale_uses_itu_luma_and_matches_torchvision():
    x = rgb_images()
    gray = AF.to_grayscale(x)
    assert gray.shape == x.shape
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 0], gray[:, 2])
    torch.testing.assert_close(gray, TF.rgb_to_grayscale(x, num_output_channels=3), atol=LUMA_ATOL, rtol=0)
    primaries = torch.eye(3).view(3, 3, 1, 1)
    assert AF.to_grayscale(primaries)[:, 0].flatten().tolist() == pytest.approx([0.299, 0.587, 0.114])
    assert AF.to_grayscale(torch.ones(1, 3, 2, 2)).eq(1.0).all()


def test_hue_shift_rotates_primaries():
    rgb = torch.eye(3).view(3, 3, 1, 1)
    shifted = AF.adjust_hue(rgb, torch.full((3,), 1 / 3))
    torch.testing.assert_close(shifted, rgb.roll(1, dims=1), atol=1e-6, rtol=0)  # R->G, G->B, B->R


def test_solarize_and_normalize_match_torchvision():
    x = rgb_images()
    torch.testing.assert_close(AF.solarize(x, 0.5), TF.solarize(x, 0.5), atol=0, rtol=0)
    torch.testing.assert_close(AF.solarize(x, 0.3), TF.solarize(x, 0.3), atol=0, rtol=0)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    reference = TF.normalize(x, list(mean), list(std))
    torch.testing.assert_close(AF.normalize(x, mean, std), reference, atol=ATOL, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_gaussian_blur_matches_torchvision(channels):
    x = rgb_images()[:, :channels]
    sigma = torch.tensor([0.1, 0.5, 0.8, 1.0, 1.5, 2.0])
    ours = AF.gaussian_blur(x, sigma, kernel_size=5)
    reference = torch.stack([TF.gaussian_blur(img, [5, 5], [float(s)] * 2) for img, s in zip(x, sigma)])
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "box, size", [((3, 2, 8, 10), 24), ((1, 4, 13, 11), 7)], ids=["upsample", "downsample"]
)
def test_resized_crop_matches_torchvision(box, size):
    x = rgb_images(batch=2)
    x0, y0, w, h = box
    ours = AF.resized_crop(x, torch.tensor([box] * 2), size)
    reference = TF.resized_crop(x, top=y0, left=x0, height=h, width=w, size=[size, size], antialias=False)
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)
    flipped = AF.resized_crop(x, torch.tensor([box] * 2), size, flip=torch.tensor([True, False]))
    torch.testing.assert_close(flipped[0], reference[0].flip(-1), atol=ATOL, rtol=0)
    torch.testing.assert_close(flipped[1], reference[1], atol=ATOL, rtol=0)


def test_resized_crop_of_whole_image_is_identity():
    x = rgb_images(batch=3)
    boxes = torch.tensor([[0, 0, 16, 16]] * 3)
    torch.testing.assert_close(AF.resized_crop(x, boxes, 16), x, atol=ATOL, rtol=0)
    mirrored = AF.resized_crop(x, boxes, 16, flip=torch.tensor([True, False, True]))
    torch.testing.assert_close(mirrored[0::2], x[0::2].flip(-1), atol=ATOL, rtol=0)
    torch.testing.assert_close(mirrored[1], x[1], atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- crop box sampling


@pytest.mark.parametrize("height, width", [(700, 700), (600, 800)])
def test_crop_boxes_respect_scale_ratio_and_image(height, width):
    n = 4000
    scale, ratio = (0.2, 0.7), (0.5, 2.0)
    boxes = AF.sample_crop_boxes(height, width, n, scale, ratio, generator=torch.Generator().manual_seed(0))
    assert boxes.shape == (n, 4) and boxes.dtype == torch.int64
    x0, y0, w, h = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= width).all() and (y0 + h <= height).all()
    # Rounding w and h to integers moves area and ratio by well under 1% at this image size.
    area = (w * h).double() / (height * width)
    aspect = w.double() / h.double()
    assert area.min() >= scale[0] * 0.99 and area.max() <= scale[1] * 1.01
    assert aspect.min() >= ratio[0] * 0.99 and aspect.max() <= ratio[1] * 1.01
    assert area.min() < scale[0] + 0.02 and area.max() > scale[1] - 0.02  # the whole range is used
    if height == width:  # tries are rejected symmetrically, so log-ratio stays centred on 0
        assert aspect.log().mean().abs() < 0.05
    free = width - w > 0
    position = x0[free].double() / (width - w[free]).double()
    assert 0.45 < position.mean() < 0.55 and position.min() < 0.01 and position.max() > 0.99


def test_crop_boxes_are_reproducible():
    def draw(seed):
        return AF.sample_crop_boxes(32, 32, 50, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


@pytest.mark.parametrize(
    "height, width, ratio, expected",
    [(100, 100, (4.0, 5.0), (0, 37, 100, 25)), (100, 1000, (0.5, 1.0), (450, 0, 100, 100))],
    ids=["too-wide-ratio", "too-wide-image"],
)
def test_crop_boxes_fall_back_to_central_crop(height, width, ratio, expected):
    g = torch.Generator().manual_seed(0)
    boxes = AF.sample_crop_boxes(height, width, 20, (0.9, 1.0), ratio, generator=g)
    assert (boxes == torch.tensor(expected)).all()


# ----------------------------------------------------------------------------- apply_view and MultiView


def test_view_shape_dtype_and_range_before_normalize():
    images = uint8_images(64)
    out = apply_view(images, spec(size=12, blur_p=0.5, solarize_p=0.5), torch.Generator().manual_seed(0))
    assert out.shape == (64, 3, 12, 12) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_view_normalizes_with_spec_statistics():
    images = uint8_images(8)
    plain = apply_view(images, spec(), torch.Generator().manual_seed(0))
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    normed = apply_view(images, spec(mean=mean, std=std), torch.Generator().manual_seed(0))
    torch.testing.assert_close(normed, AF.normalize(plain, mean, std))


def test_view_of_uint8_equals_view_of_float():
    images = uint8_images(16)
    s = spec(blur_p=0.5, solarize_p=0.5)
    a = apply_view(images, s, torch.Generator().manual_seed(3))
    b = apply_view(images.float() / 255, s, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_views_are_random_per_sample_and_per_view():
    images = uint8_images(1).expand(8, -1, -1, -1)
    first, second = MultiView([spec(blur_p=0.5)], counts=[2])(images)
    assert not torch.allclose(first[0], first[1])  # same image, other sample: other parameters
    assert all(not torch.allclose(first[i], second[i]) for i in range(8))  # two views of one image differ


def test_same_seed_reproduces_and_other_seed_differs():
    images = uint8_images(16)

    def views(seed):
        return MultiView([spec(blur_p=0.5, solarize_p=0.2)], counts=[2], seed=seed)(images)

    assert all(torch.equal(a, b) for a, b in zip(views(0), views(0)))
    assert not torch.equal(views(0)[0], views(1)[0])


def test_explicit_generator_is_used():
    images = uint8_images(8)
    mv = MultiView([spec()])
    a = mv(images, torch.Generator().manual_seed(5))
    b = mv(images, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0])


def test_state_dict_round_trip_reproduces_next_call():
    images = uint8_images(8)
    mv = MultiView([spec(blur_p=0.5)], counts=[2], seed=7)
    mv(images)
    state = mv.state_dict()
    expected = mv(images)
    resumed = MultiView([spec(blur_p=0.5)], counts=[2])
    resumed.load_state_dict(state)
    assert resumed.state_dict()["seed"] == 7
    assert all(torch.equal(a, b) for a, b in zip(resumed(images), expected))


def test_grayscale_probability_is_respected():
    n, p = 2000, 0.3
    images = uint8_images(n, size=8)
    out = apply_view(images, spec(size=8, jitter_p=0.0, gray_p=p), torch.Generator().manual_seed(0))
    is_gray = ((out[:, 0] == out[:, 1]) & (out[:, 1] == out[:, 2])).flatten(1).all(dim=1)
    assert abs(is_gray.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    always = apply_view(images[:64], spec(size=8, gray_p=1.0), torch.Generator().manual_seed(0))
    assert torch.equal(always[:, 0], always[:, 1]) and torch.equal(always[:, 1], always[:, 2])


def test_brightness_only_jitter_scales_within_strength():
    images = torch.full((500, 3, 8, 8), 64, dtype=torch.uint8)
    s = spec(size=8, jitter=(0.5, 0.0, 0.0, 0.0), jitter_p=1.0, gray_p=0.0)
    factor = apply_view(images, s, torch.Generator().manual_seed(0)).flatten(1) / (64 / 255)
    assert torch.allclose(factor, factor[:, :1], atol=1e-5)  # one factor per image
    assert factor.min() >= 0.5 - 1e-5 and factor.max() <= 1.5 + 1e-5
    assert factor.min() < 0.55 and factor.max() > 1.45


def test_jitter_runs_its_four_ops_in_a_random_order_per_sample(monkeypatch):
    """Replace the colour ops by ops that append their digit, so each output spells its order."""
    params: dict[int, list[torch.Tensor]] = {k: [] for k in range(4)}

    def tagging(k):
        def op(x, p):
            params[k].append(p)
            return x * 10 + (k + 1)

        return op

    monkeypatch.setattr(ops, "_JITTER_OPS", tuple(tagging(k) for k in range(4)))
    n, strengths = 960, (0.1, 0.2, 0.3, 0.4)
    s = spec(size=4, jitter=strengths, jitter_p=0.5, gray_p=0.0)
    codes = apply_view(torch.zeros(n, 3, 4, 4, dtype=torch.uint8), s, torch.Generator().manual_seed(0))
    codes = codes[:, 0, 0, 0].round().long()
    jittered = codes[codes != 0].tolist()
    assert abs(len(jittered) / n - 0.5) < 4 * math.sqrt(0.25 / n)
    assert all(sorted(str(c)) == ["1", "2", "3", "4"] for c in jittered)
    counts = torch.tensor([jittered.count(c) for c in set(jittered)])
    assert len(counts) == 24 and counts.min() >= 5  # every order occurs (about 20 times each)
    for k, strength in enumerate(strengths):
        p = torch.cat(params[k])
        assert len(p) == len(jittered)  # each op ran once on each jittered sample
        low, high = (-strength, strength) if k == 3 else (1 - strength, 1 + strength)
        assert p.min() >= low and p.max() <= high


def test_zero_strength_jitter_and_no_ops_keep_the_crop():
    images = uint8_images(8)
    s = spec(jitter=(0.0,) * 4, jitter_p=1.0, gray_p=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=0.0)
    out = apply_view(images, s, torch.Generator())
    torch.testing.assert_close(out, images.float() / 255, atol=ATOL, rtol=0)


def test_one_channel_images():
    images = uint8_images(16, channels=1)
    views = MultiView([spec(channels=1, size=8, blur_p=0.5, solarize_p=0.5)], counts=[2])(images)
    assert [v.shape for v in views] == [(16, 1, 8, 8)] * 2
    assert all(torch.isfinite(v).all() and v.min() >= 0 and v.max() <= 1 for v in views)


def test_solarize_always_inverts_bright_constant_image():
    images = torch.full((8, 3, 16, 16), 204, dtype=torch.uint8)  # 0.8
    out = apply_view(images, spec(jitter_p=0.0, gray_p=0.0, solarize_p=1.0), torch.Generator())
    torch.testing.assert_close(out, torch.full_like(out, 1 - 204 / 255), atol=ATOL, rtol=0)


def test_missing_normalization_is_an_error_until_filled_in():
    bare = MultiView([ViewSpec(size=8)], counts=[2])
    with pytest.raises(ConfigError, match="mean"):
        bare(uint8_images(2))
    filled = bare.with_normalization((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    assert filled.num_views == 2 and filled.specs[0].std == (0.2, 0.2, 0.2)
    assert bare.specs[0].mean is None  # the original is untouched
    kept = MultiView([spec(mean=(0.1,) * 3)]).with_normalization((0.5,) * 3, (0.2,) * 3)
    assert kept.specs[0].mean == (0.1,) * 3 and kept.specs[0].std == (1.0,) * 3


def test_multiview_orders_views_by_spec():
    images = uint8_images(4)
    mv = MultiView([spec(size=12), spec(size=6)], counts=[2, 3])
    assert mv.num_views == 5
    assert [v.shape[-1] for v in mv(images)] == [12, 12, 6, 6, 6]


def test_eval_transform_resizes_like_torchvision_and_normalizes():
    images = uint8_images(4, size=20)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    out = EvalTransform(12, mean, std)(images)
    reference = TF.normalize(TF.resize(images.float() / 255, [12, 12], antialias=True), list(mean), list(std))
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=0)
    same = EvalTransform(20, (0.0,) * 3, (1.0,) * 3)(images)
    torch.testing.assert_close(same, images.float() / 255)


# ----------------------------------------------------------------------------- recipes


def test_byol_recipe_carries_paper_probabilities():
    first, second = byol(size=32).specs
    for s in (first, second):
        assert (s.hflip_p, s.jitter_p, s.gray_p, s.jitter) == (0.5, 0.8, 0.2, (0.4, 0.4, 0.2, 0.1))
        assert s.blur_sigma == (0.1, 2.0)
    assert (first.blur_p, first.solarize_p) == (1.0, 0.0)
    assert (second.blur_p, second.solarize_p) == (0.1, 0.2)
    assert byol().specs[0].blur_kernel_size == 23  # 10% of 224, odd


def test_byol_recipe_scales_its_jitter_and_rejects_a_negative_strength():
    assert byol(size=32, strength=0.5).specs[1].jitter == (0.2, 0.2, 0.1, 0.05)
    with pytest.raises(ConfigError, match="jitter"):  # ViewSpec's check, as for simclr's strength
        byol(strength=-1.0)


def test_simclr_recipe_and_registry():
    mv = simclr(size=32, strength=0.5, blur_p=0.0)
    (s,) = mv.specs
    assert mv.counts == (2,) and s.jitter == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert (s.jitter_p, s.gray_p, s.blur_p, s.hflip_p) == (0.8, 0.2, 0.0, 0.5)
    assert {"simclr", "byol"} <= set(names())
    assert get("byol", size=16).specs[1].solarize_p == 0.2
    with pytest.raises(UnknownNameError):
        get("simclear")
    with pytest.raises(ConfigError, match="strenght"):
        get("simclr", strenght=0.5)


# ----------------------------------------------------------------------------- ViewSpec validation


@pytest.mark.parametrize(
    "field, value",
    [
        ("size", 0),
        ("size", 16.0),
        ("scale", (0.0, 1.0)),
        ("scale", (0.8, 0.5)),
        ("scale", (0.5, 1.2)),
        ("ratio", (2.0, 1.0)),
        ("hflip_p", 1.5),
        ("jitter_p", -0.1),
        ("gray_p", 2),
        ("blur_p", "0.5"),
        ("solarize_p", 1.01),
        ("jitter", (0.4, 0.4, 0.4, 0.6)),
        ("jitter", (-0.1, 0.4, 0.4, 0.1)),
        ("jitter", (0.4, 0.4, 0.4)),
        ("blur_sigma", (0.0, 2.0)),
        ("blur_kernel_fraction", 0.0),
        ("blur_kernel_fraction", 1.5),
        ("std", (0.2, 0.0, 0.2)),
    ],
)
def test_viewspec_rejects_bad_values_naming_the_field(field, value):
    kwargs = {"size": 16, field: value}
    with pytest.raises(ValueError, match=rf"ViewSpec\.{field} = .*{re.escape(repr(value))}"):
        ViewSpec(**kwargs)


def test_viewspec_accepts_lists_from_configs():
    s = ViewSpec(size=8, scale=[0.2, 1.0], jitter=[0.1, 0.2, 0.3, 0.05], mean=[0.5], std=[0.25])
    assert s.scale == (0.2, 1.0) and s.jitter == (0.1, 0.2, 0.3, 0.05) and s.mean == (0.5,)
    with pytest.raises(ValueError, match="as many values as mean"):
        ViewSpec(size=8, mean=(0.5, 0.5), std=(0.2,))
