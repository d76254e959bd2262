"""The folder data path: torchvision decoding in the workers vs PIL, decoding JPEGs on the training device
(run here on the CPU; nvjpeg itself needs a GPU), the training loader's options, torch.compile of the
backbone, and the config keys of all of these. Images are a few tiny files made in tmp_path."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader

import selfsup.data.folder as folder_module
from selfsup.config import load
from selfsup.data import DataSubset, EpochShuffleSampler, ImageFolder, WholeImageView
from selfsup.data.decoding import center_square_resize
from selfsup.data.device_decode import (
    DeviceDecodeView,
    EncodedCollate,
    EncodedImages,
    EncodedJPEG,
    read_plain_jpeg,
    resolve_decode_on_device,
)
from selfsup.data.folder import load_image
from selfsup.errors import ConfigError, DataError

SIZE = 16


def photo(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    """Smooth noise: JPEG-compresses like a photograph, not like white noise."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return image.filter(ImageFilter.GaussianBlur(1.5)).convert(mode)


def count_torchvision_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = folder_module.decode_jpeg_bytes

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(folder_module, "decode_jpeg_bytes", counting)
    return calls


# --- decoding in the workers: torchvision vs PIL ------------------------------------------------------


@pytest.mark.parametrize("size", [(40, 30), (23, 31), (10, 12)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("channels", [3, 1])
def test_torchvision_jpeg_decoding_matches_pil_within_a_few_levels(tmp_path, monkeypatch, size, mode, channels):
    path = tmp_path / "x.jpg"
    photo(*size, seed=sum(size), mode=mode).save(path, quality=90)
    calls = count_torchvision_calls(monkeypatch)
    by_pil = load_image(path, SIZE, channels, decoder="pil")
    assert calls == []
    by_torchvision = load_image(path, SIZE, channels, decoder="torchvision")
    assert calls == [1]
    assert by_torchvision.shape == by_pil.shape == (channels, SIZE, SIZE) and by_torchvision.dtype == torch.uint8
    diff = (by_torchvision.int() - by_pil.int()).abs()
    assert diff.float().mean() < 1.0 and diff.max() <= 6, (diff.float().mean(), diff.max())


@pytest.mark.parametrize("image", [photo(30, 20, 1), photo(9, 11, 2, "L"), photo(12, 12, 3).convert("RGBA")])
def test_png_is_always_decoded_by_pil(tmp_path, monkeypatch, image):
    """torchvision's decode_png crashes the process on damaged PNGs: PNGs never reach it."""
    path = tmp_path / "x.png"
    image.save(path)
    calls = count_torchvision_calls(monkeypatch)
    assert torch.equal(load_image(path, SIZE, 3, decoder="torchvision"), load_image(path, SIZE, 3, decoder="pil"))
    assert calls == []


def test_auto_leaves_large_jpegs_to_pils_reduced_scale_decoding(tmp_path, monkeypatch):
    photo(2 * SIZE - 1, 40, 1).save(tmp_path / "small.jpg")
    photo(2 * SIZE, 40, 2).save(tmp_path / "large.jpg")
    photo(30, 30, 3, "CMYK").save(tmp_path / "cmyk.jpg")
    calls = count_torchvision_calls(monkeypatch)
    load_image(tmp_path / "small.jpg", SIZE, 3)  # auto
    assert calls == [1]
    load_image(tmp_path / "large.jpg", SIZE, 3)
    load_image(tmp_path / "cmyk.jpg", SIZE, 3, decoder="torchvision")  # CMYK: PIL converts it
    assert calls == [1]
    load_image(tmp_path / "large.jpg", SIZE, 3, decoder="torchvision")
    assert calls == [1, 1]


def test_exif_orientation_is_applied_by_both_decoders(tmp_path):
    image = Image.new("RGB", (30, 20), (255, 0, 0))
    image.paste(Image.new("RGB", (15, 20), (0, 0, 255)), (15, 0))  # red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: left half goes on top
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    for decoder in ("pil", "torchvision"):
        out = load_image(tmp_path / "rotated.jpg", 20, 3, decoder=decoder)
        assert out[0, 2, 10] > 200 and out[2, 2, 10] < 60, decoder  # top: red
        assert out[2, -3, 10] > 200 and out[0, -3, 10] < 60, decoder  # bottom: blue


def test_damaged_jpegs_give_the_same_error_whatever_the_decoder(tmp_path):
    data = io.BytesIO()
    photo(40, 30, 1).save(data, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    (tmp_path / "text.jpg").write_bytes(b"\xff\xd8 not really a jpeg" * 4)
    for name in ("cut.jpg", "text.jpg"):
        messages = set()
        for decoder in ("pil", "torchvision", "auto"):
            with pytest.raises(DataError) as info:
                load_image(tmp_path / name, SIZE, 3, decoder=decoder)
            messages.add(str(info.value))
        assert len(messages) == 1 and str(tmp_path / name) in messages.pop()


def test_center_square_resize_matches_pils_box_resize_on_even_crops():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    pixels = np.array(noise.filter(ImageFilter.GaussianBlur(1)))
    ours = center_square_resize(torch.from_numpy(pixels).permute(2, 0, 1), SIZE)
    pil = Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=(10, 0, 50, 40))
    theirs = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
    diff = (ours.int() - theirs.int()).abs()
    inner = diff[:, 1:-1, 1:-1]  # PIL reads pixels outside the box at its edges; we crop first
    assert inner.max() <= 1 and diff.float().mean() < 1.0, (inner.max(), diff.float().mean())
    assert center_square_resize(torch.zeros(1, 7, 5, dtype=torch.uint8), 5).shape == (1, 5, 5)
    with pytest.raises(ValueError, match="uint8"):
        center_square_resize(torch.zeros(3, 8, 8), 4)


def test_decoder_option_is_checked():
    with pytest.raises(ConfigError, match="one of auto, torchvision, pil"):
        folder_module.resolve_decoder("libjpeg")
    with pytest.raises(ConfigError, match="only applies to 'folder'"):
        from selfsup.data import get

        get("digits", decoder="pil")


# --- decoding on the training device (CPU here) -------------------------------------------------------


def device_folder(root: Path) -> Path:
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    photo(40, 30, 1).save(root / "a" / "1.jpg", quality=90)
    photo(21, 35, 2, "L").save(root / "a" / "2.jpg", quality=90)
    photo(26, 22, 3).save(root / "a" / "3.png")
    photo(30, 30, 4, "CMYK").save(root / "b" / "4.jpg")
    exif = Image.Exif()
    exif[0x0112] = 3
    photo(24, 28, 5).save(root / "b" / "5.jpg", exif=exif)
    photo(18, 18, 6).save(root / "b" / "6.jpg", quality=70)
    return root


def test_device_view_ships_plain_upright_jpegs_as_bytes(tmp_path):
    root = device_folder(tmp_path)
    ds = ImageFolder(root, SIZE, decoder="torchvision")
    view = DeviceDecodeView(ds)
    kinds = {Path(ds.samples[i][0]).name: type(view[i][0]).__name__ for i in range(len(view))}
    assert kinds == {"1.jpg": "EncodedJPEG", "2.jpg": "EncodedJPEG", "3.png": "Tensor", "4.jpg": "Tensor",
                     "5.jpg": "Tensor", "6.jpg": "EncodedJPEG"}  # PNG, CMYK and rotated ones: decoded by the worker
    item, label, index = view[0]
    assert bytes(item.data.numpy()) == (root / "a" / "1.jpg").read_bytes() and item.path == ds.samples[0][0]
    assert (label, index) == (0, 0)
    assert read_plain_jpeg(str(root / "a" / "1.jpg"), max_pixels=100) is None  # too large: the CPU path refuses it
    cut = root / "b" / "7.jpg"
    cut.write_bytes((root / "a" / "1.jpg").read_bytes()[:300])
    assert read_plain_jpeg(str(cut), None) is None


def test_collate_of_variable_length_bytes_and_decode_equal_worker_decoding(tmp_path):
    root = device_folder(tmp_path)
    ds = ImageFolder(root, SIZE, decoder="torchvision")
    view = DeviceDecodeView(ds)
    loader = DataLoader(view, batch_size=6, collate_fn=view.collate(), num_workers=2)
    images, labels, indices = next(iter(loader))
    assert isinstance(images, EncodedImages) and len(images) == 6
    lengths = {len(x.data) for x in images.items if isinstance(x, EncodedJPEG)}
    assert len(lengths) == 3  # three JPEGs of different byte lengths in one batch
    decoded = images.decode("cpu")
    assert decoded.shape == (6, 3, SIZE, SIZE) and decoded.dtype == torch.uint8
    expected = torch.stack([ds[i][0] for i in range(6)])
    assert torch.equal(decoded, expected)  # the same crop + resize as the workers' torchvision path
    assert labels.tolist() == ds.labels.tolist() and indices.tolist() == list(range(6))
    stacked, _, _ = EncodedCollate(SIZE, 3)([(ds[2][0], 0, 2), (ds[3][0], 1, 3)])
    assert isinstance(stacked, torch.Tensor) and stacked.shape == (2, 3, SIZE, SIZE)  # all decoded: a plain batch


def test_device_view_of_a_subset_and_a_clear_error_for_other_data(tmp_path):
    ds = ImageFolder(device_folder(tmp_path), SIZE)
    view = DeviceDecodeView(DataSubset(ds, [5, 0]))
    assert len(view) == 2 and view[0][1:] == (1, 0) and view[0][0].path == ds.samples[5][0]
    with pytest.raises(ConfigError, match="decode_on_device needs an image folder"):
        DeviceDecodeView(torch.utils.data.TensorDataset(torch.zeros(2)))


def test_a_batch_the_decoder_rejects_names_its_files():
    bogus = EncodedJPEG(torch.frombuffer(bytearray(b"\xff\xd8\xff\xe0 nothing"), dtype=torch.uint8), "x/bad.jpg")
    with pytest.raises(DataError, match=r"files: x/bad\.jpg.*decode_on_device=false"):
        EncodedImages([bogus], SIZE, 3).decode("cpu")


def test_lightning_leaves_encoded_batches_on_the_cpu_and_copies_tensors_non_blocking(monkeypatch):
    """What SelfSupervisedModule's default transfer_batch_to_device does with our batches."""
    seen = []
    real_to = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        seen.append(kwargs.get("non_blocking"))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    jpeg = EncodedJPEG(torch.zeros(10, dtype=torch.uint8), "a.jpg")
    encoded = EncodedImages([jpeg], SIZE, 3)
    images, labels, _ = move_data_to_device((encoded, torch.zeros(1, dtype=torch.long), torch.zeros(1)),
                                            torch.device("meta"))
    assert images is encoded and images.items[0].data.device.type == "cpu"
    assert labels.device.type == "meta" and seen == [True, True]  # non-CPU targets: non_blocking=True


def test_auto_decodes_on_the_device_only_with_cuda_and_without_cache():
    assert resolve_decode_on_device("auto", cuda=False, folder=True, cache=False) is False
    assert resolve_decode_on_device("auto", cuda=True, folder=True, cache=False) is True
    assert resolve_decode_on_device("auto", cuda=True, folder=True, cache=True) is False
    assert resolve_decode_on_device("auto", cuda=True, folder=False, cache=False) is False
    assert resolve_decode_on_device(False, cuda=True, folder=True, cache=False) is False
    assert resolve_decode_on_device(True, cuda=False, folder=True, cache=False) is True


# --- the training loader and a run through the engine --------------------------------------------------


def folder_config(root: Path, tmp_path: Path, *extra: str):
    return load(overrides=[
        "data.name=folder", f"data.root={root}", f"data.image_size={SIZE}", "backbone.name=resnet_tiny",
        "batch_size=3", "epochs=1", "precision=32-true", "progress_bar=false", "monitor.probe=false",
        f"output_dir={tmp_path / 'runs'}", *extra])


def test_loader_options(tmp_path):
    from selfsup.training import build_loader

    root = device_folder(tmp_path / "images")
    ds = ImageFolder(root, SIZE)
    sampler = EpochShuffleSampler(len(ds), 0)
    centre = "data.folder_crop=center"  # decoding on the device gives centred squares
    loader = build_loader(folder_config(root, tmp_path, "data.num_workers=2", "data.prefetch_factor=3", centre),
                          ds, sampler, 3)
    assert (loader.num_workers, loader.prefetch_factor, loader.persistent_workers) == (2, 3, True)
    cuda = torch.cuda.is_available()  # decode_on_device=auto: the device decodes on CUDA, the workers elsewhere
    assert loader.pin_memory == cuda and isinstance(loader.dataset, DeviceDecodeView) == cuda and loader.drop_last
    plain = build_loader(folder_config(root, tmp_path, "data.decode_on_device=false", centre), ds, sampler, 3)
    assert plain.dataset is ds and not plain.persistent_workers
    on_device = build_loader(folder_config(root, tmp_path, "data.decode_on_device=true", centre), ds, sampler, 3)
    assert isinstance(on_device.dataset, DeviceDecodeView) and isinstance(on_device.collate_fn, EncodedCollate)
    whole = build_loader(folder_config(root, tmp_path), ds, sampler, 3)  # the default: crops from whole images
    assert isinstance(whole.dataset, WholeImageView) and whole.dataset.folder is ds
    with pytest.raises(ConfigError, match="data.folder_crop=center"):
        folder_config(root, tmp_path, "data.decode_on_device=true")


def test_training_with_decode_on_device_runs_the_module_path(tmp_path, monkeypatch):
    from selfsup.training import train

    root = device_folder(tmp_path / "images")
    decoded = []
    real = EncodedImages.decode

    def recording(self, device):
        out = real(self, device)
        decoded.append(out.shape)
        return out

    monkeypatch.setattr(EncodedImages, "decode", recording)
    result = train(folder_config(root, tmp_path, "data.decode_on_device=true", "data.folder_crop=center", "name=r"))
    assert result.backbone_path.is_file()
    assert len(decoded) == 2 and all(s == (3, 3, SIZE, SIZE) for s in decoded)  # 6 images, batch 3: both decoded


# --- torch.compile of the backbone ---------------------------------------------------------------------


def test_compile_keeps_parameter_names_checkpoints_and_exports(tmp_path):
    from safetensors.torch import load_file

    from selfsup import backbones
    from selfsup.backbones import export_backbone
    from selfsup.engine.compile import compile_backbone

    torch.manual_seed(0)
    plain = backbones.get("resnet_tiny", width=4)
    compiled = backbones.get("resnet_tiny", width=4)
    compiled.load_state_dict(plain.state_dict())
    assert compile_backbone(compiled, "cpu") is compiled
    assert compiled._compiled_call_impl is not None  # compiled in place (runs at the first call)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert not any("_orig_mod" in name for name, _ in compiled.named_parameters())
    export_backbone(plain, tmp_path / "plain.safetensors")
    export_backbone(compiled, tmp_path / "compiled.safetensors")
    a, b = load_file(tmp_path / "plain.safetensors"), load_file(tmp_path / "compiled.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_compile_without_a_compiler_is_a_clear_error(monkeypatch):
    import selfsup.engine.compile as compile_module
    from selfsup import backbones

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compile_module.shutil, "which", lambda name: None)
    backbone = backbones.get("resnet_tiny", width=4)
    with pytest.raises(ConfigError, match="C\\+\\+ compiler.*compile=false"):
        compile_module.compile_backbone(backbone, "cpu")
    assert backbone._compiled_call_impl is None
    with pytest.raises(ConfigError, match="not 'mps'"):
        compile_module.compile_backbone(backbone, "mps")
    assert compile_module.training_device_type("cpu") == "cpu"


# --- config keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, fragment", [
    (["data.decoder=libjpeg"], "'data.decoder' must be one of auto, torchvision, pil; got 'libjpeg'"),
    (["data.decode_on_device=maybe"], "'data.decode_on_device' must be auto, true or false; got 'maybe'"),
    (["data.decode_on_device=1"], "'data.decode_on_device'"),
    (["data.prefetch_factor=0", "data.num_workers=2"], "'data.prefetch_factor' must be null"),
    (["data.prefetch_factor=4"], "needs data.num_workers > 0"),
    (["data.cache=true"], "'data.cache' only applies to 'folder' data"),
    (["data.cache=yes please"], "'data.cache' must be bool"),
    (["data.decode_on_device=true"], "'data.decode_on_device' only applies to 'folder' data"),
    (["data.decoder=pil"], "'data.decoder' only applies to 'folder' data"),
    (["data.name=folder", "data.cache=true", "data.decode_on_device=true", "data.folder_crop=center"], "contradict each other"),
    (["compile=3"], "'compile' must be bool"),
])
def test_new_config_keys_are_checked(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load(overrides=overrides)
    assert fragment in str(info.value), str(info.value)


def test_new_config_keys_accept_good_values():
    config = load(overrides=["data.name=folder", "data.cache=true", "data.cache_dir=/tmp/c", "data.num_workers=2",
                             "data.prefetch_factor=4", "data.decoder=pil", "data.decode_on_device=false",
                             "compile=true"])
    assert (config.data.cache, config.data.cache_dir, config.data.prefetch_factor) == (True, "/tmp/c", 4)
    assert (config.data.decoder, config.data.decode_on_device, config.compile) == ("pil", False, True)
    assert load().data.decode_on_device == "auto" and load().compile is False
