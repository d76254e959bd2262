"""MAE's light transformer decoder: from the visible tokens' encodings back to every patch's pixels."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.nn.transformer import Block
from selfsup.nn.patches import sincos_position_embedding

__all__ = ["MAEDecoder"]


class MAEDecoder(nn.Module):
    """The asymmetric decoder of MAE.

    He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", arXiv 2111.06377
    (https://arxiv.org/abs/2111.06377), Sec. 3 "MAE decoder"; official code
    https://github.com/facebookresearch/mae (``models_mae.py``). The encoder's tokens are
    projected to ``embed_dim``; one shared learned mask token fills every masked position; the
    sequence is put back into raster order (``restore`` from
    :func:`selfsup.nn.masking.random_masking`), given the decoder's own fixed 2-D sine-cosine
    position embedding (prefix tokens get none, as the class token's zero row in the official
    table), and passed through ``depth`` pre-norm transformer blocks, a LayerNorm and a linear
    layer to ``patch_dim = p * p * C`` pixel values per patch. Prefix tokens (class token and
    registers) go through the blocks and are dropped at the output. Initialisation as the
    official code: Xavier-uniform linear weights, zero biases, mask token N(0, 0.02).
    ImageNet defaults: ``embed_dim=512``, ``depth=8``, ``num_heads=16``.

    Args:
        encoder_dim: width of the encoder's tokens.
        patch_dim: pixel values predicted per patch.
        embed_dim, depth, num_heads, mlp_ratio: decoder sizes.

    Example:
        >>> decoder = MAEDecoder(encoder_dim=192, patch_dim=48, embed_dim=64, depth=1, num_heads=4)
        >>> decoder(torch.zeros(2, 1 + 4, 192), torch.arange(16).repeat(2, 1), 1, 4, 4).shape
        torch.Size([2, 16, 48])
    """

    def __init__(
        self, encoder_dim: int, patch_dim: int, embed_dim: int = 512, depth: int = 8, num_heads: int = 16,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads or embed_dim % 4 or depth < 1:
            raise ValueError(
                "MAEDecoder needs embed_dim divisible by num_heads and by 4 (sine-cosine positions) and "
                f"depth >= 1; got embed_dim={embed_dim}, num_heads={num_heads}, depth={depth}"
            )
        self.embed_dim = embed_dim
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, 0.0) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.predict = nn.Linear(embed_dim, patch_dim)
        self._positions: dict[tuple, Tensor] = {}
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def position_embedding(self, grid_h: int, grid_w: int, like: Tensor) -> Tensor:
        """Fixed ``(1, grid_h * grid_w, embed_dim)`` sine-cosine table (cached per grid, device, dtype)."""
        key = (grid_h, grid_w, like.device, like.dtype)
        table = self._positions.get(key)
        if table is None:
            table = sincos_position_embedding(grid_h, grid_w, self.embed_dim).unsqueeze(0)
            table = self._positions[key] = table.to(device=like.device, dtype=like.dtype)
        return table

    def forward(self, tokens: Tensor, restore: Tensor, num_prefix: int, grid_h: int, grid_w: int) -> Tensor:
        """Pixel predictions ``(B, N, patch_dim)`` for every patch in raster order.

        Args:
            tokens: encoder output ``(B, num_prefix + N_keep, encoder_dim)``, kept patches in
                ``keep`` order.
            restore: ``(B, N)`` from :func:`~selfsup.nn.masking.random_masking`.
            num_prefix: class token plus registers at the start of ``tokens``.
            grid_h, grid_w: the patch grid, ``N = grid_h * grid_w``.
        """
        x = self.embed(tokens)
        prefix, visible = x[:, :num_prefix], x[:, num_prefix:]
        b, n = restore.shape
        if n != grid_h * grid_w or visible.shape[1] > n:
            raise ValueError(
                f"MAEDecoder: restore has {n} positions for a {grid_h}x{grid_w} grid and {visible.shape[1]} "
                "visible tokens"
            )
        fill = self.mask_token.to(x.dtype).expand(b, n - visible.shape[1], -1)
        full = torch.cat([visible, fill], dim=1)
        full = torch.gather(full, 1, restore.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
        full = full + self.position_embedding(grid_h, grid_w, full)
        x = torch.cat([prefix, full], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.predict(self.norm(x))[:, num_prefix:]
