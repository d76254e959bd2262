"""Start a backbone from published or earlier weights: ``backbone.weights=PATH`` in a config.

The file may be a safetensors file or a ``torch.save`` / Lightning checkpoint (read with
``weights_only=True``, so nothing in it executes), holding the weights in any of these layouts:

- selfsup's: an export (``backbone.safetensors``) or a ``selfsup train`` checkpoint (the keys under
  ``method.backbone.``; teachers and heads are left out);
- torchvision's ResNet (``fc.*``, the classifier, is not part of a backbone and is left out);
- timm's: a ``timm:`` backbone's model, or timm's ``VisionTransformer`` for a selfsup ViT (the
  renames of :mod:`selfsup.backbones.layouts` undone; a class-token row of the position table,
  which selfsup's class token does not use, is dropped);
- a checkpoint that wraps any of these under ``state_dict``, ``model`` or ``module.``.

Tensors whose names the backbone lacks, and backbone tensors the file lacks, are reported (the
latter keep their initial values); a tensor of the wrong shape, or a file that matches nothing,
stops with an error naming the file and the keys.

Example:
    >>> import tempfile, torchvision
    >>> path = tempfile.mkdtemp() + "/resnet18.pth"  # e.g. torchvision's resnet18-f37072fd.pth
    >>> torch.save(torchvision.models.resnet18().state_dict(), path)
    >>> report = load_weights(selfsup.backbones.get("resnet18"), path)
    >>> report.line()
    'loaded 120 tensors from .../resnet18.pth (torchvision layout); left out of the file: fc.weight, fc.bias'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from selfsup.backbones.layouts import resize_bias_table, timm_swin_key, timm_vit_key
from selfsup.backbones.swin import SwinTransformer
from selfsup.backbones.timm_backbone import TimmBackbone
from selfsup.backbones.vit import VisionTransformer
from selfsup.errors import SelfSupError

_WRAPPERS = ("state_dict", "model", "module", "teacher", "student")  # keys a checkpoint nests its weights under
_PREFIXES = ("method.backbone.", "backbone.", "module.", "model.", "encoder.")


@dataclass
class WeightsReport:
    """What :func:`load_weights` did.

    Attributes:
        path: the file read.
        layout: ``"selfsup"``, ``"selfsup checkpoint"``, ``"torchvision"`` or ``"timm"`` (how the
            names were read).
        loaded: how many tensors were copied into the backbone.
        unused: the file's tensors the backbone has no place for (left out).
        missing: the backbone's tensors the file lacks (kept at their initial values).
    """

    path: Path
    layout: str
    loaded: int
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the log: what was loaded and what was not."""
        text = f"loaded {self.loaded} tensors from {self.path} ({self.layout} layout)"
        if self.unused:
            text += f"; left out of the file: {_names(self.unused)}"
        if self.missing:
            text += f"; not in the file, kept at their initial values: {_names(self.missing)}"
        return text


def _names(keys: list[str], most: int = 8) -> str:
    return ", ".join(keys[:most]) + (f" and {len(keys) - most} more" if len(keys) > most else "")


def read_state(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file or a ``torch.save`` file (``weights_only``), unwrapped
    from a checkpoint's ``state_dict`` / ``model`` entry."""
    path = Path(path)
    if not path.is_file():
        raise SelfSupError(f"backbone.weights: no such file {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
        raise SelfSupError(f"backbone.weights: cannot read {path} as safetensors or a weights-only "
                           f"PyTorch file: {err}") from err
    while isinstance(state, dict) and not any(isinstance(v, Tensor) for v in state.values()):
        inner = next((state[key] for key in _WRAPPERS if isinstance(state.get(key), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not any(isinstance(v, Tensor) for v in state.values()):
        raise SelfSupError(f"backbone.weights: {path} holds no tensors (expected a state dict, possibly under "
                           f"one of {', '.join(_WRAPPERS)})")
    return {key: value for key, value in state.items() if isinstance(value, Tensor)}


def _strip_prefix(state: dict[str, Tensor], wanted: set[str]) -> tuple[dict[str, Tensor], str]:
    """``state`` with the wrapper prefix removed that makes the most of its names the backbone's
    (a ``selfsup train`` checkpoint keeps only ``method.backbone.*``), and that prefix."""
    best, best_prefix, best_hits = state, "", len(wanted & set(state))
    for prefix in _PREFIXES:
        stripped = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        hits = len(wanted & set(stripped))
        if hits > best_hits:
            best, best_prefix, best_hits = stripped, prefix, hits
    return best, best_prefix


def _from_timm_vit(state: dict[str, Tensor], backbone: VisionTransformer) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "pos_embed" and value.shape[1] == backbone.pos_embed.shape[1] + backbone.num_prefix:
            value = value[:, backbone.num_prefix:]  # timm's no_embed_class=False: rows for the prefix tokens
        out[timm_vit_key(key, to_timm=False)] = value
    return out


def _from_timm_swin(state: dict[str, Tensor], backbone: SwinTransformer) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        ours = timm_swin_key(key, to_timm=False)
        if ours.endswith("relative_position_bias_table"):  # timm's clamped windows keep fewer offsets: pad
            value = resize_bias_table(value, backbone.config["window_size"])
        out[ours] = value
    return out


def load_weights(backbone: nn.Module, path: str | Path) -> WeightsReport:
    """Copy the weights of ``path`` into ``backbone`` (in place) and say what was and was not loaded.

    Raises:
        SelfSupError: the file cannot be read, none of its names fit the backbone, or a tensor's
            shape differs from the backbone's (each named).
    """
    path = Path(path)
    own = backbone.state_dict()
    state = read_state(path)
    layout = "selfsup"
    if isinstance(backbone, TimmBackbone):
        inner, prefix = _strip_prefix(state, set(backbone.model.state_dict()))
        state, layout = {f"model.{key}": value for key, value in inner.items()}, "timm"
    else:
        state, prefix = _strip_prefix(state, set(own))
        if isinstance(backbone, VisionTransformer) and "patch_embed.proj.weight" in state:
            state, layout = _from_timm_vit(state, backbone), "timm"
        elif isinstance(backbone, SwinTransformer) and "patch_embed.proj.weight" in state:
            state, layout = _from_timm_swin(state, backbone), "timm"
        elif "fc.weight" in state or "layer1.0.conv1.weight" in state:
            layout = "torchvision"
    if prefix == "method.backbone.":
        layout = "selfsup checkpoint"
    matched = [key for key in state if key in own]
    if not matched:
        raise SelfSupError(
            f"backbone.weights: no tensor of {path} fits backbone {getattr(backbone, 'name', type(backbone).__name__)!r} "
            f"(the file has {_names(sorted(state), 4)}; the backbone {_names(sorted(own), 4)})")
    wrong = [f"{key} {tuple(state[key].shape)} (backbone: {tuple(own[key].shape)})"
             for key in matched if state[key].shape != own[key].shape]
    if wrong:
        raise SelfSupError(f"backbone.weights: {path} has tensors of other shapes than the backbone's: "
                           f"{_names(wrong, 4)}; check the backbone's options (size, patch, channels)")
    backbone.load_state_dict({key: state[key] for key in matched}, strict=False)
    return WeightsReport(path, layout, len(matched), unused=[key for key in state if key not in own],
                         missing=[key for key in own if key not in state])
