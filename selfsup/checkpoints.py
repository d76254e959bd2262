"""Load a trained backbone from a run folder, a Lightning checkpoint or an exported file.

Checkpoints are read with ``torch.load(weights_only=True)`` and exports with safetensors, so a
crafted file cannot run code; the architecture comes from the run's ``config.yaml`` or from the
export's metadata, and so does the pooling (a ViT pools as its method trained it: the export
records ``pool``, and a checkpoint's backbone gets its method's ``representation``).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import yaml

from selfsup.backbones import Backbone, load_exported
from selfsup.config import from_dict
from selfsup.errors import SelfSupError


def load_backbone(path: str | Path) -> tuple[Backbone, dict[str, Any]]:
    """The backbone stored at ``path`` and what is known about how it was trained.

    ``path`` may be a run folder (its ``backbone.safetensors``, else ``checkpoints/last.ckpt``),
    a ``.ckpt`` written by ``selfsup train`` or a ``.safetensors`` export. The returned info has
    ``data`` (data set name, and ``root`` when known), ``image_size``, ``mean`` and ``std``.

    Example:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()  # a run folder, as ``selfsup train`` writes under runs/
        >>> _ = selfsup.backbones.export_backbone(selfsup.backbones.get("resnet_tiny", width=4),
        ...                                       run + "/backbone.safetensors", data="digits", image_size=16)
        >>> backbone, info = load_backbone(run)
        >>> backbone.name, info["data"], info["image_size"]
        ('resnet_tiny', 'digits', 16)
    """
    path = Path(path)
    if path.is_dir():
        exported, last = path / "backbone.safetensors", path / "checkpoints" / "last.ckpt"
        if exported.is_file():
            path = exported
        elif last.is_file():
            path = last
        else:
            raise SelfSupError(f"{path} is a folder without backbone.safetensors or checkpoints/last.ckpt")
    if not path.is_file():
        raise SelfSupError(f"No such file: {path} (expected a run folder, a .ckpt or a .safetensors file)")
    if path.suffix == ".safetensors":
        backbone, meta = load_exported(path)
        run_config = _run_config(path.parent)
        if run_config is not None:
            meta["root"] = run_config.data.root
        return backbone, meta
    return _from_checkpoint(path)


def _run_config(run_dir: Path):
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        return None
    return from_dict(yaml.safe_load(config_file.read_text()) or {})


def _from_checkpoint(path: Path) -> tuple[Backbone, dict[str, Any]]:
    from selfsup import data
    from selfsup.training import build_backbone, eval_size

    config = _run_config(path.parent.parent)
    if config is None:
        raise SelfSupError(
            f"Cannot rebuild the backbone of {path}: no config.yaml in its run folder {path.parent.parent}. "
            "Evaluate the run's backbone.safetensors instead, or keep the checkpoint inside its run folder."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise SelfSupError(f"Cannot read checkpoint {path}: {err}") from err
    train_set = data.get(config.data.name, root=config.data.root, split=config.data.train_split,
                         image_size=config.data.image_size, channels=config.data.channels)
    backbone = build_backbone(config, train_set.channels)
    _use_method_representation(backbone, str(config.method["name"]))
    prefix = "method.backbone."
    state = {k[len(prefix):]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith(prefix)}
    if not state:
        raise SelfSupError(f"Checkpoint {path} holds no 'method.backbone.*' weights; was it written by selfsup train?")
    backbone.load_state_dict(state)
    info = {"data": config.data.name, "root": config.data.root, "mean": list(train_set.mean),
            "std": list(train_set.std), "image_size": eval_size(config, train_set.image_size[0]),
            "channels": train_set.channels}
    return backbone, info


def _use_method_representation(backbone: Backbone, method_name: str) -> None:
    """Pool the rebuilt backbone as the run's method trained it (a ViT's class token or mean patch
    token, :attr:`selfsup.methods.Method.representation`), as the method did when it was built."""
    from selfsup import methods
    from selfsup.methods.base import use_representation

    factory = methods.METHODS.factory(method_name)
    use_representation(backbone, getattr(factory, "representation", "cls"), method_name)
