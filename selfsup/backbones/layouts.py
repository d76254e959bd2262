"""A selfsup backbone's weights under the key names of the library that will load them.

- **torchvision**: :class:`~selfsup.backbones.resnet.TorchvisionResNet` *is* a torchvision ResNet,
  so its state dict is already torchvision's (``fc`` aside); :func:`torchvision_layout` checks the
  backbone is one and says how to build the matching model.
- **timm**: selfsup's :class:`~selfsup.backbones.vit.VisionTransformer` maps one to one onto
  ``timm.models.VisionTransformer`` built with ``no_embed_class=True`` (the class token and the
  registers get no position embedding, as in selfsup), ``fc_norm=False`` (the final LayerNorm
  comes before pooling, as in selfsup) and ``global_pool`` ``"token"`` or ``"avg"`` (selfsup's
  ``pool``). Renamed: ``patch_embed`` -> ``patch_embed.proj``, ``qkv`` / ``proj`` ->
  ``attn.qkv`` / ``attn.proj``, ``mlp.0`` / ``mlp.2`` -> ``mlp.fc1`` / ``mlp.fc2``,
  ``registers`` -> ``reg_token``; ``mask_token`` (a pretraining part) is left out. A ``timm:``
  backbone is a timm model wrapped as ``model``: the prefix is dropped.

Example:
    >>> state, kwargs = timm_layout(selfsup.backbones.get("vit_tiny", image_size=32, patch_size=4))
    >>> timm.models.VisionTransformer(**kwargs).load_state_dict(state)
"""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from selfsup.backbones.resnet import TorchvisionResNet
from selfsup.backbones.timm_backbone import PREFIX, TimmBackbone
from selfsup.backbones.vit import VisionTransformer
from selfsup.errors import SelfSupError

_TIMM_VIT_RENAMES = ((".qkv.", ".attn.qkv."), (".proj.", ".attn.proj."), (".mlp.0.", ".mlp.fc1."),
                     (".mlp.2.", ".mlp.fc2."))


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().contiguous().cpu() for key, value in module.state_dict().items()}


def torchvision_layout(backbone: nn.Module) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state dict, build)`` of a torchvision ResNet backbone: the weights under torchvision's
    names and how to build the model that takes them (``build["model"]`` is the
    ``torchvision.models`` function; ``in_channels`` / ``cifar_stem`` go to
    :func:`selfsup.backbones.resnet.adapt_stem` first when they differ from torchvision's).

    Raises:
        SelfSupError: the backbone is not a torchvision ResNet (``resnet_small`` is selfsup's own).
    """
    if not isinstance(backbone, TorchvisionResNet):
        raise SelfSupError(
            f"format 'torchvision' takes a torchvision ResNet (resnet18/34/50); this backbone is "
            f"{getattr(backbone, 'name', type(backbone).__name__)!r}. Formats that take any backbone: "
            "safetensors, torchscript, pt2, onnx")
    return _state(backbone), {"model": backbone.name, **backbone.config}


def timm_layout(backbone: nn.Module) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state dict, build)`` for timm: the weights under timm's names, and either
    ``{"model_name": ..., **options}`` for ``timm.create_model`` (a ``timm:`` backbone) or the
    keyword arguments of ``timm.models.VisionTransformer`` (a selfsup ViT).

    Raises:
        SelfSupError: the backbone has no timm counterpart here (a ResNet: use ``torchvision``;
            a Swin: selfsup's own window layout).
    """
    if isinstance(backbone, TimmBackbone):
        options = dict(backbone.config)
        in_channels = options.pop("in_channels", 3)
        build = {"model_name": backbone.name[len(PREFIX):], "in_chans": in_channels, "num_classes": 0, **options}
        return _state(backbone.model), build
    if not isinstance(backbone, VisionTransformer):
        raise SelfSupError(
            f"format 'timm' takes a selfsup ViT or a timm: backbone; this backbone is "
            f"{getattr(backbone, 'name', type(backbone).__name__)!r} (a ResNet: use --format torchvision). "
            "Formats that take any backbone: safetensors, torchscript, pt2, onnx")
    state: dict[str, Tensor] = {}
    for key, value in _state(backbone).items():
        if key == "mask_token" or (key == "registers" and value.shape[1] == 0):
            continue
        if key == "registers":
            key = "reg_token"
        elif key.startswith("patch_embed."):
            key = key.replace("patch_embed.", "patch_embed.proj.", 1)
        elif key.startswith("blocks."):
            for old, new in _TIMM_VIT_RENAMES:
                key = key.replace(old, new)
        state[key] = value
    block = backbone.blocks[0]
    build = {
        "img_size": backbone.image_size, "patch_size": backbone.patch_size,
        "in_chans": backbone.patch_embed.in_channels, "embed_dim": backbone.feature_dim,
        "depth": len(backbone.blocks), "num_heads": block.heads,
        "mlp_ratio": block.mlp[0].out_features / backbone.feature_dim, "qkv_bias": block.qkv.bias is not None,
        "class_token": True, "reg_tokens": backbone.num_prefix - 1, "no_embed_class": True,
        "global_pool": "avg" if backbone.pool == "avg" else "token", "fc_norm": False, "num_classes": 0,
    }
    return state, build
