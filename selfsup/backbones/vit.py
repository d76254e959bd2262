"""A Vision Transformer backbone with token masking, registers and resizable position embeddings.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", arXiv 2010.11929 (official
github.com/google-research/vision_transformer). Additions used by self-supervised methods:
dropping masked tokens (MAE, He et al. 2021, arXiv 2111.06377) or replacing them with a learned
mask token (SimMIM, Xie et al. 2021, arXiv 2111.09886; iBOT), register tokens (Darcet et al. 2023,
"Vision Transformers Need Registers", arXiv 2309.16588), 2-D sine-cosine or learned position
embeddings resized to other image sizes (multi-crop), stochastic depth (Huang et al. 2016), and the
choice of pooled output: the class token or the mean of the patch tokens.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.nn.patches import grid_size, resized_positions, sincos_embedding_at, sincos_position_embedding
from selfsup.nn.transformer import Block


#: the pooled outputs a ViT offers (``VisionTransformer(pool=...)``)
POOLS = {"cls": "final class token", "avg": "mean of the final patch tokens"}


class VisionTransformer(Backbone):
    """ViT returning the final class token, or the mean of the final patch tokens, as its pooled feature.

    Args:
        image_size: the size the position embedding is built for (other sizes get it resized).
        patch_size: side of the square patches.
        embed_dim, depth, num_heads, mlp_ratio: the usual transformer sizes.
        in_channels: 1 or 3.
        num_registers: extra learned tokens after the class token, dropped from the output.
        pos_embed: ``"sincos"`` (fixed, MAE / MoCo v3) or ``"learned"``.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this rate.
        pool: what :meth:`forward` returns, after the final LayerNorm: ``"cls"``, the class token, or
            ``"avg"``, the mean of the patch tokens (registers and class token left out; the
            official fine-tuning pooling of SimMIM, MaskFeat and CAE, and I-JEPA's, whose ViT has
            no class token). ``None`` (default) is ``"cls"`` until a method sets the output its
            loss trains (:attr:`selfsup.methods.Method.representation`); an explicit value is a
            request the method checks. Recorded in ``config``, so exports load back with it.
        activation_checkpointing: recompute each block's activations in the backward pass instead
            of storing them (training only): less memory for large ViTs, about one more forward
            pass of compute; the gradients are the same. A training option, not recorded in
            ``config``.

    Example:
        >>> vit = VisionTransformer(image_size=32, patch_size=4, embed_dim=192, depth=2, num_heads=3)
        >>> vit(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 192])
        >>> vit.pool, vit.position_embedding(3, 3).shape  # the table for a 12 px crop (3 x 3 patches)
        ('cls', torch.Size([1, 9, 192]))
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        in_channels: int = 3,
        num_registers: int = 0,
        pos_embed: str = "sincos",
        drop_path_rate: float = 0.0,
        pool: str | None = None,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads or pos_embed not in ("sincos", "learned") or num_registers < 0:
            raise ValueError(
                f"VisionTransformer needs embed_dim divisible by num_heads, pos_embed 'sincos' or 'learned' and "
                f"num_registers >= 0; got embed_dim={embed_dim}, num_heads={num_heads}, pos_embed={pos_embed!r}, "
                f"num_registers={num_registers}"
            )
        _check_pool(pool)
        self.patch_size, self.image_size = patch_size, image_size
        self.grid = grid_size(image_size, patch_size)
        self.feature_dim = embed_dim
        self.num_prefix = 1 + num_registers
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.registers = nn.Parameter(torch.zeros(1, num_registers, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed_kind = pos_embed
        table = sincos_position_embedding(self.grid, self.grid, embed_dim).unsqueeze(0)
        self.pos_embed = nn.Parameter(table, requires_grad=pos_embed == "learned")
        rates = [drop_path_rate * i / max(1, depth - 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, r) for r in rates)
        for block in self.blocks:
            block.checkpoint_activations = bool(activation_checkpointing)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()
        self.config = {"image_size": image_size, "patch_size": patch_size, "embed_dim": embed_dim, "depth": depth,
                       "num_heads": num_heads, "mlp_ratio": mlp_ratio, "in_channels": in_channels,
                       "num_registers": num_registers, "pos_embed": pos_embed, "pool": pool}
        self.pool = pool or "cls"
        self.pool_requested = pool is not None  # chosen by the caller rather than left to the method

    def set_pool(self, pool: str) -> None:
        """Make :meth:`forward` return ``pool`` (``"cls"`` or ``"avg"``) and record it in ``config``."""
        _check_pool(pool)
        self.pool = pool
        self.config = {**self.config, "pool": pool}

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        """The pooled feature ``(B, D)`` of output tokens ``(B, prefix + N, D)`` (:meth:`forward_tokens`)."""
        if self.pool == "avg":
            return tokens[:, self.num_prefix:].mean(dim=1)
        return tokens[:, 0].clone()  # not a view: FSDP cannot see in-place changes to a module's view output

    def _init_weights(self) -> None:
        for tensor in (self.cls_token, self.registers, self.mask_token):
            nn.init.normal_(tensor, std=0.02)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def position_embedding(self, grid_h: int, grid_w: int) -> Tensor:
        """``(1, grid_h * grid_w, D)`` for a patch grid of any size: the table resized to it.

        A grid other than the table's (a multi-crop local view, another image size) covers the
        same extent as the table: its cell ``i`` sits at ``(i + 0.5) * grid / grid_h - 0.5`` on the
        table (:func:`~selfsup.nn.patches.resized_positions`), so a local crop's positions span the
        image as in DINO, iBOT and DINOv2 (official ``interpolate_pos_encoding``: the whole table
        interpolated bicubically to the crop's grid). A learned table is interpolated the same way
        (bicubic, ``align_corners=False``). The sine-cosine table is the closed-form function
        sampled at integer positions, so it is evaluated exactly at the fractional positions
        instead of being interpolated: that is what an ideal interpolation of the table gives,
        each (sin, cos) pair keeps unit norm, and it avoids bicubic's error on the fastest channels
        (up to 0.065 per entry from 7x7 to 3x3 or 8x8 to 4x4; I-JEPA's official code interpolates
        its sine-cosine table bicubically, which differs by that much).
        """
        if (grid_h, grid_w) == (self.grid, self.grid):
            return self.pos_embed
        if self.pos_embed_kind == "sincos":
            rows, cols = resized_positions(grid_h, self.grid), resized_positions(grid_w, self.grid)
            return sincos_embedding_at(rows, cols, self.feature_dim).to(self.pos_embed).unsqueeze(0)
        table = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)

    def patch_tokens(self, images: Tensor) -> Tensor:
        """Patch embeddings plus position embeddings, ``(B, N, D)`` in raster order."""
        x = self.patch_embed(images)
        b, d, gh, gw = x.shape
        return x.flatten(2).transpose(1, 2) + self.position_embedding(gh, gw)

    def forward_tokens(self, images: Tensor, *, keep: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """All output tokens ``(B, prefix + N', D)`` after the final LayerNorm.

        Args:
            images: ``(B, C, H, W)``; H and W multiples of the patch size.
            keep: ``(B, N_keep)`` indices of the patches to keep; the others never enter the
                encoder (MAE). Output patch tokens follow ``keep``'s order.
            mask: ``(B, N)`` bool, True where a patch is replaced by the mask token (SimMIM, iBOT).
        """
        x = self.patch_tokens(images)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype) + self._pos_for(images), x)
        if keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        prefix = torch.cat([self.cls_token, self.registers], dim=1).expand(x.shape[0], -1, -1)
        x = torch.cat([prefix, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _pos_for(self, images: Tensor) -> Tensor:
        p = self.patch_size
        return self.position_embedding(images.shape[-2] // p, images.shape[-1] // p)

    def forward(self, images: Tensor) -> Tensor:
        """The pooled feature ``(B, D)`` named by :attr:`pool`."""
        return self.pool_tokens(self.forward_tokens(images))

    def feature_map(self, images: Tensor) -> Tensor:
        """Patch tokens as a map ``(B, D, H/p, W/p)``."""
        tokens = self.forward_tokens(images)[:, self.num_prefix:]
        gh, gw = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)

    @torch.no_grad()
    def last_attention(self, images: Tensor) -> Tensor:
        """Attention of the last block ``(B, heads, T, T)`` (T = prefix + patches), for DINO's maps."""
        x = self.patch_tokens(images)
        prefix = torch.cat([self.cls_token, self.registers], dim=1).expand(x.shape[0], -1, -1)
        x = torch.cat([prefix, x], dim=1)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.blocks[-1].attention_weights(x)


def _check_pool(pool: str | None) -> None:
    if pool is not None and pool not in POOLS:
        raise ValueError(f"VisionTransformer pool must be one of {sorted(POOLS)} (or None); got {pool!r}")
