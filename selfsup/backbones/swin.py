"""A compact Swin Transformer backbone with a SimMIM mask token.

Liu, Lin, Cao, Hu, Wei, Zhang, Lin, Guo, 2021, "Swin Transformer: Hierarchical Vision Transformer
using Shifted Windows", arXiv 2103.14030 (https://arxiv.org/abs/2103.14030); official code
https://github.com/microsoft/Swin-Transformer. Patch embedding (stride ``patch_size``, LayerNorm),
stages of blocks with multi-head self-attention inside non-overlapping windows plus a learned
relative position bias (Sec. 3.2, Eq. 4), windows shifted by half a window on every second block
with a mask so that tokens from different regions of the cyclically shifted map do not attend to
each other (Sec. 3.2, Fig. 4), and patch merging (2x2 neighbours concatenated, LayerNorm,
linear 4C -> 2C) between stages. No absolute position embedding (the paper's default).

For SimMIM (Xie et al. 2021, "SimMIM: A Simple Framework for Masked Image Modeling",
arXiv 2111.09886, official https://github.com/microsoft/SimMIM) masked patch embeddings are
replaced by a learned ``mask_token`` before the first stage (:meth:`SwinTransformer.forward_features`).

As in the official code, when a feature map is no larger than the window (``min(H, W) <=
window_size``) the window is clamped to ``min(H, W)`` and the block does not shift; here this is
decided from the actual input at each forward, so one model runs at several resolutions.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.nn.transformer import DropPath, attention

MASK_VALUE = -100.0  # the official value added to attention logits between different regions


def window_partition(x: Tensor, window: int) -> Tensor:
    """``(B, H, W, C)`` -> ``(B * num_windows, window * window, C)``, windows in raster order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """The inverse of :func:`window_partition`: back to ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


@lru_cache(maxsize=64)
def relative_position_index(window: int, table_window: int) -> Tensor:
    """``(window^2, window^2)`` indices into a ``(2 * table_window - 1)^2`` bias table.

    Entry ``(i, j)`` is the row of the table for the offset ``(dy, dx)`` of token ``i`` from token
    ``j`` (Sec. 3.2: offsets lie in ``[-M + 1, M - 1]``). A window smaller than the table's (a
    clamped window on a small feature map) uses the central part of the same table.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # (2, window^2)
    rel = coords[:, :, None] - coords[:, None, :] + (table_window - 1)
    return rel[0] * (2 * table_window - 1) + rel[1]


@lru_cache(maxsize=64)
def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """Additive attention mask ``(num_windows, window^2, window^2)`` for shifted windows.

    After rolling the map by ``-shift``, the windows on the bottom and right edges hold tokens
    from up to 4 regions that were not adjacent in the image; a pair of tokens from different
    regions gets ``-100`` (as the official code), same-region pairs get 0. Regions per axis:
    ``[0, size - window)``, ``[size - window, size - shift)``, ``[size - shift, size)``.
    """
    region = torch.zeros(1, height, width, 1)
    bounds = lambda size: ((0, size - window), (size - window, size - shift), (size - shift, size))  # noqa: E731
    label = 0
    for h0, h1 in bounds(height):
        for w0, w1 in bounds(width):
            region[:, h0:h1, w0:w1] = label
            label += 1
    ids = window_partition(region, window).squeeze(-1)  # (num_windows, window^2)
    different = ids[:, :, None] != ids[:, None, :]
    return torch.zeros(different.shape).masked_fill(different, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows with a learned relative position bias (Eq. 4)."""

    def __init__(self, dim: int, heads: int, window_size: int) -> None:
        super().__init__()
        self.heads, self.window_size = heads, window_size
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def bias(self, window: int) -> Tensor:
        """``(heads, window^2, window^2)`` relative position bias for a window of side ``window``."""
        index = relative_position_index(window, self.window_size).to(self.relative_position_bias_table.device)
        return self.relative_position_bias_table[index].permute(2, 0, 1)

    def forward(self, windows: Tensor, window: int, mask: Tensor | None = None) -> Tensor:
        """``windows`` ``(B * nW, window^2, C)``; ``mask`` ``(nW, window^2, window^2)`` additive."""
        bw, n, c = windows.shape
        q, k, v = self.qkv(windows).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        logits_bias = self.bias(window).to(q.dtype).unsqueeze(0)  # (1, heads, n, n)
        if mask is not None:
            num_windows = mask.shape[0]
            logits_bias = logits_bias + mask.to(q.dtype).unsqueeze(1).repeat(bw // num_windows, 1, 1, 1)
        out = attention(q, k, v, attn_mask=logits_bias)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """Pre-norm Swin block on a ``(B, H, W, C)`` map: (shifted) window attention, then an MLP."""

    def __init__(self, dim: int, heads: int, window_size: int, shifted: bool, mlp_ratio: float,
                 drop_path: float) -> None:
        super().__init__()
        self.window_size, self.shifted = window_size, shifted
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window_size)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def window_and_shift(self, height: int, width: int) -> tuple[int, int]:
        """The window side and shift used on an ``height x width`` map (clamped when small)."""
        if min(height, width) <= self.window_size:
            return min(height, width), 0
        return self.window_size, self.window_size // 2 if self.shifted else 0

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        window, shift = self.window_and_shift(h, w)
        if h % window or w % window:
            raise ValueError(f"SwinTransformer: a {h}x{w} feature map is not a multiple of the window {window}; "
                             "use an image size that is patch_size * 2^(stages-1) * window_size times an integer")
        y = self.norm1(x)
        mask = None
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
            mask = shifted_window_mask(h, w, window, shift).to(y.device)
        y = window_reverse(self.attn(window_partition(y, window), window, mask), window, h, w)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (4C), LayerNorm, linear to 2C: halves H and W."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] % 2 or x.shape[2] % 2:
            raise ValueError(f"SwinTransformer: patch merging needs an even feature map, got {tuple(x.shape[1:3])}")
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinTransformer(Backbone):
    """Swin Transformer returning average-pooled last-stage features (after LayerNorm).

    Args:
        image_size: the nominal input size (checked to be a multiple of the total stride); other
            multiples of the stride also run.
        patch_size: side of the patch embedding (4 in the paper).
        window_size: attention window side (7 in the paper); clamped on small feature maps.
        embed_dim: channels of the first stage ``C``; stage ``i`` has ``C * 2^i``.
        depths, num_heads: blocks and heads per stage (one entry per stage).
        mlp_ratio: MLP hidden size over the channels.
        in_channels: 1 or 3.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this rate.

    Example:
        >>> swin = SwinTransformer(image_size=32, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4))
        >>> swin(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 4,
        window_size: int = 7,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratio: float = 4.0,
        in_channels: int = 3,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        depths, num_heads = tuple(int(d) for d in depths), tuple(int(h) for h in num_heads)
        stages = len(depths)
        if stages < 1 or len(num_heads) != stages or any(
                (embed_dim * 2 ** i) % h for i, h in enumerate(num_heads)):
            raise ValueError(
                "SwinTransformer needs one num_heads entry per stage, each dividing the stage width "
                f"embed_dim * 2^i; got embed_dim={embed_dim}, depths={depths}, num_heads={num_heads}"
            )
        self.patch_size, self.image_size, self.window_size = patch_size, image_size, window_size
        self.stride = patch_size * 2 ** (stages - 1)
        if image_size % self.stride:
            raise ValueError(f"SwinTransformer: image_size {image_size} is not a multiple of the total stride "
                             f"{self.stride} (patch_size * 2^(stages-1))")
        self.feature_dim = embed_dim * 2 ** (stages - 1)
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        start = 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim = embed_dim * 2 ** i
            self.stages.append(nn.Sequential(*(
                SwinBlock(dim, heads, window_size, shifted=j % 2 == 1, mlp_ratio=mlp_ratio,
                          drop_path=rates[start + j]) for j in range(depth))))
            start += depth
            if i < stages - 1:
                self.merges.append(PatchMerging(dim))
        self.norm = nn.LayerNorm(self.feature_dim)
        self._init_weights()
        self.config = {"image_size": image_size, "patch_size": patch_size, "window_size": window_size,
                       "embed_dim": embed_dim, "depths": depths, "num_heads": num_heads, "mlp_ratio": mlp_ratio,
                       "in_channels": in_channels, "drop_path_rate": drop_path_rate}

    def _init_weights(self) -> None:
        """Official init: truncated normal (std 0.02) linears with zero bias; LayerNorm (1, 0)."""
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_features(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        """The last feature map ``(B, feature_dim, H / stride, W / stride)`` after the final LayerNorm.

        Args:
            images: ``(B, C, H, W)``; H and W multiples of :attr:`stride`.
            mask: ``(B, (H / patch_size) * (W / patch_size))`` bool in raster order, True where the
                patch embedding is replaced by the mask token (SimMIM).
        """
        x = self.patch_norm(self.patch_embed(images).permute(0, 2, 3, 1))  # (B, h, w, C)
        if mask is not None:
            b, h, w, c = x.shape
            if mask.shape != (b, h * w):
                raise ValueError(f"SwinTransformer: mask must be (B, {h * w}) for this input, got {tuple(mask.shape)}")
            x = torch.where(mask.reshape(b, h, w, 1), self.mask_token.to(x.dtype).reshape(1, 1, 1, c), x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.merges):
                x = self.merges[i](x)
        return self.norm(x).permute(0, 3, 1, 2)

    def feature_map(self, images: Tensor) -> Tensor:
        """The last stage's map ``(B, feature_dim, H / stride, W / stride)``."""
        return self.forward_features(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_features(images).mean(dim=(2, 3))
