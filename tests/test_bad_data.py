"""Bad inputs to image folders: every one ends in a DataError naming the file and the reason, or, with
skip_bad_images, in a counted and reported skip; never a crash in a worker or an out-of-memory kill.
All files are made in tmp_path; the whole module runs in a few seconds."""
from __future__ import annotations

import io
import logging
import os
import random
import struct
import time
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

import selfsup.data.folder as folder
from selfsup.data import ImageFolder, get
from selfsup.data.folder import DEFAULT_MAX_PIXELS, load_image
from selfsup.errors import DataError, user_message

SIZE = 16


def save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def noise(width: int = 48, height: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height 8-bit grey pixels, with almost no image data (bytes, instantly)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    )  # fmt: skip


def folder_with(root: Path, name: str, data: bytes) -> Path:
    """``root`` holding two good images and ``name`` with ``data``; returns the bad file's path."""
    save(root / "good1.png", noise(seed=1))
    save(root / "good2.jpg", noise(seed=2))
    bad = root / name
    bad.write_bytes(data)
    return bad


def error_of(ds, path: Path) -> str:
    """The message of the DataError that loading ``path`` from ``ds`` raises."""
    position = [p for p, _ in ds.samples].index(str(path))
    with pytest.raises(DataError) as info:
        ds[position]
    return str(info.value)


def check_message(message: str, path: Path, *fragments: str) -> None:
    assert str(path) in message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def loader_error(ds, path: Path) -> str:
    """Load all of ``ds`` through a 2-worker DataLoader; return the user message of the error."""
    batches = iter(DataLoader(ds, batch_size=1, num_workers=2, shuffle=False))
    try:
        with pytest.raises(DataError) as info:
            for _ in batches:
                pass
    finally:  # after a worker's error, torch waits 5 s per worker to join them; don't make the tests wait
        with mock.patch.object(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.1):
            batches._shutdown_workers()  # type: ignore[attr-defined]
    return user_message(info.value)


def skipped_reason(root: Path, path: Path, **kwargs) -> str:
    ds = get("folder", root=root, image_size=SIZE, skip_bad_images=True, **kwargs)
    assert len(ds) == 2 and [p for p, _ in ds.samples if p == str(path)] == []
    reasons = dict(ds.skipped)
    assert list(reasons) == [str(path)]
    return reasons[str(path)]


# --- 1-3: damaged, empty and non-image files ----------------------------------------------------------


def test_truncated_jpeg(tmp_path):
    data = encoded(noise(), "JPEG", quality=90)
    bad = folder_with(tmp_path, "cut.jpg", data[: len(data) // 2])
    ds = get("folder", root=tmp_path, image_size=SIZE)
    check_message(error_of(ds, bad), bad, "truncated", "--skip-bad-images")
    check_message(loader_error(ds, bad), bad, "truncated", "--skip-bad-images")
    assert "truncated" in skipped_reason(tmp_path, bad)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_refused_even_if_pil_would_pad_it(tmp_path, monkeypatch, fmt):
    """Some other library may set ImageFile.LOAD_TRUNCATED_IMAGES; a cut-off file is still refused."""
    data = encoded(noise(), fmt)
    bad = folder_with(tmp_path, f"cut.{fmt.lower()}", data[: len(data) // 2])
    (tmp_path / f"whole.{fmt.lower()}").write_bytes(data)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    ds = get("folder", root=tmp_path, image_size=SIZE)
    check_message(error_of(ds, bad), bad, "truncated")
    assert ds[[p for p, _ in ds.samples].index(str(tmp_path / f"whole.{fmt.lower()}"))][0].shape == (3, SIZE, SIZE)


def test_zero_byte_file(tmp_path):
    bad = folder_with(tmp_path, "empty.jpg", b"")
    ds = get("folder", root=tmp_path, image_size=SIZE)
    check_message(error_of(ds, bad), bad, "empty (0 bytes)", "--skip-bad-images")
    assert "empty" in skipped_reason(tmp_path, bad)


def test_text_file_named_png(tmp_path):
    bad = folder_with(tmp_path, "notes.png", b"hello, this is text and not an image\n" * 3)
    ds = get("folder", root=tmp_path, image_size=SIZE)
    check_message(error_of(ds, bad), bad, "not an image", "b'hello, this is ", "--skip-bad-images")
    assert "not an image" in skipped_reason(tmp_path, bad)


def test_broken_link(tmp_path):
    bad = folder_with(tmp_path, "placeholder", b"")
    bad.unlink()
    link = tmp_path / "gone.png"
    os.symlink(tmp_path / "nowhere.png", link)
    ds = get("folder", root=tmp_path, image_size=SIZE)
    check_message(error_of(ds, link), link, "does not exist")


# --- 4-6: colour modes, 16-bit images, tiny images ----------------------------------------------------


def mode_images() -> dict[str, tuple[Image.Image, dict]]:
    half = Image.new("RGBA", (10, 10), (255, 0, 0, 128))  # half-transparent red
    palette = Image.new("P", (10, 10), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    return {
        "gray.png": (Image.new("L", (10, 10), 100), {}),
        "gray_alpha.png": (Image.new("LA", (10, 10), (100, 0)), {}),  # fully transparent grey
        "half_red.png": (half, {}),
        "cmyk_red.jpg": (Image.new("CMYK", (10, 10), (0, 255, 255, 0)), {"quality": 95}),
        "palette_clear.png": (palette, {"transparency": 1}),  # blue, but index 1 is transparent
        "bilevel.png": (Image.new("1", (10, 10), 1), {}),
    }


@pytest.mark.parametrize("channels", [3, 1])
def test_colour_modes(tmp_path, channels):
    for name, (image, kwargs) in mode_images().items():
        save(tmp_path / name, image, **kwargs)
    ds = get("folder", root=tmp_path, image_size=SIZE, channels=channels)
    got = {Path(p).name: ds[i][0] for i, (p, _) in enumerate(ds.samples)}
    assert all(x.shape == (channels, SIZE, SIZE) and x.dtype == torch.uint8 for x in got.values())
    pixel = {name: x[:, 8, 8].tolist() for name, x in got.items()}
    if channels == 3:
        assert pixel["gray.png"] == [100] * 3 and pixel["bilevel.png"] == [255] * 3
        assert pixel["gray_alpha.png"] == [255] * 3  # transparent over white
        assert pixel["palette_clear.png"] == [255] * 3
        assert pixel["half_red.png"][0] == 255 and all(abs(v - 127) <= 1 for v in pixel["half_red.png"][1:])
        red = pixel["cmyk_red.jpg"]
        assert red[0] >= 245 and red[1] <= 10 and red[2] <= 10, red
    else:
        assert pixel["gray.png"] == [100] and pixel["gray_alpha.png"] == [255] and pixel["palette_clear.png"] == [255]
        assert abs(pixel["half_red.png"][0] - round(0.299 * 255 + 0.587 * 127 + 0.114 * 127)) <= 2
        assert abs(pixel["cmyk_red.jpg"][0] - 76) <= 4  # luma of red


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    save(tmp_path / "a_mid.png", Image.fromarray(np.full((6, 6), 100 * 257, dtype=np.uint16)))
    save(tmp_path / "b_dark.png", Image.fromarray(np.full((6, 6), 200, dtype=np.uint16)))  # dark, still 16-bit
    save(tmp_path / "c_white.png", Image.fromarray(np.full((6, 6), 65535, dtype=np.uint16)))
    save(tmp_path / "d_int.tif", Image.fromarray(np.full((6, 6), 40000, dtype=np.int32)))  # mode I
    assert Image.open(tmp_path / "a_mid.png").mode.startswith("I")
    ds = get("folder", root=tmp_path, image_size=SIZE)
    values = [ds[i][0] for i in range(4)]
    assert [int(v.float().mean()) for v in values] == [100, 1, 255, round(40000 / 257)]
    assert all(int(v.min()) == int(v.max()) for v in values)
    assert int(load_image(tmp_path / "a_mid.png", 4, 1).max()) == 100


def test_deep_grey_modes_without_a_file():
    """Mode I from an older Pillow's 16-bit PNG, 32-bit integers and floats (rules in load_image)."""
    as_l = lambda image, **kw: np.asarray(folder._to_mode(image, "L", **kw))  # noqa: E731
    assert as_l(Image.new("I", (2, 2), 200), sixteen_bit=True).max() == 1  # dark 16-bit PNG
    assert as_l(Image.new("I", (2, 2), 200)).max() == 200  # small values, unknown depth: 8-bit
    assert as_l(Image.new("I", (2, 2), 2**31 - 1)).max() == 255 and as_l(Image.new("I", (2, 2), -5)).max() == 0
    assert as_l(Image.new("F", (2, 2), 0.5)).max() == 128 and as_l(Image.new("F", (2, 2), 300.0)).max() == 255


def test_one_pixel_image(tmp_path):
    save(tmp_path / "dot.png", Image.new("RGB", (1, 1), (10, 200, 30)))
    save(tmp_path / "line.png", Image.new("RGB", (1, 500), (10, 200, 30)))
    ds = get("folder", root=tmp_path, image_size=SIZE)
    for i in range(2):
        image = ds[i][0]
        assert image.shape == (3, SIZE, SIZE) and image[:, 0, 0].tolist() == [10, 200, 30]


# --- 7: huge images --------------------------------------------------------------------------------


def test_huge_image_refused_before_decoding(tmp_path, monkeypatch):
    bad = folder_with(tmp_path, "huge.png", png_claiming(20000, 20000))
    band = tmp_path / "big.png"  # above our default limit, below PIL's error threshold (2x)
    band.write_bytes(png_claiming(10000, 9000))

    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    ds = get("folder", root=tmp_path, image_size=SIZE)
    start = time.perf_counter()
    check_message(error_of(ds, bad), bad, "too large", "400000000 pixels", str(DEFAULT_MAX_PIXELS), "not decoded")
    with pytest.warns(Image.DecompressionBombWarning):
        check_message(error_of(ds, band), band, "10000 x 9000 = 90000000 pixels", str(DEFAULT_MAX_PIXELS))
    assert time.perf_counter() - start < 1
    # PIL's own decompression-bomb limit still applies when ours is off
    unlimited = ImageFolder(tmp_path, SIZE, max_pixels=None)
    check_message(error_of(unlimited, bad), bad, "decompression bomb", "MAX_IMAGE_PIXELS")


def test_pixel_limit_is_configurable_and_applies_when_skipping(tmp_path):
    save(tmp_path / "small.png", noise(10, 10))
    big = save(tmp_path / "wide.png", noise(20, 10))
    (tmp_path / "huge.png").write_bytes(png_claiming(20000, 20000))
    ds = ImageFolder(tmp_path, SIZE, max_pixels=150)
    check_message(error_of(ds, big), big, "20 x 10 = 200 pixels", "limit of 150 pixels")
    assert ds[[p for p, _ in ds.samples].index(str(tmp_path / "small.png"))][0].shape == (3, SIZE, SIZE)
    skipping = ImageFolder(tmp_path, SIZE, max_pixels=150, skip_bad_images=True)
    assert [Path(p).name for p, _ in skipping.samples] == ["small.png"]
    assert sorted(Path(p).name for p, _ in skipping.skipped) == ["huge.png", "wide.png"]
    assert len(ImageFolder(tmp_path, SIZE, skip_bad_images=True)) == 2
    with pytest.raises(Exception, match="max_pixels"):
        ImageFolder(tmp_path, SIZE, max_pixels=0)


def test_huge_image_error_from_workers(tmp_path):
    bad = folder_with(tmp_path, "huge.png", png_claiming(20000, 20000))
    ds = get("folder", root=tmp_path, image_size=SIZE)
    check_message(loader_error(ds, bad), bad, "too large", str(DEFAULT_MAX_PIXELS))


# --- 8-9: symbolic link loops, unreadable files ----------------------------------------------------------


def test_symlink_loops_are_not_followed(tmp_path, caplog):
    flat = tmp_path / "flat"
    save(flat / "top.png", noise(seed=1))
    save(flat / "sub" / "inner.png", noise(seed=2))
    os.symlink(flat, flat / "sub" / "loop")
    with caplog.at_level(logging.WARNING, logger="selfsup.data.folder"):
        ds = get("folder", root=flat, image_size=SIZE)
    assert len(ds) == 2 and ds.skipped == [(str(flat / "sub" / "loop"), ds.skipped[0][1])]
    assert "not followed" in ds.skipped[0][1] and "loop" in caplog.text

    labelled = tmp_path / "labelled"
    save(labelled / "cats" / "a.png", noise(seed=3))
    save(labelled / "dogs" / "b.png", noise(seed=4))
    os.symlink(labelled / "cats", labelled / "cats" / "again")
    os.symlink(labelled, labelled / "everything")  # a top-level link back to the root
    ds = get("folder", root=labelled, image_size=SIZE)
    assert ds.classes == ["cats", "dogs"] and len(ds) == 2
    assert sorted(Path(p).name for p, _ in ds.skipped) == ["again", "everything"]


def test_unreadable_file(tmp_path, monkeypatch):
    bad = folder_with(tmp_path, "locked.png", encoded(noise(), "PNG"))
    if os.geteuid() == 0:  # root reads anything: make opening this one file fail instead

        def guarded_open(file, *args, **kwargs):
            if os.fspath(file) == str(bad):
                raise PermissionError(13, "Permission denied", str(bad))
            return open(file, *args, **kwargs)

        monkeypatch.setattr(folder, "open", guarded_open, raising=False)
    else:
        bad.chmod(0)
    ds = get("folder", root=tmp_path, image_size=SIZE)
    check_message(error_of(ds, bad), bad, "permission denied", "--skip-bad-images")
    check_message(loader_error(ds, bad), bad, "permission denied")
    assert "permission denied" in skipped_reason(tmp_path, bad)


# --- 10-11: empty classes, file names ----------------------------------------------------------------


def test_empty_class_folder_is_left_out_with_a_warning(tmp_path, caplog):
    save(tmp_path / "cats" / "a.png", noise(seed=1))
    save(tmp_path / "dogs" / "b.png", noise(seed=2))
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "readme.txt").write_text("no pictures yet")
    with caplog.at_level(logging.WARNING, logger="selfsup.data.folder"):
        ds = get("folder", root=tmp_path, image_size=SIZE)
    assert ds.classes == ["cats", "dogs"] and ds.num_classes == 2 and ds.labels.tolist() == [0, 1]
    assert ds.skipped == [(str(tmp_path / "birds"), ds.skipped[0][1])] and "no image files" in ds.skipped[0][1]
    assert str(tmp_path / "birds") in caplog.text


def test_class_whose_images_are_all_bad_stays_with_a_warning(tmp_path, caplog):
    save(tmp_path / "cats" / "a.png", noise(seed=1))
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "b.png").write_bytes(b"broken")
    with caplog.at_level(logging.WARNING, logger="selfsup.data.folder"):
        ds = get("folder", root=tmp_path, image_size=SIZE, skip_bad_images=True)
    assert ds.classes == ["cats", "dogs"] and len(ds) == 1 and len(ds.skipped) == 1
    assert "no readable images left" in caplog.text and "Skipped 1 of 2 images" in caplog.text


def test_unusual_file_names(tmp_path):
    save(tmp_path / "clâss ü" / "été 1.png", Image.new("RGB", (9, 7), (255, 0, 0)))
    save(tmp_path / "日本" / "日本.jpg", Image.new("RGB", (9, 7), (0, 0, 255)), quality=95)
    ds = get("folder", root=tmp_path, image_size=SIZE)
    assert ds.classes == ["clâss ü", "日本"]
    images, labels, _ = next(iter(DataLoader(ds, batch_size=2, num_workers=2)))
    assert images.shape == (2, 3, SIZE, SIZE) and labels.tolist() == [0, 1]
    assert images[0, :, 8, 8].tolist() == [255, 0, 0] and int(images[1, 2, 8, 8]) > 240


# --- 12: fuzzing -------------------------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        at = rng.randrange(len(out))
        if kind < 0.5:  # flip bits of one byte
            out[at] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
        elif kind < 0.7:  # truncate
            del out[max(at, 1):]
        elif kind < 0.85:  # insert random bytes
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:  # overwrite a header-sized span
            out[at : at + 4] = bytes(rng.randrange(256) for _ in range(4))
    return bytes(out)


def test_fuzzed_files_give_an_image_or_a_data_error(tmp_path):
    rng = random.Random(1234)
    seeds = {
        "png": encoded(noise(24, 20), "PNG"),
        "jpg": encoded(noise(24, 20), "JPEG", quality=80),
        "gray.png": encoded(Image.new("LA", (12, 9), (90, 200)), "PNG"),
    }
    path = tmp_path / "fuzz"
    outcomes = {"image": 0, "error": 0}
    start = time.perf_counter()
    for i in range(300):
        for suffix, data in seeds.items():
            if suffix == "gray.png" and i % 3:
                continue
            target = path.with_suffix("." + suffix.split(".")[-1])
            target.write_bytes(mutate(data, rng))
            for channels in (3, 1) if i % 10 == 0 else (3,):
                try:
                    image = load_image(target, 8, channels)
                except DataError as err:
                    assert str(target) in str(err) and "\n" not in str(err)
                    outcomes["error"] += 1
                else:
                    assert image.dtype == torch.uint8 and image.shape == (channels, 8, 8)
                    outcomes["image"] += 1
    assert outcomes["image"] > 20 and outcomes["error"] > 20, outcomes
    assert time.perf_counter() - start < 15
