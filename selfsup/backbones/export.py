"""Save a trained backbone as a plain safetensors state dict, and build it back.

The file holds only tensors (no pickle, nothing executes on load) plus string metadata: the
backbone's registry name and options, and whatever the caller adds (image size, normalisation).
For torchvision ResNets the keys are torchvision's own, so the file also loads into
``torchvision.models.resnet18()`` with ``strict=False`` (``fc.*`` missing).
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from selfsup._files import publish
from selfsup.backbones.base import Backbone
from selfsup.errors import SelfSupError


def export_backbone(backbone: Backbone, path: str | Path, **metadata: object) -> Path:
    """Write ``backbone``'s state dict to ``path`` (safetensors) with its build recipe.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/backbone.safetensors"
        >>> export_backbone(selfsup.backbones.get("resnet_tiny", width=4), path, image_size=32)
        PosixPath('.../backbone.safetensors')
        >>> net, meta = load_exported(path)
        >>> meta["backbone"], meta["backbone_config"], meta["image_size"]
        ('resnet_tiny', {'width': 4, 'blocks': [1, 1, 1, 1], 'in_channels': 3}, 32)
    """
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    info = {"backbone": backbone.name, "backbone_config": backbone.config, **metadata}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={k: json.dumps(v) for k, v in info.items()})
    return publish(tmp, path)  # readable by the group, as torch.save's files are


def read_metadata(path: str | Path) -> dict[str, object]:
    """The metadata stored by :func:`export_backbone` (JSON-decoded)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise SelfSupError(f"Cannot read {path} as a safetensors file: {err}") from err
    return {k: json.loads(v) for k, v in raw.items()}


def load_exported(path: str | Path) -> tuple[Backbone, dict[str, object]]:
    """Rebuild the backbone saved at ``path`` and load its weights (strictly).

    Under ``torch.device("meta")`` (selfsup's config check) only the header is read: the backbone
    is built without memory and its weights are left unread.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/backbone.safetensors"  # e.g. a run's runs/<name>/backbone.safetensors
        >>> _ = export_backbone(selfsup.backbones.get("resnet_tiny", width=4), path, image_size=32)
        >>> net, meta = load_exported(path)
        >>> net.name, net.feature_dim, meta["image_size"]
        ('resnet_tiny', 32, 32)
    """
    from selfsup.backbones.registry import get  # late: registry imports this module's siblings

    meta = read_metadata(path)
    if "backbone" not in meta:
        raise SelfSupError(
            f"{path} has no 'backbone' metadata: it was not written by selfsup's export, so the "
            "architecture is unknown. Load it into your model with safetensors.torch.load_file."
        )
    net = get(str(meta["backbone"]), **dict(meta.get("backbone_config") or {}))
    if any(p.device.type == "meta" for p in net.parameters()):
        return net, meta  # built under torch.device("meta") (a config check): the weights are not read
    net.load_state_dict(load_file(str(path)))
    return net, meta
