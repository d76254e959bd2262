"""The decoded uint8 cache of image folders (selfsup.data.cache): equal to direct decoding byte for byte,
read without decoding, rebuilt when the folder or settings change, atomic, refusing a full disk, and
leaving out bad images exactly as ImageFolder does. Folders are a few tiny generated files in tmp_path."""
from __future__ import annotations

import json
import logging
import os
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import selfsup.data.cache as cache
import selfsup.data.folder as folder_module
from selfsup.data import CachedFolder, ImageFolder, cache_folder
from selfsup.data.cache import DATA_NAME, INDEX_NAME, default_cache_dir
from selfsup.errors import DataError

SIZE = 12


def noise(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return image.convert(mode)


def make_folder(root: Path) -> Path:
    """Two classes: JPEGs (small, large, grey) and PNGs (RGB, with alpha), odd sizes."""
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir(parents=True)
    noise(20, 16, 1).save(root / "cats" / "a.jpg", quality=90)
    noise(64, 40, 2).save(root / "cats" / "b.jpg", quality=85)  # >= 2 x SIZE: PIL's reduced-scale decode
    noise(15, 18, 3, "L").save(root / "cats" / "c.jpg")
    noise(17, 13, 4).save(root / "dogs" / "d.png")
    noise(14, 14, 5, "RGBA").save(root / "dogs" / "e.png")
    return root


def build(root: Path, cache_dir: Path, **kwargs) -> CachedFolder:
    skip = kwargs.pop("skip_bad_images", False)
    return cache_folder(ImageFolder(root, SIZE, **kwargs), cache_dir, skip_bad_images=skip, progress=False)


def entry_of(cache_dir: Path) -> Path:
    (entry,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    return entry


def forbid_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(folder_module, "_decode", refuse)
    monkeypatch.setattr(cache, "load_image", refuse)


@pytest.mark.parametrize("decoder", ["auto", "pil"])
def test_cache_equals_direct_decoding_byte_for_byte(tmp_path, decoder):
    root = make_folder(tmp_path / "images")
    direct = ImageFolder(root, SIZE, decoder=decoder)
    cached = build(root, tmp_path / "cache", decoder=decoder)
    assert len(cached) == len(direct) == 5
    assert cached.samples == direct.samples and torch.equal(cached.labels, direct.labels)
    assert (cached.classes, cached.channels, cached.image_size, cached.mean) == (
        direct.classes, direct.channels, direct.image_size, direct.mean)
    for i in range(len(direct)):
        image, label, index = cached[i]
        expected = direct[i]
        assert image.dtype == torch.uint8 and torch.equal(image, expected[0]), direct.samples[i]
        assert (label, index) == expected[1:]
    assert torch.equal(cached[-1][0], direct[4][0]) and cached[-1][2] == 4
    with pytest.raises(IndexError):
        cached[5]
    batch = cached.__getitems__([3, 0, 3])
    assert [i for _, _, i in batch] == [3, 0, 3] and torch.equal(batch[0][0], direct[3][0])


def test_second_construction_and_epochs_read_the_cache_without_decoding(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images")
    first = build(root, tmp_path / "cache")
    expected = torch.stack([first[i][0] for i in range(len(first))])
    data_file = entry_of(tmp_path / "cache") / DATA_NAME
    built_at = data_file.stat().st_mtime_ns
    forbid_decoding(monkeypatch)
    second = build(root, tmp_path / "cache")
    for _ in range(2):  # two epochs through a loader
        images = torch.cat([b[0] for b in DataLoader(second, batch_size=2, shuffle=False)])
        assert torch.equal(images, expected)
    assert data_file.stat().st_mtime_ns == built_at  # not rebuilt


def test_cache_works_in_worker_processes(tmp_path):
    root = make_folder(tmp_path / "images")
    cached = build(root, tmp_path / "cache")
    cached[0]  # maps the file in this process; workers must map it themselves
    assert cached.__getstate__()["_array"] is None
    images, labels, indices = next(iter(DataLoader(cached, batch_size=5, num_workers=2)))
    assert torch.equal(images, torch.stack([cached[i][0] for i in range(5)]))
    assert labels.tolist() == cached.labels.tolist() and indices.tolist() == list(range(5))


def change_touch(root: Path) -> str:
    os.utime(root / "cats" / "a.jpg", ns=(10**18, 10**18))
    return "1 file(s) changed"


def change_add(root: Path) -> str:
    noise(19, 19, 9).save(root / "dogs" / "f.png")
    return "1 file(s) added (first: dogs/f.png)"


def change_remove(root: Path) -> str:
    (root / "cats" / "c.jpg").unlink()
    return "1 file(s) removed (first: cats/c.jpg)"


def change_rewrite(root: Path) -> str:
    noise(30, 30, 8).save(root / "dogs" / "d.png")  # another size (and mtime)
    return "1 file(s) changed"


@pytest.mark.parametrize("change", [change_touch, change_add, change_remove, change_rewrite])
def test_a_changed_folder_rebuilds_the_cache_and_says_why(tmp_path, caplog, change):
    root = make_folder(tmp_path / "images")
    build(root, tmp_path / "cache")
    why = change(root)
    with caplog.at_level(logging.INFO, logger="selfsup.data.cache"):
        rebuilt = build(root, tmp_path / "cache")
    assert "Rebuilding the decoded cache" in caplog.text and why in caplog.text, caplog.text
    direct = ImageFolder(root, SIZE)
    assert rebuilt.samples == direct.samples
    assert all(torch.equal(rebuilt[i][0], direct[i][0]) for i in range(len(direct)))


def test_other_settings_rebuild_or_use_their_own_entry(tmp_path, caplog, monkeypatch):
    root = make_folder(tmp_path / "images")
    build(root, tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="selfsup.data.cache"):
        build(root, tmp_path / "cache", decoder="pil")
    assert "decoder was 'auto' when it was built, now 'pil'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="selfsup.data.cache"):
        build(root, tmp_path / "cache", max_pixels=10_000)
    assert "max_pixels was" in caplog.text
    grey = cache_folder(ImageFolder(root, 8, channels=1), tmp_path / "cache", progress=False)
    assert grey[0][0].shape == (1, 8, 8)
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 2  # one entry per size/channels
    monkeypatch.setitem(cache._settings.__globals__, "CACHE_FORMAT", 99)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="selfsup.data.cache"):
        build(root, tmp_path / "cache", max_pixels=10_000)
    assert "format was 1 when it was built, now 99" in caplog.text


def test_an_interrupted_build_leaves_no_valid_looking_cache(tmp_path, monkeypatch, caplog):
    root = make_folder(tmp_path / "images")
    real = cache.load_image
    calls = []

    def fails_on_the_fourth(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 4:
            raise KeyboardInterrupt  # like Ctrl-C half way
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "load_image", fails_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        build(root, tmp_path / "cache")
    entry = entry_of(tmp_path / "cache")
    assert sorted(p.name for p in entry.iterdir()) == ["lock"]  # no index, no data, no temporary file
    monkeypatch.setattr(cache, "load_image", real)
    (entry / f"{DATA_NAME}.tmp-99999").write_bytes(b"\0" * 100)  # as left by a killed process
    with caplog.at_level(logging.INFO, logger="selfsup.data.cache"):
        rebuilt = build(root, tmp_path / "cache")
    assert "Building the decoded cache" in caplog.text and "no complete cache there yet" in caplog.text
    assert sorted(p.name for p in entry.iterdir()) == [DATA_NAME, INDEX_NAME, "lock"]
    assert torch.equal(rebuilt[4][0], ImageFolder(root, SIZE)[4][0])


def test_a_damaged_cache_file_is_rebuilt(tmp_path, caplog):
    root = make_folder(tmp_path / "images")
    build(root, tmp_path / "cache")
    data_file = entry_of(tmp_path / "cache") / DATA_NAME
    with open(data_file, "r+b") as handle:
        handle.truncate(100)
    with caplog.at_level(logging.INFO, logger="selfsup.data.cache"):
        rebuilt = build(root, tmp_path / "cache")
    assert "has 100 bytes, expected" in caplog.text
    assert torch.equal(rebuilt[4][0], ImageFolder(root, SIZE)[4][0])
    (data_file.parent / INDEX_NAME).write_text("{not json")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="selfsup.data.cache"):
        build(root, tmp_path / "cache")
    assert "no complete cache there yet" in caplog.text


def test_refuses_when_the_cache_would_not_fit_on_disk(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(DataError) as info:
        build(root, tmp_path / "cache")
    message = str(info.value)
    need = 5 * 3 * SIZE * SIZE + 5 * cache._INDEX_BYTES_PER_FILE
    assert f"needs {need / 1000:.1f} KB" in message and "only 1.0 KB free" in message, message
    assert "5 images x 432 bytes" in message and "data.cache_dir" in message and str(tmp_path / "cache") in message
    assert sorted(p.name for p in entry_of(tmp_path / "cache").iterdir()) == ["lock"]


def add_bad_images(root: Path) -> list[Path]:
    good = (root / "cats" / "a.jpg").read_bytes()
    cut = root / "cats" / "cut.jpg"
    cut.write_bytes(good[: len(good) // 2])
    text = root / "dogs" / "notes.png"
    text.write_text("not an image")
    return [cut, text]


def test_bad_images_are_skipped_and_counted_as_without_the_cache(tmp_path, caplog, monkeypatch):
    root = make_folder(tmp_path / "images")
    bad = add_bad_images(root)
    with caplog.at_level(logging.WARNING, logger="selfsup.data.folder"):
        direct = ImageFolder(root, SIZE, skip_bad_images=True)
    direct_log = [r.getMessage() for r in caplog.records if "Skipped" in r.getMessage()]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="selfsup.data.folder"):
        cached = build(root, tmp_path / "cache", skip_bad_images=True)
    cached_log = [r.getMessage() for r in caplog.records if "Skipped" in r.getMessage()]
    assert cached.skipped == direct.skipped and [p for p, _ in cached.skipped] == [str(p) for p in bad]
    assert cached_log == direct_log and "Skipped 2 of 7 images" in cached_log[0]
    assert cached.samples == direct.samples and len(cached) == 5
    assert all(torch.equal(cached[i][0], direct[i][0]) for i in range(5))
    forbid_decoding(monkeypatch)  # from the index: the same skips, nothing decoded
    again = build(root, tmp_path / "cache", skip_bad_images=True)
    assert again.skipped == direct.skipped and again.samples == direct.samples


def test_without_skipping_a_bad_image_gives_the_same_error_as_loading_it(tmp_path):
    root = make_folder(tmp_path / "images")
    cut, _ = add_bad_images(root)
    direct = ImageFolder(root, SIZE)
    with pytest.raises(DataError) as loading:
        direct[[p for p, _ in direct.samples].index(str(cut))]
    with pytest.raises(DataError) as building:
        build(root, tmp_path / "cache")
    assert str(building.value) == str(loading.value) and "--skip-bad-images" in str(building.value)
    build(root, tmp_path / "cache", skip_bad_images=True)  # a cache that recorded the bad files ...
    with pytest.raises(DataError) as reading:
        build(root, tmp_path / "cache")  # ... still refuses them without skip_bad_images
    assert str(reading.value) == str(loading.value)


def test_only_bad_images_is_the_same_error_and_no_cache(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="None of the 1 images"):
        build(root, tmp_path / "cache", skip_bad_images=True)
    assert not (entry_of(tmp_path / "cache") / INDEX_NAME).exists()


def test_default_cache_dir_is_next_to_the_images_unless_read_only(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "images")
    assert default_cache_dir(root, tmp_path / "runs") == root / ".selfsup-cache"
    cached = build(root, default_cache_dir(root, tmp_path / "runs"))
    assert ImageFolder(root, SIZE).samples == cached.samples  # the hidden cache folder is not scanned
    monkeypatch.setattr(cache.os, "access", lambda path, mode: False)
    assert default_cache_dir(root, tmp_path / "runs") == tmp_path / "runs" / ".selfsup-cache"


def test_train_with_cache_builds_it_once_and_trains(tmp_path, caplog):
    from selfsup.config import load
    from selfsup.training import build_datasets, train

    root = make_folder(tmp_path / "images")
    config = load(overrides=[
        "data.name=folder", f"data.root={root}", f"data.image_size={SIZE}", "data.cache=true",
        "backbone.name=resnet_tiny", "batch_size=4", "epochs=1", "precision=32-true", "progress_bar=false",
        f"output_dir={tmp_path / 'runs'}", "monitor.probe=false", "name=a"])
    with caplog.at_level(logging.INFO, logger="selfsup.data.cache"):
        result = train(config)
        train_set, _ = build_datasets(config)  # as a second run would
    assert result.backbone_path.is_file() and isinstance(train_set, CachedFolder)
    # once each: the centred squares evaluation reads and the whole images training crops (folder_crop: full)
    assert caplog.text.count("Building the decoded cache") == 2 and "Rebuilding" not in caplog.text
    entries = sorted(p for p in (root / ".selfsup-cache").iterdir() if p.is_dir())
    assert [p.name.endswith("-whole") for p in entries] == [False, True]
    for entry in entries:
        index = json.loads((entry / INDEX_NAME).read_text())
        assert index["count"] == 5 and index["image_size"] == SIZE and index["bad"] == []
    assert len(json.loads((entries[1] / INDEX_NAME).read_text())["extents"]) == 5
