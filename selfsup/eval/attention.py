"""Class-token attention maps of a Vision Transformer, drawn over the images, as a PNG."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.eval._figures import figure, save, show

__all__ = ["attention_maps", "class_token_attention"]


@torch.no_grad()
def class_token_attention(backbone: nn.Module, inputs: Tensor) -> Tensor:
    """``(B, H, W)`` maps in [0, 1]: last-block attention of the class token to each patch, heads averaged.

    As in DINO's pictures (Caron et al., "Emerging Properties in Self-Supervised Vision
    Transformers", 2021, https://arxiv.org/abs/2104.14294, Fig. 1), averaged over heads: the
    softmax attention from the class token to the patch tokens of the last block (registers left
    out), bilinearly upsampled from the patch grid to the input size and min-max scaled per image.
    The backbone runs in eval mode (restored afterwards).

    Args:
        backbone: a :class:`selfsup.backbones.vit.VisionTransformer`.
        inputs: ``(B, C, H, W)`` network inputs (normalised), H and W multiples of the patch size.

    Raises:
        ConfigError: ``backbone`` is not a VisionTransformer, or ``inputs`` is not a batch.

    Example:
        >>> vit = selfsup.backbones.get("vit_tiny", image_size=32, patch_size=4, depth=2)
        >>> class_token_attention(vit, torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 32, 32])
    """
    from selfsup.backbones.vit import VisionTransformer

    if not isinstance(backbone, VisionTransformer):
        kind = getattr(backbone, "name", None) or type(backbone).__name__
        raise ConfigError(f"Attention maps need a VisionTransformer backbone (vit_tiny, vit_small, vit_base); "
                          f"{kind} has no class-token attention.")
    if inputs.dim() != 4 or len(inputs) == 0:
        raise ConfigError(f"Attention maps need a batch (B, C, H, W) with B >= 1, got {tuple(inputs.shape)}.")
    p = backbone.patch_size
    gh, gw = inputs.shape[-2] // p, inputs.shape[-1] // p
    was_training = backbone.training
    backbone.eval()
    try:
        attention = backbone.last_attention(inputs).float()  # (B, heads, T, T)
    finally:
        backbone.train(was_training)
    cls = attention[:, :, 0, backbone.num_prefix:].mean(dim=1)  # (B, patches), raster order
    maps = F.interpolate(cls.reshape(-1, 1, gh, gw), size=tuple(inputs.shape[-2:]), mode="bilinear",
                         align_corners=False)[:, 0]
    low, high = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-12)


def attention_maps(
    backbone: nn.Module,
    images: Tensor,
    path: str | Path,
    *,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> Path:
    """A PNG of ``images`` (top row) and their :func:`class_token_attention` maps over them (bottom row).

    Args:
        backbone: a :class:`selfsup.backbones.vit.VisionTransformer` (e.g. ``vit_tiny``).
        images: ``(B, C, H, W)`` uint8 (or float in [0, 1]) images to show.
        path: the PNG to write.
        transform: turns ``images`` into the backbone's input (e.g. the run's
            :class:`~selfsup.augment.EvalTransform`); None: only scaled to [0, 1].

    Raises:
        ConfigError: ``backbone`` is not a VisionTransformer, or ``images`` is not a batch.

    Example:
        >>> import tempfile
        >>> vit = selfsup.backbones.get("vit_tiny", image_size=32, patch_size=4, depth=2)
        >>> test_images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
        >>> transform = selfsup.augment.EvalTransform(32, (0.5,) * 3, (0.25,) * 3)
        >>> attention_maps(vit, test_images, tempfile.mkdtemp() + "/attention.png", transform=transform).name
        'attention.png'
    """
    images = torch.as_tensor(images)
    if images.dim() != 4 or len(images) == 0:
        raise ConfigError(f"attention_maps needs a batch (B, C, H, W) of images with B >= 1, "
                          f"got {tuple(images.shape)}.")
    device = next(backbone.parameters()).device
    batch = images.to(device)
    inputs = transform(batch) if transform is not None else (
        batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float())
    maps = class_token_attention(backbone, inputs)
    maps = F.interpolate(maps[:, None], size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    heads = backbone.blocks[-1].heads
    b = len(images)
    width, height = 1.6 * b + 0.2, 3.6
    fig = figure(width, height, constrained=False)
    fig.subplots_adjust(left=0.1 / width, right=1 - 0.1 / width, bottom=0.05, top=1 - 0.4 / height, wspace=0.08,
                        hspace=0.08)
    axes = fig.subplots(2, b, squeeze=False)
    for i in range(b):
        show(axes[0, i], images[i])
        show(axes[1, i], images[i])
        axes[1, i].imshow(maps[i].cpu().numpy(), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
    fig.suptitle(f"Class-token attention of the last block ({heads} heads averaged)", fontsize=9)
    return save(fig, path)
