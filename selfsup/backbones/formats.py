"""Write a trained backbone in the format another tool loads, and check it gives the same features.

=============  =========================================================  ===============================
format         file                                                       loads with
=============  =========================================================  ===============================
safetensors    selfsup's export: weights + build recipe                   ``selfsup.backbones.load_exported``
torchvision    a ResNet's weights under torchvision's names               ``torchvision.models.resnet18``
timm           a ViT's, Swin's or ``timm:`` model's weights, timm's names ``timm.models.VisionTransformer``
hf             a folder: ``save_pretrained`` of ``transformers.ViTModel``  ``ViTModel.from_pretrained``
               (a Swin: of ``transformers.SwinModel``)                  (``SwinModel.from_pretrained``)
torchscript    a traced module (``torch.jit``, deprecated in PyTorch)     ``torch.jit.load``
pt2            a ``torch.export`` program, any batch size                 ``torch.export.load``
onnx           an ONNX graph (opset of the PyTorch exporter), any batch   ``onnxruntime.InferenceSession``
=============  =========================================================  ===============================

Every export is loaded back the way a user of that tool would and run on a batch of random images
of the training size (a batch size the export was not traced with); :class:`Exported` reports the
largest absolute difference from selfsup's own features. Where the loading library is not
installed (timm, onnxruntime) the file is written and the report says it was not checked.
torchvision and timm files are safetensors (``.safetensors``) or ``torch.save`` dicts of tensors
(``.pt`` / ``.pth``, loadable with ``torch.load(..., weights_only=True)``).

Example:
    >>> import tempfile
    >>> backbone = selfsup.backbones.get("vit_nano", image_size=32, patch_size=8, depth=1)
    >>> report = export_as(backbone, tempfile.mkdtemp() + "/vit.timm.safetensors", "timm", image_size=32)
    >>> report.max_abs_diff < 1e-4
    True
    >>> print(report.loader)
    m = timm.models.VisionTransformer(**{...}); m.load_state_dict(safetensors.torch.load_file(...))
"""
from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from selfsup._files import publish
from selfsup.backbones.export import export_backbone, load_exported
from selfsup.backbones.layouts import (hf_swin_config, hf_swin_layout, hf_vit_config, hf_vit_layout, timm_layout,
                                      torchvision_layout)
from selfsup.backbones.resnet import adapt_stem
from selfsup.backbones.swin import SwinTransformer
from selfsup.errors import SelfSupError

FORMATS: dict[str, str] = {
    "safetensors": ".safetensors",
    "torchvision": ".safetensors",
    "timm": ".safetensors",
    "hf": "",
    "torchscript": ".pt",
    "pt2": ".pt2",
    "onnx": ".onnx",
}
"""Each export format and its default file ending."""


@dataclass(frozen=True)
class Exported:
    """What :func:`export_as` wrote and how it checked it.

    Attributes:
        path: the file written.
        format: one of :data:`FORMATS`.
        loader: the call that loads it, for the user to copy.
        max_abs_diff: largest absolute difference between the loaded file's features and
            selfsup's on the same random batch; None when not checked (see ``note``).
        note: why it was not checked, or what the loader needs (empty when nothing to say).
    """

    path: Path
    format: str
    loader: str
    max_abs_diff: float | None
    note: str = ""


def export_as(backbone: nn.Module, path: str | Path, fmt: str, *, image_size: int,
              metadata: dict[str, Any] | None = None, seed: int = 0) -> Exported:
    """Write ``backbone`` (evaluation mode) to ``path`` in format ``fmt`` and check it.

    Args:
        backbone: a selfsup backbone (``feature_dim``, ``name``, ``config``).
        path: the file to write (its folder must exist); replaced if it exists.
        fmt: one of :data:`FORMATS`.
        image_size: side of the square images the check runs on (the training size).
        metadata: extra JSON-able facts stored with safetensors files (image size, mean, std).
        seed: seed of the random check batch.

    Raises:
        SelfSupError: an unknown format, a backbone the format cannot take, or a missing exporter
            package (ONNX needs ``onnx`` and ``onnxscript``).
    """
    if fmt not in FORMATS:
        raise SelfSupError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    backbone = backbone.eval().cpu()
    channels = int(getattr(backbone, "config", {}).get("in_channels", 3))
    generator = torch.Generator().manual_seed(seed)
    traced_with = torch.rand(2, channels, image_size, image_size, generator=generator)
    check = torch.rand(3, channels, image_size, image_size, generator=generator)
    with torch.no_grad():
        expected = backbone(check)
    meta = {"image_size": image_size, **(metadata or {})}
    loaded, loader, note = _WRITERS[fmt](backbone, path, traced_with, meta)
    if loaded is None:
        return Exported(path, fmt, loader, None, note)
    with torch.no_grad():
        got = torch.as_tensor(loaded(check))
    if got.shape != expected.shape:
        raise SelfSupError(f"{path}: the {fmt} export gives features of shape {tuple(got.shape)}, "
                           f"selfsup's backbone {tuple(expected.shape)}")
    return Exported(path, fmt, loader, float((got.float() - expected.float()).abs().max()), note)


Check = Callable[[Tensor], Any]
Written = tuple[Check | None, str, str]


def _write_safetensors(backbone: nn.Module, path: Path, example: Tensor, meta: dict[str, Any]) -> Written:
    export_backbone(backbone, path, **meta)
    net, _ = load_exported(path)
    return net.eval(), f"selfsup.backbones.load_exported({str(path)!r})", ""


def _save_state(state: dict[str, Tensor], path: Path, meta: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        save_file(state, str(tmp), metadata={key: json.dumps(value) for key, value in meta.items()})
    elif path.suffix in (".pt", ".pth"):
        torch.save(state, tmp)
    else:
        raise SelfSupError(f"{path}: a torchvision or timm state dict is written as .safetensors, .pt or .pth")
    publish(tmp, path)


def _load_call(path: Path) -> str:
    """The call a user writes to read a state dict file saved by :func:`_save_state`."""
    if path.suffix == ".safetensors":
        return f"safetensors.torch.load_file({str(path)!r})"
    return f"torch.load({str(path)!r}, weights_only=True)"


def _read_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, weights_only=True)


def _write_torchvision(backbone: nn.Module, path: Path, example: Tensor, meta: dict[str, Any]) -> Written:
    import torchvision

    state, build = torchvision_layout(backbone)
    _save_state(state, path, {**meta, "torchvision": build})
    model = getattr(torchvision.models, build["model"])()
    stem = {"in_channels": build["in_channels"], "cifar_stem": build["cifar_stem"]}
    if stem != {"in_channels": 3, "cifar_stem": False}:
        adapt_stem(model, **stem)
    missing, unexpected = model.load_state_dict(_read_state(path), strict=False)
    if unexpected or sorted(missing) != ["fc.bias", "fc.weight"]:
        raise SelfSupError(f"{path}: torchvision's {build['model']} did not take the weights "
                           f"(missing {missing}, unexpected {unexpected})")
    model.fc = nn.Identity()
    stem_call = "" if stem == {"in_channels": 3, "cifar_stem": False} else (
        f"selfsup.backbones.resnet.adapt_stem(m, in_channels={stem['in_channels']}, "
        f"cifar_stem={stem['cifar_stem']}); ")
    loader = (f"m = torchvision.models.{build['model']}(); {stem_call}"
              f"m.load_state_dict({_load_call(path)}, strict=False); m.fc = torch.nn.Identity()")
    return model.eval(), loader, "fc.* are absent (the backbone has no classifier)"


def _write_timm(backbone: nn.Module, path: Path, example: Tensor, meta: dict[str, Any]) -> Written:
    state, build = timm_layout(backbone)
    _save_state(state, path, {**meta, "timm": build})
    by_name = "model_name" in build
    architecture = "SwinTransformer" if isinstance(backbone, SwinTransformer) else "VisionTransformer"
    loader = (f"m = timm.create_model(**{build!r})" if by_name else f"m = timm.models.{architecture}(**{build!r})")
    loader += f"; m.load_state_dict({_load_call(path)})"
    if importlib.util.find_spec("timm") is None:
        return None, loader, "not checked: timm is not installed (pip install timm)"
    import timm

    model = timm.create_model(**build) if by_name else getattr(timm.models, architecture)(**build)
    model.load_state_dict(_read_state(path))
    return model.eval(), loader, ""


def _write_hf(backbone: nn.Module, path: Path, example: Tensor, meta: dict[str, Any]) -> Written:
    swin = isinstance(backbone, SwinTransformer)
    config = hf_swin_config(backbone) if swin else hf_vit_config(backbone)
    if importlib.util.find_spec("transformers") is None:
        raise SelfSupError("format 'hf' needs transformers: pip install transformers")
    import shutil

    from transformers import SwinConfig, SwinModel, ViTConfig, ViTModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load and save otherwise
    if swin:
        model = SwinModel(SwinConfig(**config), add_pooling_layer=True)
        if "encoder.layers.0.blocks.0.attention.q_proj.weight" not in model.state_dict():
            raise SelfSupError("format 'hf' writes a Swin under transformers 5's SwinModel names; this "
                               "transformers is older: pip install 'transformers>=5'")
        model.load_state_dict(hf_swin_layout(backbone))  # strict: every name placed (the pooler has no weights)
    else:
        model = ViTModel(ViTConfig(**config), add_pooling_layer=False)
        model.load_state_dict(hf_vit_layout(backbone, set(model.state_dict())))  # strict: every name placed
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if path.is_dir():
        shutil.rmtree(path)
    tmp.replace(path)
    if swin:
        loaded_swin = SwinModel.from_pretrained(str(path)).eval()
        loader = f"transformers.SwinModel.from_pretrained({str(path)!r})(pixel_values=x).pooler_output"
        return (lambda images: loaded_swin(pixel_values=images).pooler_output), loader, (
            "features: pooler_output (selfsup's pooled output)")
    loaded = ViTModel.from_pretrained(str(path), add_pooling_layer=False).eval()
    avg = getattr(backbone, "pool", "cls") == "avg"
    pooled = "last_hidden_state[:, 1:].mean(1)" if avg else "last_hidden_state[:, 0]"

    def features(images: Tensor) -> Tensor:
        hidden = loaded(pixel_values=images).last_hidden_state
        return hidden[:, 1:].mean(1) if avg else hidden[:, 0]

    loader = f"transformers.ViTModel.from_pretrained({str(path)!r}, add_pooling_layer=False)(pixel_values=x).{pooled}"
    return features, loader, "features: " + pooled + " (selfsup's pooled output)"


def _write_torchscript(backbone: nn.Module, path: Path, example: Tensor, meta: dict[str, Any]) -> Written:
    import warnings

    with warnings.catch_warnings():  # PyTorch marks torch.jit deprecated; the file is still what users load
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(backbone, example)
        tmp = path.with_name(path.name + ".tmp")
        torch.jit.save(traced, str(tmp))
        publish(tmp, path)
        loaded = torch.jit.load(str(path))
    return loaded, f"torch.jit.load({str(path)!r})", "traced at this image size: other sizes may fail"


def _dynamic_batch() -> dict[str, dict[int, Any]]:
    return {"images": {0: torch.export.Dim("batch", min=1)}}


def _write_pt2(backbone: nn.Module, path: Path, example: Tensor, meta: dict[str, Any]) -> Written:
    program = torch.export.export(backbone, (example,), dynamic_shapes=_dynamic_batch())
    tmp = path.with_name(path.name + ".tmp.pt2")  # torch.export wants the .pt2 ending
    torch.export.save(program, str(tmp))
    publish(tmp, path)
    module = torch.export.load(str(path)).module()
    return module, f"torch.export.load({str(path)!r}).module()", ""


def _write_onnx(backbone: nn.Module, path: Path, example: Tensor, meta: dict[str, Any]) -> Written:
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise SelfSupError(f"format 'onnx' needs {' and '.join(missing)}: pip install onnx onnxscript "
                           "(and onnxruntime to check and run the file)")
    import contextlib
    import io

    tmp = path.with_name(path.name + ".tmp.onnx")
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(backbone, (example,), str(tmp), input_names=["images"], output_names=["features"],
                          dynamic_shapes=_dynamic_batch(), external_data=False)
    publish(tmp, path)
    loader = f"onnxruntime.InferenceSession({str(path)!r}).run(None, {{'images': images}})[0]"
    if importlib.util.find_spec("onnxruntime") is None:
        return None, loader, "not checked: onnxruntime is not installed (pip install onnxruntime)"
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return (lambda images: session.run(None, {"images": images.numpy()})[0]), loader, ""


_WRITERS: dict[str, Callable[[nn.Module, Path, Tensor, dict[str, Any]], Written]] = {
    "safetensors": _write_safetensors, "torchvision": _write_torchvision, "timm": _write_timm, "hf": _write_hf,
    "torchscript": _write_torchscript, "pt2": _write_pt2, "onnx": _write_onnx,
}
