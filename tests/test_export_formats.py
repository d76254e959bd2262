"""Exports that load anywhere, and training that starts from another library's weights.

Each format is written by ``selfsup export`` (or :func:`export_as`), loaded back the way that
library's user would, and compared with selfsup's features; ``backbone.weights`` reads the same
layouts back into a selfsup backbone.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import selfsup.backbones as backbones
from selfsup.backbones.formats import FORMATS, export_as
from selfsup.backbones.layouts import timm_layout
from selfsup.backbones.pretrained import load_weights
from selfsup.cli import main
from selfsup.config import load
from selfsup.config.build import build_backbone
from selfsup.errors import SelfSupError


def tiny_vit(**options):
    return backbones.get("vit_tiny", image_size=16, patch_size=4, depth=2, **options)


def randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``net`` with every tensor (biases, norms, tokens, BN statistics included) drawn at random,
    so a key mapped to the wrong place cannot go unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (0.5 if "running_var" in name else 0.2)
                             + (0.5 if "running_var" in name else -0.1))
    return net


@pytest.mark.parametrize("name, fmt", [("resnet18", "safetensors"), ("resnet18", "torchvision"),
                                       ("resnet_tiny", "torchscript"), ("resnet_tiny", "pt2"), ("resnet_tiny", "onnx")])
def test_a_cifar_stem_resnet_round_trips_through_each_format(tmp_path, name, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install onnxscript)")
        pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    options = dict(cifar_stem=True) if name == "resnet18" else dict(width=4)
    net = randomised(backbones.get(name, in_channels=1, **options))
    report = export_as(net, tmp_path / f"r18{FORMATS[fmt]}", fmt, image_size=16)
    assert report.path.is_file() and report.max_abs_diff is not None
    assert report.max_abs_diff < 1e-4, report


@pytest.mark.parametrize("fmt, pool, registers", [("timm", "cls", 0), ("timm", "avg", 2), ("torchscript", "avg", 2),
                                                  ("pt2", "avg", 2), ("onnx", "avg", 2)])
def test_a_vit_round_trips_through_each_format(tmp_path, fmt, pool, registers):
    pytest.importorskip("timm", reason="the timm layout is checked with timm (pip install timm)")
    if fmt == "onnx":
        pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install onnxscript)")
        pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    net = randomised(tiny_vit(pool=pool, num_registers=registers))
    report = export_as(net, tmp_path / f"vit{FORMATS[fmt]}", fmt, image_size=16)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4, report


@pytest.mark.parametrize("pool", ["cls", "avg"])
def test_a_vit_round_trips_through_hugging_face_vitmodel(tmp_path, pool):
    pytest.importorskip("transformers", reason="the hf format needs transformers (pip install transformers)")
    from transformers import ViTModel

    net = randomised(tiny_vit(pool=pool)).eval()
    report = export_as(net, tmp_path / "vit.hf", "hf", image_size=16)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4, report
    assert (report.path / "config.json").is_file()
    hidden = ViTModel.from_pretrained(str(report.path), add_pooling_layer=False).eval()(
        pixel_values=torch.rand(2, 3, 16, 16)).last_hidden_state
    assert hidden.shape == (2, 1 + 16, 192)  # class token + 4 x 4 patches
    with pytest.raises(SelfSupError, match="ViTModel has no registers and this ViT has 2"):
        export_as(tiny_vit(num_registers=2), tmp_path / "reg.hf", "hf", image_size=16)


def test_the_timm_file_loads_into_timm_as_the_printed_call_says(tmp_path):
    timm = pytest.importorskip("timm", reason="pip install timm")
    from safetensors.torch import load_file

    net = randomised(tiny_vit(pool="avg")).eval()
    report = export_as(net, tmp_path / "vit.safetensors", "timm", image_size=16)
    scope = {"timm": timm, "safetensors": __import__("safetensors.torch"), "torch": torch, "load_file": load_file}
    exec(report.loader, scope)  # the line a user copies
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(scope["m"].eval()(x), net(x), atol=1e-5, rtol=1e-5)


def test_a_swin_round_trips_through_timm_and_timm_swin_weights_load_back(tmp_path):
    """Shifted windows in the first stages, clamped windows (smaller bias tables in timm) in the last."""
    pytest.importorskip("timm", reason="the timm layout is checked with timm (pip install timm)")
    torch.manual_seed(0)
    net = backbones.get("swin_tiny", image_size=32, patch_size=2, window_size=4, depths=[2, 2, 2, 2]).eval()
    with torch.no_grad():
        for p in net.parameters():  # away from the initial state: biases and tables all non-zero
            p.add_(0.05 * torch.randn_like(p))
    report = export_as(net, tmp_path / "swin.timm.safetensors", "timm", image_size=32)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    assert "timm.models.SwinTransformer(" in report.loader
    target = backbones.get("swin_tiny", image_size=32, patch_size=2, window_size=4, depths=[2, 2, 2, 2]).eval()
    loaded = load_weights(target, tmp_path / "swin.timm.safetensors")
    assert loaded.layout == "timm" and loaded.missing == ["mask_token"] and not loaded.unused
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(target(x), net(x), atol=1e-6)


def test_a_swin_round_trips_through_hugging_face(tmp_path):
    """Three stages on a 16-8-4 map with window 4: shifted windows in the first two, the last at the
    window's size (no shift); a Swin whose last map is smaller than its window is refused by name."""
    pytest.importorskip("transformers", reason="the hf format needs transformers (pip install transformers)")
    from transformers import SwinModel

    torch.manual_seed(0)
    options = dict(image_size=32, patch_size=2, window_size=4, depths=[2, 2, 2], num_heads=[1, 2, 4], embed_dim=8)
    net = backbones.get("swin_tiny", **options).eval()
    with torch.no_grad():
        for p in net.parameters():  # away from the initial state: biases and tables all non-zero
            p.add_(0.05 * torch.randn_like(p))
    report = export_as(net, tmp_path / "swin-hf", "hf", image_size=32)
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-5
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # as a user loads it
        theirs = SwinModel.from_pretrained(str(tmp_path / "swin-hf")).eval()(pixel_values=x).pooler_output
        torch.testing.assert_close(theirs, net(x), atol=1e-5, rtol=1e-5)
    clamped = backbones.get("swin_tiny", **{**options, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8]})
    with pytest.raises(SelfSupError, match="stage 3 of this Swin has a 2x2 map, smaller than its window 4"):
        export_as(clamped, tmp_path / "clamped-hf", "hf", image_size=32)


def test_a_format_that_cannot_take_the_backbone_names_the_ones_that_can(tmp_path):
    with pytest.raises(SelfSupError, match="format 'torchvision' takes a torchvision ResNet.*'vit_tiny'"):
        export_as(tiny_vit(), tmp_path / "x.safetensors", "torchvision", image_size=16)
    with pytest.raises(SelfSupError, match="format 'timm' takes a selfsup ViT or Swin.*--format torchvision"):
        export_as(backbones.get("resnet18"), tmp_path / "x.safetensors", "timm", image_size=16)
    with pytest.raises(SelfSupError, match="unknown export format 'tflite'"):
        export_as(backbones.get("resnet18"), tmp_path / "x", "tflite", image_size=16)


@pytest.fixture(scope="module")
def resnet18_run(tmp_path_factory):
    """A one-epoch run of a 1-channel CIFAR-stem ResNet-18 on digits at 8 px."""
    out = tmp_path_factory.mktemp("runs")
    args = ["train", "--output-dir", str(out), "--name", "run", "--epochs", "1", "--data", "digits",
            "--config", "digits/simclr", "--backbone", "resnet18", "--batch-size", "256", "--precision", "32-true",
            "augment.size=8", "progress_bar=false", "monitor.knn_every=0", "monitor.probe=false",
            "data.eval_split=none", "method.proj_output_dim=16"]
    assert main(args) == 0
    return out / "run"


def test_selfsup_export_writes_checks_and_keeps_an_existing_file(resnet18_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["export", str(resnet18_run), "--format", "torchvision", "--out", str(tmp_path / "tv.safetensors")]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "tv.safetensors"
    assert f"wrote {written}" in out and "checked: largest feature difference" in out
    assert "adapt_stem(m, in_channels=1, cifar_stem=True)" in out
    before = written.read_bytes()
    last = resnet18_run / "checkpoints" / "last.ckpt"
    assert main(["export", str(last), "--format", "torchvision", "--out", str(written)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and written.read_bytes() == before
    assert main(["export", str(last), "--format", "pt2"]) == 0  # default: beside the run's export
    assert (resnet18_run / "backbone.pt2").is_file()
    from selfsup.cli_export import DEFAULT_NAMES

    assert DEFAULT_NAMES.keys() == FORMATS.keys() and "backbone.safetensors" not in DEFAULT_NAMES.values()
    assert main(["export", str(resnet18_run), "--format", "pt2", "--out", str(tmp_path / "r.pt2")]) == 0
    loaded = torch.export.load(str(tmp_path / "r.pt2")).module()
    assert loaded(torch.rand(5, 1, 8, 8)).shape == (5, 512)


def test_weights_from_timm_load_into_a_selfsup_vit(tmp_path):
    source = randomised(tiny_vit(num_registers=1), seed=1)
    state, _ = timm_layout(source)
    save_file(state, str(tmp_path / "timm_vit.safetensors"))
    target = tiny_vit(num_registers=1)
    report = load_weights(target, tmp_path / "timm_vit.safetensors")
    assert report.layout == "timm" and report.missing == ["mask_token"] and not report.unused
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))


def test_a_timm_position_table_with_a_class_token_row_is_cut_to_the_patches(tmp_path):
    source = randomised(tiny_vit(), seed=2)
    state, _ = timm_layout(source)
    state["pos_embed"] = torch.cat([torch.full_like(state["pos_embed"][:, :1], 7.0), state["pos_embed"]], dim=1)
    torch.save({"model": state}, tmp_path / "deit_style.pth")  # timm / DeiT checkpoints nest under "model"
    target = tiny_vit()
    load_weights(target, tmp_path / "deit_style.pth")
    torch.testing.assert_close(target.pos_embed, source.pos_embed)


def test_torchvision_weights_load_and_the_classifier_is_reported_left_out(tmp_path):
    model = randomised(torchvision.models.resnet18(), seed=3)
    torch.save(model.state_dict(), tmp_path / "resnet18.pth")
    net = backbones.get("resnet18")
    report = load_weights(net, tmp_path / "resnet18.pth")
    assert report.layout == "torchvision" and report.unused == ["fc.weight", "fc.bias"] and not report.missing
    assert "left out of the file: fc.weight, fc.bias" in report.line()
    model.fc = torch.nn.Identity()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(net.eval()(x), model.eval()(x))


def test_a_wrong_shape_or_a_file_that_fits_nothing_is_one_clear_error(tmp_path):
    torch.save(randomised(torchvision.models.resnet18()).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(SelfSupError, match=r"other shapes than the backbone's: conv1.weight \(64, 3, 7, 7\)"):
        load_weights(backbones.get("resnet18", cifar_stem=True), tmp_path / "r18.pth")
    save_file({"encoder_q.weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(SelfSupError, match="no tensor of .*other.safetensors fits backbone 'resnet18'"):
        load_weights(backbones.get("resnet18"), tmp_path / "other.safetensors")
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(SelfSupError, match="cannot read .*text.pt"):
        load_weights(backbones.get("resnet18"), tmp_path / "text.pt")


def test_backbone_weights_in_a_config_start_from_a_selfsup_checkpoint(resnet18_run, tmp_path, caplog):
    checkpoint = resnet18_run / "checkpoints" / "last.ckpt"  # holds the method's heads too
    config = load("digits/simclr", overrides=["backbone.name=resnet18", f"backbone.weights={checkpoint}"])
    with caplog.at_level("INFO", logger="selfsup"):
        net = build_backbone(config, channels=1)
    trained, _ = backbones.load_exported(resnet18_run / "backbone.safetensors")
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value)
    assert "loaded 120 tensors" in caplog.text and "(selfsup checkpoint layout)" in caplog.text and "not in the file" not in caplog.text
    with pytest.raises(SelfSupError, match="backbone.weights: no such file .*nope.pt"):  # at validation, before any work
        load("digits/simclr", overrides=[f"backbone.weights={tmp_path / 'nope.pt'}"])
