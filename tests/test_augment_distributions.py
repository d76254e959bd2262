"""The views' random parameters follow their definitions, and the images show exactly those parameters.

Each test draws parameters for thousands of samples with ``sample_view`` (the per-sample draws that
``MultiView`` makes) and checks their ranges, coverage and probabilities (binomial tolerance of 4
standard deviations); then renders images built so that the output reveals the parameter actually
applied (a coordinate ramp for the crop box and flip, flat colours for jitter factors, an impulse
for the blur's sigma) and compares it with the drawn one.
"""
from __future__ import annotations

import math

import pytest
import torch

from selfsup.augment import MultiView, ViewSpec, get, render_view, sample_view
from selfsup.augment import functional as AF
from selfsup.augment import multiview as multiview_module

N = 4096


def spec(**kwargs) -> ViewSpec:
    """A ViewSpec with identity normalisation and every random op off unless asked for."""
    channels = kwargs.pop("channels", 3)
    base = dict(size=8, hflip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0,
                mean=(0.0,) * channels, std=(1.0,) * channels)
    return ViewSpec(**{**base, **kwargs})


def assert_rate(mask: torch.Tensor, p: float) -> None:
    """The fraction of True in ``mask`` is ``p`` within 4 binomial standard deviations."""
    n = mask.numel()
    tolerance = 4 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(mask.float().mean().item() - p) <= tolerance + 1e-12, (mask.float().mean().item(), p)


def draw(s: ViewSpec, height: int = 256, width: int = 256, seed: int = 0):
    return sample_view(s, N, height, width, torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- crop


@pytest.mark.parametrize("scale, ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.05, 0.14), (0.5, 2.0))])
def test_crop_area_and_aspect_ratio_stay_in_range_and_cover_it(scale, ratio):
    height = width = 256
    boxes = draw(spec(scale=scale, ratio=ratio), height, width)["random_resized_crop"]["boxes"]
    x0, y0, w, h = boxes.T.double()
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= width).all() and (y0 + h <= height).all()
    area, aspect = w * h / (height * width), w / h
    # w and h are rounded to whole pixels: at least 0.05 * 256^2 -> w, h >= 28 px -> < 4% off.
    assert area.min() >= scale[0] * 0.96 and area.max() <= scale[1] * 1.04
    assert aspect.min() >= ratio[0] * 0.96 and aspect.max() <= ratio[1] * 1.04
    span = scale[1] - scale[0]
    assert area.min() < scale[0] + 0.05 * span and area.max() > scale[1] - 0.05 * span
    log_span = math.log(ratio[1] / ratio[0])
    assert aspect.log().min() < math.log(ratio[0]) + 0.05 * log_span
    assert aspect.log().max() > math.log(ratio[1]) - 0.05 * log_span
    assert abs(aspect.log().mean().item()) < 0.05  # symmetric ranges on a square image


def test_rendered_crop_shows_the_drawn_box_and_flip():
    """On a horizontal coordinate ramp the mean of a view is the centre of its box, and the sign of
    its left-to-right slope tells whether it was mirrored."""
    size, n = 32, 1024
    ramp = torch.arange(size, dtype=torch.float64).view(1, 1, 1, size).expand(n, 1, size, size)
    s = spec(size=16, channels=1, hflip_p=0.5, scale=(0.1, 1.0))
    params = sample_view(s, n, size, size, torch.Generator().manual_seed(1))
    out = render_view(ramp, s, params)  # float64 in: exact bilinear sampling of a linear ramp
    x0, _, w, _ = params["random_resized_crop"]["boxes"].T.double()
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x0 + (w - 1) / 2, atol=1e-9, rtol=0)
    slope = out[:, 0, :, -1].mean(1) - out[:, 0, :, 0].mean(1)
    assert torch.equal(slope < 0, params["horizontal_flip"]["apply"])
    assert_rate(params["horizontal_flip"]["apply"], 0.5)


# ----------------------------------------------------------------------------- colour jitter


def test_jitter_factors_stay_within_their_bounds_and_cover_them():
    strengths = (0.8, 0.4, 1.5, 0.2)  # saturation strength > 1: factors start at 0
    params = draw(spec(jitter=strengths, jitter_p=0.8))
    assert_rate(params["color_jitter"]["apply"], 0.8)
    bounds = [(max(0.0, 1 - s), 1 + s) for s in strengths[:3]] + [(-strengths[3], strengths[3])]
    for k, (low, high) in enumerate(bounds):
        f = params["color_jitter"]["factors"][:, k]
        assert f.min() >= low and f.max() <= high
        assert f.min() < low + 0.01 * (high - low) and f.max() > high - 0.01 * (high - low)
        assert abs(f.mean().item() - (low + high) / 2) < 0.02 * (high - low)  # uniform
    orders = params["color_jitter"]["order"]
    assert torch.equal(orders.sort(dim=1).values, torch.arange(4).expand(N, 4))  # permutations
    for position in range(4):  # each op equally likely at each position
        for op in range(4):
            assert_rate(orders[:, position] == op, 0.25)


def _rendered(s: ViewSpec, images: torch.Tensor, seed: int = 2):
    params = sample_view(s, len(images), images.shape[-2], images.shape[-1], torch.Generator().manual_seed(seed))
    return params, render_view(images, s, params)


def test_rendered_brightness_is_the_drawn_factor():
    images = torch.full((N, 3, 4, 4), 0.25)
    params, out = _rendered(spec(size=4, jitter=(0.9, 0, 0, 0), jitter_p=0.5), images)
    jitter = params["color_jitter"]
    expected = torch.where(jitter["apply"], jitter["factors"][:, 0], 1.0).view(-1, 1, 1, 1) * 0.25
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-6, rtol=0)
    assert_rate(params["color_jitter"]["apply"], 0.5)


def test_rendered_contrast_is_the_drawn_factor():
    """Left half 0.2, right half 0.6 (grey): contrast f maps them to m + f (x - m), m = 0.4."""
    images = torch.full((N, 3, 4, 4), 0.2)
    images[..., 2:] = 0.6
    params, out = _rendered(spec(size=4, scale=(1, 1), ratio=(1, 1), jitter=(0, 0.7, 0, 0), jitter_p=0.5), images)
    recovered = (out[:, 0, 0, 3] - out[:, 0, 0, 0]) / 0.4
    expected = torch.where(params["color_jitter"]["apply"], params["color_jitter"]["factors"][:, 1], 1.0)
    torch.testing.assert_close(recovered, expected, atol=1e-5, rtol=0)


def test_rendered_saturation_is_the_drawn_factor():
    """A flat colour blended with its luma: f = (out - luma) / (x - luma) per channel."""
    colour = torch.tensor([0.5, 0.3, 0.2])
    luma = float(colour @ torch.tensor(AF.LUMA_WEIGHTS))
    images = colour.view(1, 3, 1, 1).expand(N, 3, 4, 4).contiguous()
    params, out = _rendered(spec(size=4, jitter=(0, 0, 0.5, 0), jitter_p=0.5), images)
    recovered = (out[:, 0, 0, 0] - luma) / (0.5 - luma)
    expected = torch.where(params["color_jitter"]["apply"], params["color_jitter"]["factors"][:, 2], 1.0)
    torch.testing.assert_close(recovered, expected, atol=1e-5, rtol=0)


def test_rendered_hue_shift_is_the_drawn_shift():
    """A flat colour of hue 0.3 turns (green maximum) comes out rotated by the drawn shift (mod 1)."""
    colour = torch.tensor([0.4, 0.8, 0.3])  # max g, min b, delta 0.5: hue = ((b - r) / delta + 2) / 6 = 0.3
    assert _hsv_hue(colour.view(1, 3).double()).item() == pytest.approx(0.3)
    images = colour.view(1, 3, 1, 1).expand(N, 3, 2, 2).contiguous()
    params, out = _rendered(spec(size=2, jitter=(0, 0, 0, 0.5), jitter_p=1.0), images)
    target = 0.3 + params["color_jitter"]["factors"][:, 3].double()
    difference = torch.remainder(_hsv_hue(out[:, :, 0, 0].double()) - target + 0.5, 1.0) - 0.5
    assert difference.abs().max() < 1e-5
    assert_rate(params["color_jitter"]["factors"][:, 3] > 0, 0.5)


def _hsv_hue(rgb: torch.Tensor) -> torch.Tensor:
    """HSV hue in turns of (N, 3) colours, written out independently of the library."""
    out = []
    for r, g, b in rgb.tolist():
        maxc, minc = max(r, g, b), min(r, g, b)
        delta = maxc - minc
        if maxc == r:
            h = ((g - b) / delta) % 6
        elif maxc == g:
            h = (b - r) / delta + 2
        else:
            h = (r - g) / delta + 4
        out.append(h / 6)
    return torch.tensor(out, dtype=torch.float64)


# ----------------------------------------------------------------------------- grayscale, solarize, blur


@pytest.mark.parametrize("p", [0.2, 0.7])
def test_grayscale_is_applied_with_its_probability_and_where_drawn(p):
    images = torch.rand(N, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    params, out = _rendered(spec(size=4, gray_p=p), images)
    assert_rate(params["grayscale"]["apply"], p)
    is_gray = ((out[:, 0] == out[:, 1]) & (out[:, 1] == out[:, 2])).flatten(1).all(dim=1)
    assert torch.equal(is_gray, params["grayscale"]["apply"])


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_solarize_is_applied_with_its_probability_and_where_drawn(p):
    images = torch.full((N, 3, 4, 4), 0.8)
    params, out = _rendered(spec(size=4, solarize_p=p), images)
    assert_rate(params["solarize"]["apply"], p)
    expected = torch.where(params["solarize"]["apply"], 0.2, 0.8).view(-1, 1, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_blur_probability_and_sigma_range():
    params = draw(spec(blur_p=0.5, blur_sigma=(0.1, 2.0)))
    assert_rate(params["gaussian_blur"]["apply"], 0.5)
    sigma = params["gaussian_blur"]["sigma"]
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    assert sigma.min() < 0.12 and sigma.max() > 1.98 and abs(sigma.mean().item() - 1.05) < 0.03


def test_rendered_blur_has_the_drawn_sigma():
    """An impulse comes out as the kernel: its spread along x is the drawn sigma's (discrete) variance."""
    size, n = 33, 512
    images = torch.zeros(n, 1, size, size)
    images[:, :, size // 2, size // 2] = 1.0
    s = spec(size=size, channels=1, scale=(1, 1), ratio=(1, 1), blur_p=0.5, blur_kernel_fraction=1.0)
    params = sample_view(s, n, size, size, torch.Generator().manual_seed(4))
    out = render_view(images, s, params)
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    profile = out[:, 0].double().sum(dim=1)  # (n, size): mass per column
    variance = (profile * offsets**2).sum(1) / profile.sum(1)
    sigma = params["gaussian_blur"]["sigma"].double()
    weights = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    expected = (weights * offsets**2).sum(1) / weights.sum(1)
    expected = torch.where(params["gaussian_blur"]["apply"], expected, torch.zeros_like(expected))
    torch.testing.assert_close(variance, expected, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- views and recipes


def test_multiview_renders_the_parameters_sample_view_draws():
    """MultiView draws each view's parameters in spec order from one generator, then renders them."""
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    mv = get("simclr", size=12, mean=(0.5,) * 3, std=(0.25,) * 3)
    out = mv(images, torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(6)
    params = [sample_view(s, 64, 16, 16, g) for s in mv.specs for _ in range(2)]
    for view, p in zip(out, params):
        torch.testing.assert_close(view, render_view(AF.to_float(images), mv.specs[0], p), atol=1e-6, rtol=0)


def test_chunked_rendering_equals_whole_batch(monkeypatch):
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    mv = get("multicrop", size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    whole = mv(images, torch.Generator().manual_seed(8))
    monkeypatch.setattr(multiview_module, "_CPU_CHUNK_ELEMENTS", 3 * 16 * 16 * 7)  # chunks of 7 images
    chunked = mv(images, torch.Generator().manual_seed(8))
    assert len(whole) == 8
    # equal up to fp32 rounding of the intermediate values (normalised pixels up to |4|, where an ulp is
    # 4.8e-7): the kernels take other vector paths for 7 images than for 40 (on an AVX-512 Xeon one value
    # of 30,720 differed by 1.2e-6); a parameter sent to the wrong image would differ by 0.1 or more
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, atol=4e-6, rtol=0)


def test_multicrop_global_and_local_crops_draw_their_own_scales():
    mv = get("multicrop", size=224)
    (global_spec, local_spec), counts = mv.specs, mv.counts
    assert counts == (2, 6) and (global_spec.size, local_spec.size) == (224, 96)
    for s, (low, high) in ((global_spec, (0.14, 1.0)), (local_spec, (0.05, 0.14))):
        _, _, w, h = draw(s)["random_resized_crop"]["boxes"].T.double()
        area = w * h / 256**2
        assert area.min() >= low * 0.96 and area.max() <= high * 1.04
        assert area.min() < low + 0.05 * (high - low) and area.max() > high - 0.05 * (high - low)


def test_multiview_rejects_a_batch_that_is_not_4d():
    from selfsup.errors import DataError

    with pytest.raises(DataError, match=r"\(B, C, H, W\).*\(3, 8, 8\)"):
        MultiView([spec()])(torch.zeros(3, 8, 8, dtype=torch.uint8))
