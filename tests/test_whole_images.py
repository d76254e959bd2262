"""Training crops from whole folder images (``data.folder_crop: full``): decoding into a canvas, crop
boxes inside each image's extent, the views never showing the padding, the loader and the cache."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from selfsup.augment import FramedImages, MultiView, View, functional as AF, ops, view_geometry
from selfsup.augment.pipeline import CENTRE_SQUARE
from selfsup.config import load
from selfsup.data import ImageFolder, WholeImageView, cache_folder, split_train_val
from selfsup.data.decoding import fit_in_canvas, fitted_size
from selfsup.data.folder import load_image, load_whole_image
from selfsup.errors import ConfigError, DataError

MARK = 255  # the padding value in these tests; the pictures themselves stay below it


def striped(path: Path, width: int, height: int) -> None:
    """A picture with a red left edge, a blue right edge and grey between (values < MARK)."""
    image = Image.new("RGB", (width, height), (100, 100, 100))
    strip = max(1, width // 10)
    image.paste((200, 0, 0), (0, 0, strip, height))
    image.paste((0, 0, 200), (width - strip, 0, width, height))
    image.save(path)


def test_per_sample_boxes_stay_inside_each_extent_and_keep_the_scale_range():
    extents = torch.tensor([[24, 32], [32, 11], [1, 32], [32, 32]] * 250)
    g = torch.Generator().manual_seed(0)
    boxes = AF.sample_crop_boxes(extents[:, 0], extents[:, 1], len(extents), (0.25, 1.0), (3 / 4, 4 / 3), generator=g)
    x0, y0, w, h = boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (w >= 1).all() and (h >= 1).all()
    assert (x0 + w <= extents[:, 1]).all() and (y0 + h <= extents[:, 0]).all()
    area = (w * h).float() / (extents[:, 0] * extents[:, 1]).float()
    square = extents[:, 0] == extents[:, 1]  # boxes of square images always find a try that fits
    assert area[square].min() >= 0.25 * 0.85 and area[square].max() <= 1.0
    # the random draws do not depend on the sizes: full-canvas extents give the scalar path's boxes
    same = AF.sample_crop_boxes(torch.full((6,), 32), torch.full((6,), 32), 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(same, AF.sample_crop_boxes(32, 32, 6, generator=torch.Generator().manual_seed(3)))


def test_fallback_boxes_of_thin_images_clamp_the_aspect_ratio_per_sample():
    # a 1 x 32 strip: no try fits, so the central box with the ratio clamped to 4/3 (as torchvision)
    boxes = AF.sample_crop_boxes(torch.tensor([1, 32]), torch.tensor([32, 32]), 2, generator=torch.Generator().manual_seed(0))
    assert boxes[0].tolist() == [15, 0, 1, 1]  # round(1 * 4/3) = 1 wide, centred
    assert boxes[1, 2] <= 32 and boxes[1, 3] <= 32


def test_fit_in_canvas_keeps_the_whole_image_in_the_top_left_corner():
    image = torch.zeros(3, 30, 90, dtype=torch.uint8)
    image[:, :, :10] = 200  # left edge
    image[:, :, -10:] = 50  # right edge
    canvas, extent = fit_in_canvas(image, 36)
    assert extent == fitted_size(30, 90, 36) == (12, 36)
    assert canvas.shape == (3, 36, 36) and canvas[:, 12:].sum() == 0  # padding below the image
    assert canvas[0, 6, 0] == 200 and canvas[0, 6, 35] == 50  # both edges survive (a centre crop loses them)


def test_load_whole_image_pil_and_torchvision_paths_agree(tmp_path):
    striped(tmp_path / "wide.jpg", 120, 40)
    striped(tmp_path / "tall.png", 30, 90)
    for decoder in ("pil", "torchvision", "auto"):
        canvas, extent = load_whole_image(tmp_path / "wide.jpg", 48, 3, decoder=decoder)
        assert extent == (16, 48) and canvas[:, 16:].sum() == 0
        assert canvas[0, 8, 1] > 150 and canvas[2, 8, 46] > 150, decoder  # red left edge, blue right edge
    canvas, extent = load_whole_image(tmp_path / "tall.png", 48, 1)
    assert canvas.shape == (1, 48, 48) and extent == (48, 16) and canvas[:, :, 16:].sum() == 0
    centre = load_image(tmp_path / "wide.jpg", 48, 3)  # evaluation's centred square lost both edges
    assert centre[0].max() < 150 and centre[2].max() < 150
    with pytest.raises(DataError, match="missing.jpg"):
        load_whole_image(tmp_path / "missing.jpg", 48, 3)


def test_views_of_framed_images_never_show_the_padding():
    g = torch.Generator().manual_seed(0)
    pixels = torch.full((64, 3, 32, 32), MARK, dtype=torch.uint8)
    extents = torch.stack([torch.randint(1, 33, (64,), generator=g), torch.randint(1, 33, (64,), generator=g)], 1)
    for i, (h, w) in enumerate(extents.tolist()):
        pixels[i, :, :h, :w] = torch.randint(0, 200, (3, h, w), generator=g, dtype=torch.uint8)
    crop = View([ops.RandomResizedCrop(size=16, scale=(0.08, 1.0)), ops.HorizontalFlip()], mean=(0.0,) * 3, std=(1.0,) * 3)
    no_crop = View([ops.VerticalFlip()], mean=(0.0,) * 3, std=(1.0,) * 3)
    views = MultiView([crop, no_crop], counts=[3, 1], seed=1)(FramedImages(pixels, extents))
    for view in views:
        assert view.max() < 200 / 255 + 1e-6  # bilinear samples stay inside each image: no 255 leaks in
    assert views[3].shape == (64, 3, 32, 32)  # a view without a leading crop gets the centred square
    square = AF.centre_square_boxes(extents)
    assert torch.equal(views.params[3][CENTRE_SQUARE]["boxes"], square)
    # its geometry maps the view onto the square in canvas pixels (then the vertical flip)
    geometry = view_geometry(no_crop, views.params[3], 32, 32)
    flipped = views.params[3]["vertical_flip"]["apply"]
    assert torch.equal(geometry[:, 0], square[:, 0].double()) and torch.equal(geometry[:, 1], square[:, 2].double())
    expected_y0 = torch.where(flipped, square[:, 1] + square[:, 3], square[:, 1]).double()
    assert torch.equal(geometry[:, 2], expected_y0)


def test_full_scale_crops_see_both_sides_of_a_wide_image(tmp_path):
    """The point of the change: with centre squares a crop never reaches a wide image's sides."""
    (tmp_path / "photos").mkdir()
    for i in range(8):
        striped(tmp_path / "photos" / f"{i}.png", 96, 72)  # 4:3, edges of 9 px; the centred square drops 12
    folder = ImageFolder(tmp_path / "photos", 32)
    view = View([ops.RandomResizedCrop(size=16, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))], mean=(0.0,) * 3, std=(1.0,) * 3)
    centre = MultiView([view])(torch.stack([folder[i][0] for i in range(8)]))[0]
    whole_set = WholeImageView(folder)
    batch, _, _ = whole_set.collate()([whole_set[i] for i in range(8)])
    whole = MultiView([view])(batch)[0]
    red = lambda v: (v[:, 0] > 0.6) & (v[:, 2] < 0.2)  # noqa: E731
    blue = lambda v: (v[:, 2] > 0.6) & (v[:, 0] < 0.2)  # noqa: E731
    assert not red(centre).any() and not blue(centre).any()
    assert red(whole).flatten(1).any(1).all() and blue(whole).flatten(1).any(1).all()


def test_whole_image_view_of_a_subset_and_of_the_cache_give_the_same_canvases(tmp_path):
    (tmp_path / "photos" / "a").mkdir(parents=True)
    (tmp_path / "photos" / "b").mkdir()
    for i, (w, h) in enumerate([(60, 40), (40, 60), (50, 50), (90, 30), (33, 70), (64, 48)]):
        striped(tmp_path / "photos" / "ab"[i % 2] / f"{i}.jpg", w, h)
    folder = ImageFolder(tmp_path / "photos", 24)
    train, _ = split_train_val(folder, 0.34, seed=0)
    direct = WholeImageView(train)
    cached = cache_folder(ImageFolder(tmp_path / "photos", 24), tmp_path / "cache")
    with pytest.raises(ConfigError, match="whole-image cache"):
        WholeImageView(cached)
    cached.whole = cache_folder(ImageFolder(tmp_path / "photos", 24), tmp_path / "cache", fit="full")
    assert cached.whole.entry != cached.entry and cached.whole.entry.name.endswith("-whole")
    from_cache = WholeImageView(split_train_val(cached, 0.34, seed=0)[0])
    assert len(direct) == len(from_cache) == len(train)
    for i in range(len(direct)):
        a, b = direct[i], from_cache[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2:] == b[2:] == (train[i][1], i)
        h, w = a[1].tolist()
        assert max(h, w) == 24 and math.isclose(h / w, Image.open(folder.samples[train.indices[i]][0]).size[::-1][0]
                                                / Image.open(folder.samples[train.indices[i]][0]).size[0], rel_tol=0.1)


def test_training_on_a_folder_crops_whole_images_and_evaluates_centred_squares(tmp_path, monkeypatch):
    from selfsup.training import train

    for split in ("train", "test"):
        for label in ("a", "b"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(6):
                striped(tmp_path / split / label / f"{i}.jpg", 48 + 8 * i, 32)
    seen = []
    real = MultiView.__call__

    def recording(self, images, generator=None):
        seen.append(type(images).__name__)
        return real(self, images, generator)

    monkeypatch.setattr(MultiView, "__call__", recording)
    overrides = ["data.name=folder", f"data.root={tmp_path / 'train'}", f"data.eval_root={tmp_path / 'test'}",
                 "data.image_size=16", "backbone.name=resnet_tiny", "backbone.width=4", "batch_size=4", "epochs=1",
                 "progress_bar=false", f"output_dir={tmp_path / 'runs'}", "precision=32-true"]
    result = train(load(overrides=[*overrides, "name=whole", "data.cache=true"]))
    assert seen and set(seen) == {"FramedImages"} and "knn/top1" in result.metrics
    assert sorted(p.name.endswith("-whole") for p in (tmp_path / "train" / ".selfsup-cache").iterdir()) == [False, True]
    seen.clear()
    train(load(overrides=[*overrides, "name=centre", "data.folder_crop=center"]))
    assert seen and set(seen) == {"Tensor"}
    with pytest.raises(ConfigError, match="'data.folder_crop' must be one of"):
        load(overrides=[*overrides, "data.folder_crop=whole"])


def test_batched_reads_of_the_whole_image_cache_equal_single_reads(tmp_path):
    (tmp_path / "photos").mkdir()
    for i, (w, h) in enumerate([(60, 40), (40, 60), (90, 30), (64, 48)]):
        striped(tmp_path / "photos" / f"{i}.png", w, h)
    cached = cache_folder(ImageFolder(tmp_path / "photos", 20), tmp_path / "cache")
    cached.whole = cache_folder(ImageFolder(tmp_path / "photos", 20), tmp_path / "cache", fit="full")
    view = WholeImageView(split_train_val(cached, 0.25, seed=1)[0])
    batched = view.__getitems__([2, 0, -1])
    for (canvas, extent, label, index), single in zip(batched, [view[2], view[0], view[len(view) - 1]]):
        assert torch.equal(canvas, single[0]) and torch.equal(extent, single[1]) and label == single[2]
    assert [item[3] for item in batched] == [2, 0, -1]


def test_framed_images_refuse_extents_outside_the_canvas_and_rows_keep_them():
    pixels = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(DataError, match="extents must lie in 1..8"):
        FramedImages(pixels, torch.tensor([[8, 9], [4, 4]]))
    with pytest.raises(DataError, match="square canvases"):
        FramedImages(torch.zeros(2, 1, 8, 6), torch.tensor([[8, 6], [4, 4]]))
    batch = FramedImages(pixels, torch.tensor([[8, 3], [4, 4]]))
    assert batch[1:].extents.tolist() == [[4, 4]] and batch.to("cpu").extents.tolist() == [[8, 3], [4, 4]]
