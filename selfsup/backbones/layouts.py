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
- **timm, Swin**: selfsup's :class:`~selfsup.backbones.swin.SwinTransformer` maps onto
  ``timm.models.SwinTransformer`` (``global_pool="avg"``, no classifier): ``patch_embed`` /
  ``patch_norm`` -> ``patch_embed.proj`` / ``patch_embed.norm``, ``stages.I.J`` ->
  ``layers.I.blocks.J`` (``mlp.0`` / ``mlp.2`` -> ``mlp.fc1`` / ``mlp.fc2``), and ``merges.I`` (the
  patch merging after stage I) -> ``layers.I+1.downsample`` (timm merges at the start of the next
  stage; both concatenate the 2 x 2 neighbours in the same order); ``mask_token`` is left out.
- **Hugging Face**: a selfsup ViT without registers maps onto ``transformers.ViTModel``
  (``layer_norm_eps=1e-6``, no pooling layer): ``qkv`` split into query / key / value, and a zero
  row for the class token prepended to the position table (HF adds a position embedding to the
  class token; selfsup's class token has none). Both transformers 4's key names
  (``encoder.layer.N.attention.attention.query``) and 5's (``layers.N.attention.q_proj``) are
  written, whichever the installed model has. A selfsup Swin maps onto ``transformers.SwinModel``
  (transformers 5 names; ``qkv`` split, ``merges.i`` -> ``encoder.layers.i.downsample``, its pooled
  output equals selfsup's), as long as no stage's map is smaller than the window (transformers
  cannot shrink a stage's window as selfsup and timm do).

Example:
    >>> import timm
    >>> state, kwargs = timm_layout(selfsup.backbones.get("vit_tiny", image_size=32, patch_size=4, depth=2))
    >>> timm.models.VisionTransformer(**kwargs).load_state_dict(state)
    <All keys matched successfully>
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from selfsup.backbones.resnet import TorchvisionResNet
from selfsup.backbones.swin import SwinTransformer
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


def timm_swin_key(key: str, *, to_timm: bool = True) -> str:
    """The name of a selfsup Swin tensor ``key`` in ``timm.models.SwinTransformer``, or (``to_timm=False``)
    the selfsup name of timm's ``key``.

    Example:
        >>> timm_swin_key("merges.0.reduction.weight"), timm_swin_key("stages.2.1.mlp.0.bias")
        ('layers.1.downsample.reduction.weight', 'layers.2.blocks.1.mlp.fc1.bias')
    """
    parts = key.split(".")
    if to_timm:
        if parts[0] == "stages":
            rest = ".".join(parts[3:]).replace("mlp.0.", "mlp.fc1.").replace("mlp.2.", "mlp.fc2.")
            return f"layers.{parts[1]}.blocks.{parts[2]}.{rest}"
        if parts[0] == "merges":
            return f"layers.{int(parts[1]) + 1}.downsample.{'.'.join(parts[2:])}"
        if parts[0] == "patch_embed":
            return "patch_embed.proj." + ".".join(parts[1:])
        if parts[0] == "patch_norm":
            return "patch_embed.norm." + ".".join(parts[1:])
        return key
    if parts[0] == "layers" and parts[2] == "blocks":
        rest = ".".join(parts[4:]).replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.2.")
        return f"stages.{parts[1]}.{parts[3]}.{rest}"
    if parts[0] == "layers" and parts[2] == "downsample":
        return f"merges.{int(parts[1]) - 1}.{'.'.join(parts[3:])}"
    if parts[:2] == ["patch_embed", "proj"]:
        return "patch_embed." + ".".join(parts[2:])
    if parts[:2] == ["patch_embed", "norm"]:
        return "patch_norm." + ".".join(parts[2:])
    return key


def swin_stage_windows(backbone: SwinTransformer) -> list[int]:
    """The window side each stage uses at the backbone's image size: the configured one, or the
    stage's grid side when that is not larger (selfsup and timm clamp alike, without shift)."""
    options = backbone.config
    grid = options["image_size"] // options["patch_size"]
    windows = []
    for stage in range(len(options["depths"])):
        side = grid // 2 ** stage
        windows.append(side if side <= options["window_size"] else options["window_size"])
    return windows


def resize_bias_table(table: Tensor, window: int) -> Tensor:
    """A ``(2M - 1)^2``-row relative position table cut to (or zero-padded from) ``(2 window - 1)^2``
    rows around its centre: the offsets a window of side ``window`` uses, in the same order.

    Example:
        >>> resize_bias_table(torch.arange(49.0).reshape(49, 1), 2).flatten().tolist()
        [16.0, 17.0, 18.0, 23.0, 24.0, 25.0, 30.0, 31.0, 32.0]
    """
    side, heads = round(table.shape[0] ** 0.5), table.shape[1]
    new_side = 2 * window - 1
    grid = table.reshape(side, side, heads)
    if new_side <= side:
        start = (side - new_side) // 2
        return grid[start:start + new_side, start:start + new_side].reshape(-1, heads).contiguous()
    padded = table.new_zeros(new_side, new_side, heads)
    start = (new_side - side) // 2
    padded[start:start + side, start:start + side] = grid
    return padded.reshape(-1, heads)


def _timm_swin(backbone: SwinTransformer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    windows = swin_stage_windows(backbone)
    state: dict[str, Tensor] = {}
    for key, value in _state(backbone).items():
        if key == "mask_token":
            continue
        if key.endswith("relative_position_bias_table"):  # timm keeps only the offsets the clamped window uses
            value = resize_bias_table(value, windows[int(key.split(".")[1])])
        state[timm_swin_key(key)] = value
    options = dict(backbone.config)
    build = {"img_size": options["image_size"], "patch_size": options["patch_size"],
             "window_size": options["window_size"], "embed_dim": options["embed_dim"],
             "depths": list(options["depths"]), "num_heads": list(options["num_heads"]),
             "in_chans": options["in_channels"], "num_classes": 0, "global_pool": "avg"}
    return state, build


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
    keyword arguments of ``timm.models.VisionTransformer`` (a selfsup ViT) or
    ``timm.models.SwinTransformer`` (a selfsup Swin).

    Raises:
        SelfSupError: the backbone has no timm counterpart here (a ResNet: use ``torchvision``).
    """
    if isinstance(backbone, TimmBackbone):
        options = dict(backbone.config)
        in_channels = options.pop("in_channels", 3)
        build = {"model_name": backbone.name[len(PREFIX):], "in_chans": in_channels, "num_classes": 0, **options}
        return _state(backbone.model), build
    if isinstance(backbone, SwinTransformer):
        return _timm_swin(backbone)
    if not isinstance(backbone, VisionTransformer):
        raise SelfSupError(
            f"format 'timm' takes a selfsup ViT or Swin, or a timm: backbone; this backbone is "
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


def hf_swin_config(backbone: SwinTransformer) -> dict[str, Any]:
    """Keyword arguments of ``transformers.SwinConfig`` for a selfsup Swin.

    Raises:
        SelfSupError: a stage's map is smaller than the window: selfsup (like timm) shrinks that
            stage's window and bias table, ``transformers.SwinModel`` keeps the configured table
            and fails on such a map.
    """
    options = backbone.config
    windows = swin_stage_windows(backbone)
    if min(windows) < options["window_size"]:
        stage = windows.index(min(windows))
        raise SelfSupError(
            f"format 'hf': at image size {options['image_size']} stage {stage} of this Swin has a "
            f"{windows[stage]}x{windows[stage]} map, smaller than its window {options['window_size']}; "
            "transformers' SwinModel cannot run that stage (selfsup and timm shrink the window). Use "
            "--format timm, or train at an image size whose last map is at least the window "
            f"(patch_size * 2^(stages-1) * window_size = "
            f"{options['patch_size'] * 2 ** (len(windows) - 1) * options['window_size']} px)")
    block = backbone.stages[0][0]
    return {
        "image_size": options["image_size"], "patch_size": options["patch_size"],
        "num_channels": options["in_channels"], "embed_dim": options["embed_dim"],
        "depths": list(options["depths"]), "num_heads": list(options["num_heads"]),
        "window_size": options["window_size"], "mlp_ratio": block.mlp[0].out_features / options["embed_dim"],
        "qkv_bias": block.attn.qkv.bias is not None, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0,
        "use_absolute_embeddings": False,
    }


def hf_swin_layout(backbone: SwinTransformer) -> dict[str, Tensor]:
    """A selfsup Swin's weights under the names of ``transformers.SwinModel`` (transformers 5
    naming): ``stages.i.j`` -> ``encoder.layers.i.blocks.j`` with the fused ``qkv`` split into
    ``q_proj`` / ``k_proj`` / ``v_proj``; ``merges.i`` -> ``encoder.layers.i.downsample`` (transformers
    merges at the end of a stage, as selfsup does); the final norm -> ``layernorm``. The mask token
    (SimMIM's) is left out."""
    own = _state(backbone)
    state = {
        "embeddings.patch_embeddings.projection.weight": own["patch_embed.weight"],
        "embeddings.patch_embeddings.projection.bias": own["patch_embed.bias"],
        "embeddings.norm.weight": own["patch_norm.weight"], "embeddings.norm.bias": own["patch_norm.bias"],
        "layernorm.weight": own["norm.weight"], "layernorm.bias": own["norm.bias"],
    }
    for i, stage in enumerate(backbone.stages):
        for j in range(len(stage)):
            ours, theirs = f"stages.{i}.{j}.", f"encoder.layers.{i}.blocks.{j}."
            state[f"{theirs}attention.relative_position_bias.relative_position_bias_table"] = (
                own[f"{ours}attn.relative_position_bias_table"])
            state.update(_hf_block(own, ours, "attn.", theirs, _HF5_BLOCK))
    for i in range(len(backbone.merges)):
        state[f"encoder.layers.{i}.downsample.reduction.weight"] = own[f"merges.{i}.reduction.weight"]
        for kind in ("weight", "bias"):
            state[f"encoder.layers.{i}.downsample.norm.{kind}"] = own[f"merges.{i}.norm.{kind}"]
    return state


def hf_vit_layout(backbone: VisionTransformer, hf_keys: set[str]) -> dict[str, Tensor]:
    """A selfsup ViT's weights under the names of ``transformers.ViTModel`` whose state dict has
    ``hf_keys`` (transformers 4 or 5 naming)."""
    new = "layers.0.attention.q_proj.weight" in hf_keys
    names = ({"layer": "layers.{i}.", **_HF5_BLOCK} if new else
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
        state.update(_hf_block(own, f"blocks.{i}.", "", names["layer"].format(i=i), names))
    return state


_HF5_BLOCK = {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj", "out": "attention.o_proj",
              "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
"""transformers 5's names of a block's attention and MLP layers (ViTModel and SwinModel alike)."""


def _hf_block(own: dict[str, Tensor], ours: str, attn: str, theirs: str, names: dict[str, str]) -> dict[str, Tensor]:
    """One selfsup pre-norm block (``ours`` prefix; its attention under ``ours + attn``) under
    transformers' names (``theirs`` prefix, ``names`` for the layers): the fused ``qkv`` split in three."""
    state = {}
    for kind in ("weight", "bias"):
        if f"{ours}{attn}qkv.{kind}" in own:
            for part, tensor in zip("qkv", own[f"{ours}{attn}qkv.{kind}"].chunk(3, dim=0)):
                state[f"{theirs}{names[part]}.{kind}"] = tensor.contiguous()
        state[f"{theirs}{names['out']}.{kind}"] = own[f"{ours}{attn}proj.{kind}"]
        state[f"{theirs}{names['fc1']}.{kind}"] = own[f"{ours}mlp.0.{kind}"]
        state[f"{theirs}{names['fc2']}.{kind}"] = own[f"{ours}mlp.2.{kind}"]
        state[f"{theirs}layernorm_before.{kind}"] = own[f"{ours}norm1.{kind}"]
        state[f"{theirs}layernorm_after.{kind}"] = own[f"{ours}norm2.{kind}"]
    return state
