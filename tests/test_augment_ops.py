"""The op pipeline: the new ops' distributions, one random stream per op, users' ops, bad op specs.

Rates are checked within 4 binomial standard deviations over thousands of samples; rendered images
are built so the output reveals the parameter applied (a ramp shows a flip, a unique pixel a
rotation, a constant image an erased box).
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import selfsup.augment as augment
from selfsup.augment import OPS, MultiView, RandomOp, View, ViewSpec, make_op, ops, register_op
from selfsup.augment import functional as AF
from selfsup.errors import ConfigError

N = 4096
IDENTITY = dict(mean=(0.0,), std=(1.0,))


def assert_rate(mask: torch.Tensor, p: float) -> None:
    n = mask.numel()
    tolerance = 4 * math.sqrt(max(p * (1 - p), 1e-12) / n)
    assert abs(mask.float().mean().item() - p) <= tolerance + 1e-12, (mask.float().mean().item(), p)


def sample_and_render(view: View, images: torch.Tensor, seed: int = 0):
    b, _, h, w = images.shape
    params = view.sample(b, h, w, torch.Generator().manual_seed(seed))
    return params, view.render(images, params)


# ----------------------------------------------------------------------------- the new ops


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_vertical_flip_rate_and_where_drawn(p):
    ramp = torch.arange(8.0).view(1, 1, 8, 1).expand(N, 1, 8, 8) / 8  # grows downwards
    params, out = sample_and_render(View([ops.VerticalFlip(p=p)], **IDENTITY), ramp)
    flipped = params["vertical_flip"]["apply"]
    assert_rate(flipped, p)
    assert torch.equal(out[:, 0, 0, 0] > out[:, 0, -1, 0], flipped)  # decreasing downwards = flipped
    torch.testing.assert_close(out[flipped], ramp[flipped].flip(-2))
    torch.testing.assert_close(out[~flipped], ramp[~flipped])


@pytest.mark.parametrize("turns", [(0, 1, 2, 3), (0, 2), (1,)])
def test_rotate90_is_uniform_over_its_turns_and_rotates_by_the_drawn_turn(turns):
    images = torch.zeros(N, 1, 6, 6)
    images[:, 0, 0, 1] = 1.0  # one marked pixel: its position after the op tells the rotation
    params, out = sample_and_render(View([ops.Rotate90(turns=turns)], **IDENTITY), images)
    drawn = params["rotate90"]["turns"]
    assert set(drawn.unique().tolist()) == set(turns)
    for k in turns:
        assert_rate(drawn == k, 1 / len(turns))
        chosen = drawn == k
        torch.testing.assert_close(out[chosen], torch.rot90(images[chosen], k, dims=(-2, -1)))


def test_rotate90_with_odd_turns_refuses_non_square_images():
    with pytest.raises(ValueError, match=r"square.*6x8.*random_resized_crop"):
        View([ops.Rotate90()], **IDENTITY).sample(2, 6, 8, torch.Generator())
    View([ops.Rotate90(turns=(0, 2))], **IDENTITY).sample(2, 6, 8, torch.Generator())  # half turns are fine


@pytest.mark.parametrize("scale, ratio", [((0.02, 0.4), (0.3, 1 / 0.3)), ((0.1, 0.2), (0.5, 2.0))])
def test_random_erasing_boxes_stay_in_their_scale_and_ratio_ranges(scale, ratio):
    size = 64
    op = ops.RandomErasing(p=0.5, scale=scale, ratio=ratio, value=0.0)
    params, out = sample_and_render(View([op], **IDENTITY), torch.ones(N, 1, size, size))
    erased = params["random_erasing"]["apply"]
    assert_rate(erased, 0.5)  # every box fits at these scales, so p is the erasing rate
    x0, y0, w, h = params["random_erasing"]["boxes"][erased].T.double()
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= size).all() and (y0 + h <= size).all()
    area, aspect = w * h / size**2, h / w
    # whole-pixel rounding moves the area and the ratio of boxes of >= 9 px by a few per cent
    assert area.min() >= scale[0] * 0.85 and area.max() <= scale[1] * 1.1
    assert aspect.min() >= ratio[0] * 0.8 and aspect.max() <= ratio[1] * 1.25
    span = scale[1] - scale[0]
    assert area.min() < scale[0] + 0.05 * span and area.max() > scale[1] - 0.05 * span
    assert abs(aspect.log().mean().item()) < 0.05  # log-uniform ratio: symmetric
    zeros = (out == 0).flatten(1).sum(1).double()  # the rendered hole is exactly the drawn box
    torch.testing.assert_close(zeros[erased], w * h)
    assert (zeros[~erased] == 0).all()


def test_random_erasing_fill_values():
    images = torch.full((64, 3, 16, 16), 0.5)
    colour = ops.RandomErasing(p=1.0, value=(0.1, 0.2, 0.3))
    params, out = sample_and_render(View([colour], mean=(0.0,) * 3, std=(1.0,) * 3), images)
    inside = AF.box_mask(params["random_erasing"]["boxes"], 16, 16).expand_as(out)
    expected = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1).expand_as(out)
    torch.testing.assert_close(out[inside], expected[inside])
    assert (out[~inside] == 0.5).all()

    noisy = View([ops.RandomErasing(p=1.0, scale=(0.3, 0.4))], mean=(0.0,) * 3, std=(1.0,) * 3)
    params, out = sample_and_render(noisy, torch.full((256, 3, 32, 32), 0.5))
    inside = AF.box_mask(params["random_erasing"]["boxes"], 32, 32).expand_as(out)
    noise = out[inside]
    assert noise.min() >= 0 and noise.max() < 1 and abs(noise.mean().item() - 0.5) < 0.01
    assert abs(noise.std().item() - math.sqrt(1 / 12)) < 0.01  # uniform on [0, 1)
    # a sample's noise depends on its seed only, not on the rest of its batch (chunked rendering)
    half = params.rows(slice(3, 7))
    torch.testing.assert_close(noisy.render(torch.full((4, 3, 32, 32), 0.5), half), out[3:7])


def test_hash_uniform_is_uniform_and_decorrelated():
    u = AF.hash_uniform(torch.arange(64), (3, 32, 32))
    assert u.min() >= 0 and u.max() < 1
    counts = torch.histc(u, bins=10, min=0, max=1)
    expected = u.numel() / 10
    assert ((counts - expected).abs() < 4 * math.sqrt(expected)).all()
    flat = u.flatten(1)
    neighbours = torch.corrcoef(torch.stack([flat[:, :-1].flatten(), flat[:, 1:].flatten()]))[0, 1]
    samples = torch.corrcoef(torch.stack([flat[:-1].flatten(), flat[1:].flatten()]))[0, 1]
    assert abs(neighbours) < 0.01 and abs(samples) < 0.01


# ----------------------------------------------------------------------------- one stream per op


def simclr_ops():
    return [ops.RandomResizedCrop(size=16), ops.HorizontalFlip(), ops.ColorJitter(0.8, 0.8, 0.8, 0.2),
            ops.Grayscale(), ops.GaussianBlur(), ops.Solarize()]


def test_adding_or_removing_an_op_leaves_every_other_ops_draws_unchanged():
    base = View(simclr_ops())
    with_more = View(simclr_ops()[:1] + [ops.VerticalFlip(), ops.Rotate90()] + simclr_ops()[1:] + [ops.RandomErasing()])
    without = View([op for op in simclr_ops() if not isinstance(op, ops.Grayscale)])
    drawn = [v.sample(256, 32, 32, torch.Generator().manual_seed(3)) for v in (base, with_more, without)]
    for key in base.keys:
        for other in drawn[1:]:
            if key in other:
                for name, value in drawn[0][key].items():
                    assert torch.equal(value, other[key][name]), (key, name)
    assert "grayscale" not in drawn[2] and len(drawn[1]) == len(drawn[0]) + 3


def test_ops_and_repeats_of_an_op_draw_from_different_streams():
    view = View([ops.HorizontalFlip(), ops.HorizontalFlip(), ops.VerticalFlip()])
    assert view.keys == ("horizontal_flip", "horizontal_flip#1", "vertical_flip")
    params = view.sample(N, 8, 8, torch.Generator().manual_seed(0))
    first, second, vertical = (params[k]["apply"] for k in view.keys)
    assert not torch.equal(first, second) and not torch.equal(first, vertical)
    assert_rate(first & second, 0.25)  # independent draws


def test_a_view_takes_one_number_per_batch_so_other_views_keep_their_draws():
    plain, extended = View(simclr_ops(), **IDENTITY), View(simclr_ops() + [ops.RandomErasing()], **IDENTITY)
    images = torch.randint(0, 256, (8, 1, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    second = View([ops.RandomResizedCrop(size=12), ops.VerticalFlip()], **IDENTITY)
    a = MultiView([plain, second], seed=5)(images)
    b = MultiView([extended, second], seed=5)(images)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[0], b[0])


def test_resume_of_a_state_from_an_older_version_warns_and_restarts_from_the_seed():
    views = MultiView([View(simclr_ops(), **IDENTITY)], seed=4)
    images = torch.zeros(4, 1, 24, 24, dtype=torch.uint8)
    fresh = views(images)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        views.load_state_dict({"seed": 4, "device_type": "cpu", "generator": torch.Generator().get_state()})
    assert any("older selfsup" in str(w.message) for w in caught)
    assert all(torch.equal(x, y) for x, y in zip(views(images), fresh))
    assert views.state_dict()["version"] == augment.multiview.STATE_VERSION


# ----------------------------------------------------------------------------- a user's op


CALLS = {"count": 0}


@register_op("test_negative")
class Negative(RandomOp):
    """Photographic negative (1 - x) with probability p: a user's op, defined in a test."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p
        self.__post_init__()

    def transform(self, images, params):
        CALLS["count"] += 1
        return 1.0 - images


def test_a_users_op_in_a_python_view_and_in_the_custom_recipe():
    images = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    norm = dict(mean=(0.0,) * 3, std=(1.0,) * 3)
    crop = ops.RandomResizedCrop(size=12, scale=(0.3, 1.0))
    plain, negative = (MultiView([View(o, **norm)], counts=[2], seed=1)(images) for o in ([crop], [crop, Negative(p=1.0)]))
    for a, b in zip(plain, negative):
        torch.testing.assert_close(b, 1.0 - a)  # the crop draws the same boxes: its stream is its own

    views = augment.get("custom", size=12, seed=1, **norm, views=[
        {"ops": [{"name": "random_resized_crop", "scale": [0.3, 1.0]}, {"name": "test_negative", "p": 1.0}], "count": 2},
    ])
    assert all(torch.equal(x, y) for x, y in zip(views(images), negative))
    assert "test_negative" in OPS.names() and OPS.describe()["test_negative"].startswith("Photographic negative")


def test_a_users_op_in_a_plain_training_loop():
    import selfsup

    backbone = selfsup.backbones.get("resnet_tiny", width=4)
    method = selfsup.methods.get("simclr", backbone=backbone, proj_output_dim=16)
    make_views = augment.get("custom", size=16, mean=(0.5,) * 3, std=(0.25,) * 3, views=[
        {"ops": ["random_resized_crop", "horizontal_flip", {"name": "test_negative", "p": 0.5}], "count": 2},
    ])
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01)
    images = torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8)
    before = CALLS["count"]
    for _ in range(2):
        out = method.training_step(selfsup.methods.ViewBatch(make_views(images), torch.zeros(8, dtype=torch.long),
                                                            torch.arange(8)))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        assert torch.isfinite(out.loss)
    assert CALLS["count"] > before


# ----------------------------------------------------------------------------- bad op specs


@pytest.mark.parametrize("spec, message", [
    ("horizntal_flip", r"Unknown augmentation op 'horizntal_flip'\. Did you mean: horizontal_flip\b"),
    ({"name": "random_resized_crop", "size": 8, "scal": [0.2, 1]}, r"has no option 'scal'\. Did you mean: scale\?"),
    ({"name": "horizontal_flip", "p": 2}, r"horizontal_flip\.p = 2 is invalid: expected a probability"),
    ({"name": "rotate90", "turns": [0, 4]}, r"rotate90\.turns = \[0, 4\] is invalid"),
    ({"name": "random_erasing", "value": "noise"}, r"random_erasing\.value = 'noise' is invalid"),
    ({"name": "color_jitter", "hue": 0.7}, r"color_jitter\.hue = 0\.7 is invalid"),
    ({"name": "gaussian_blur", "kernel_size": 4}, r"gaussian_blur\.kernel_size = 4 is invalid: expected an odd"),
    ({"p": 0.5}, r"needs a 'name' key"),
    (3, r"An op is a registered name"),
    ("random_resized_crop", r"'random_resized_crop' needs the option\(s\) 'size'"),
])
def test_bad_op_specs_get_errors_naming_the_key(spec, message):
    with pytest.raises((ConfigError, KeyError), match=message):
        make_op(spec)


@pytest.mark.parametrize("views, message", [
    ([{"ops": ["horizontal_flip", "vertcal_flip"]}], r"views\[0\]\.ops\[1\]: Unknown augmentation op 'vertcal_flip'\. "
                                                     r"Did you mean: vertical_flip\b"),
    ([{"opps": ["horizontal_flip"]}], r"views\[0\] has no key 'opps'\. Did you mean: ops\?"),
    ([{"ops": "horizontal_flip"}], r"views\[0\]\.ops must be a list"),
    ([{"ops": []}, {"ops": [], "count": 0}], r"views\[1\]\.count = 0 is invalid"),
    ([{"ops": [], "std": [0.0]}], r"views\[0\]: View\.std"),
    ([], r"needs a non-empty list of views"),
])
def test_bad_custom_views_get_errors_naming_the_entry(views, message):
    with pytest.raises(ConfigError, match=message):
        augment.get("custom", views=views, size=8)


def test_register_op_refuses_what_is_not_an_op_and_views_refuse_non_ops():
    with pytest.raises(TypeError, match="subclass of selfsup.augment.Op"):
        register_op("not_an_op")(dict)
    with pytest.raises(ConfigError, match=r"ops\[1\] = 'vertical_flip' is not an augmentation op"):
        View([ops.HorizontalFlip(), "vertical_flip"])
    with pytest.raises(ConfigError, match=r"specs\[0\]"):
        MultiView(["simclr"])


def test_viewspec_becomes_the_equivalent_op_list():
    spec = ViewSpec(size=24, scale=(0.2, 0.9), hflip_p=0.3, jitter=(0.1, 0.2, 0.3, 0.05), jitter_p=0.7, gray_p=0.4,
                    blur_p=0.6, blur_sigma=(0.2, 1.0), solarize_p=0.1)
    crop, flip, jitter, gray, blur, solarize = spec.to_view().ops
    assert (crop.size, crop.scale, crop.ratio) == (24, (0.2, 0.9), spec.ratio)
    assert (flip.p, jitter.strengths, jitter.p, gray.p) == (0.3, (0.1, 0.2, 0.3, 0.05), 0.7, 0.4)
    assert (blur.p, blur.sigma, blur.kernel_size, solarize.p, solarize.threshold) == (0.6, (0.2, 1.0), 3, 0.1, 0.5)


def test_crop_and_flip_fused_in_one_grid_equal_the_two_ops_one_after_the_other():
    crop, flip = ops.RandomResizedCrop(size=12, scale=(0.2, 1.0)), ops.HorizontalFlip(p=0.5)
    view = View([crop, flip], **IDENTITY)
    assert crop.fuse(flip, {}, {"apply": torch.ones(1, dtype=torch.bool)}) is not None
    images = torch.rand(64, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    params, fused = sample_and_render(view, images)
    separate = flip.apply(crop.apply(images, params["random_resized_crop"]), params["horizontal_flip"])
    torch.testing.assert_close(fused, separate, atol=1e-6, rtol=0)
    assert 0 < params["horizontal_flip"]["apply"].sum() < 64


def test_a_view_whose_first_op_works_in_place_leaves_the_callers_batch_unchanged():
    images = torch.rand(16, 1, 8, 8)
    kept = images.clone()
    view = View([ops.VerticalFlip(p=0.5)], **IDENTITY)  # some samples: written in place into its batch
    params = view.sample(16, 8, 8, torch.Generator().manual_seed(0))
    flipped = params["vertical_flip"]["apply"]
    out = view.render(images, params)
    assert 0 < flipped.sum() < 16 and torch.equal(images, kept)
    assert torch.equal(out[flipped], kept[flipped].flip(-2)) and torch.equal(out[~flipped], kept[~flipped])


# ----------------------------------------------------------------------------- gathered vs masked ops


@pytest.mark.parametrize("recipe", ["simclr", "byol", "multicrop"])
def test_masked_ops_render_the_views_the_gathered_ops_render(recipe, monkeypatch):
    """GPUs run each random op on the whole batch and keep it where chosen (no host sync); the CPU
    gathers the chosen samples. Both must make the same views: here both run on the CPU."""
    from selfsup.augment import op as op_module

    views = augment.get(recipe, size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = torch.randint(0, 256, (64, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    gathered = views(images, torch.Generator().manual_seed(1))
    monkeypatch.setattr(op_module, "GATHER_DEVICES", ())
    masked = views(images, torch.Generator().manual_seed(1))
    assert len(gathered) == len(masked)
    for a, b in zip(gathered, masked):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max().item()


def test_masked_rotate90_and_erasing_match_the_gathered_ones(monkeypatch):
    from selfsup.augment import op as op_module

    view = View([ops.Rotate90(), ops.RandomErasing(p=0.5), ops.VerticalFlip(p=0.5)], **IDENTITY)
    images = torch.rand(256, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    gathered = sample_and_render(view, images, seed=3)[1]
    monkeypatch.setattr(op_module, "GATHER_DEVICES", ())
    masked = sample_and_render(view, images, seed=3)[1]
    assert torch.equal(gathered, masked)
