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
- **Hugging Face**: a selfsup ViT without registers maps onto ``transformers.ViTModel``
  (``layer_norm_eps=1e-6``, no pooling layer): ``qkv`` split into query / key / value, and a zero
  row for the class token prepended to the position table (HF adds a position embedding to the
  class token; selfsup's class token has none). Both transformers 4's key names
  (``encoder.layer.N.attention.attention.query``) and 5's (``layers.N.attention.q_proj``) are
  written, whichever the installed model has.

Example:
    >>> state, kwargs = timm_layout(selfsup.backbones.get("vit_tiny", image_size=32, patch_size=4))
    >>> timm.models.VisionTransformer(**kwargs).load_state_dict(state)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from selfsup.backbones.resnet import TorchvisionResNet
from selfsup.backbones.timm_backbone import PREFIX, TimmBackbone
from selfsup.backbones.vit import VisionTransformer
from selfsup.errors import SelfSupError

_TIMM_BLOCK_NAMES = ((".qkv.", ".attn.qkv."), (".proj.", ".attn.proj."), (".mlp.0.", ".mlp.fc1."),
                     (".mlp.2.", ".mlp.fc2."))  # (selfsup, timm) inside blocks.N.
_TIMM_TOP_NAMES = (("registers", "reg_token"), ("patch_embed.", "patch_embed.proj."))  # (selfsup, timm) prefixes


def timm_vit_key(key: str, *, to_timm: bool = True) -> str:
    """The name of a selfsup ViT tensor ``key`` in timm's ``VisionTransformer``, or (``to_timm=False``)
    the selfsup name of timm's ``key``.

    Example:
        >>> timm_vit_key("blocks.0.mlp.0.weight")
        'blocks.0.mlp.fc1.weight'
    """
    if key.startswith("blocks."):
        for ours, theirs in _TIMM_BLOCK_NAMES:
            key = key.replace(ours, theirs) if to_timm else key.replace(theirs, ours)
        return key
    for ours, theirs in _TIMM_TOP_NAMES:
        old, new = (ours, theirs) if to_timm else (theirs, ours)
        if key.startswith(old):
            return new + key[len(old):]
    return key


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
        state[timm_vit_key(key)] = value
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


def hf_vit_config(backbone: nn.Module) -> dict[str, Any]:
    """Keyword arguments of ``transformers.ViTConfig`` for a selfsup ViT (no registers).

    Raises:
        SelfSupError: not a selfsup ViT, or one with registers (``ViTModel`` has none).
    """
    if not isinstance(backbone, VisionTransformer):
        raise SelfSupError(
            f"format 'hf' takes a selfsup ViT; this backbone is {getattr(backbone, 'name', type(backbone).__name__)!r}. "
            "Formats that take any backbone: safetensors, torchscript, pt2, onnx")
    if backbone.num_prefix > 1:
        raise SelfSupError(f"format 'hf': transformers' ViTModel has no registers and this ViT has "
                           f"{backbone.num_prefix - 1}; use --format timm (reg_tokens) or a format that takes any backbone")
    block = backbone.blocks[0]
    return {
        "hidden_size": backbone.feature_dim, "num_hidden_layers": len(backbone.blocks),
        "num_attention_heads": block.heads, "intermediate_size": block.mlp[0].out_features, "hidden_act": "gelu",
        "layer_norm_eps": 1e-6, "image_size": backbone.image_size, "patch_size": backbone.patch_size,
        "num_channels": backbone.patch_embed.in_channels, "qkv_bias": block.qkv.bias is not None,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
    }


def hf_vit_layout(backbone: VisionTransformer, hf_keys: set[str]) -> dict[str, Tensor]:
    """A selfsup ViT's weights under the names of ``transformers.ViTModel`` whose state dict has
    ``hf_keys`` (transformers 4 or 5 naming)."""
    new = "layers.0.attention.q_proj.weight" in hf_keys
    names = ({"layer": "layers.{i}.", "q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
              "out": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"} if new else
             {"layer": "encoder.layer.{i}.", "q": "attention.attention.query", "k": "attention.attention.key",
              "v": "attention.attention.value", "out": "attention.output.dense", "fc1": "intermediate.dense",
              "fc2": "output.dense"})
    own = _state(backbone)
    cls = own["cls_token"]
    state = {
        "embeddings.cls_token": cls,
        "embeddings.position_embeddings": torch.cat([torch.zeros_like(cls), own["pos_embed"]], dim=1),
        "embeddings.patch_embeddings.projection.weight": own["patch_embed.weight"],
        "embeddings.patch_embeddings.projection.bias": own["patch_embed.bias"],
        "layernorm.weight": own["norm.weight"], "layernorm.bias": own["norm.bias"],
    }
    for i in range(len(backbone.blocks)):
        ours, theirs = f"blocks.{i}.", names["layer"].format(i=i)
        for kind in ("weight", "bias"):
            if f"{ours}qkv.{kind}" in own:
                for part, tensor in zip("qkv", own[f"{ours}qkv.{kind}"].chunk(3, dim=0)):
                    state[f"{theirs}{names[part]}.{kind}"] = tensor.contiguous()
            state[f"{theirs}{names['out']}.{kind}"] = own[f"{ours}proj.{kind}"]
            state[f"{theirs}{names['fc1']}.{kind}"] = own[f"{ours}mlp.0.{kind}"]
            state[f"{theirs}{names['fc2']}.{kind}"] = own[f"{ours}mlp.2.{kind}"]
            state[f"{theirs}layernorm_before.{kind}"] = own[f"{ours}norm1.{kind}"]
            state[f"{theirs}layernorm_after.{kind}"] = own[f"{ours}norm2.{kind}"]
    return state
