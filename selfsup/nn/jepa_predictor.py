"""I-JEPA's predictor: a narrow ViT from context tokens and positional mask tokens to targets."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from selfsup.nn.transformer import Block
from selfsup.nn.patches import sincos_position_embedding

__all__ = ["JEPAPredictor"]


class JEPAPredictor(nn.Module):
    """Predict target-block representations from the context encoder's patch tokens.

    Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
    Architecture", arXiv 2301.08243 (https://arxiv.org/abs/2301.08243), Sec. 3 and Appendix A;
    official code https://github.com/facebookresearch/ijepa (``src/models/vision_transformer.py``,
    ``VisionTransformerPredictor``). Context tokens are projected to ``predictor_dim`` and get the
    fixed 2-D sine-cosine embedding of their positions; for each target block, a learned mask
    token plus the embedding of each target position is appended; the concatenation goes through
    ``depth`` pre-norm transformer blocks and a LayerNorm, and the outputs at the mask tokens are
    projected back to ``embed_dim``. Each target block is predicted in its own sequence (blocks do
    not see each other). Paper: depth 12 and width 384 (ViT-H/14), heads as the encoder's.

    Args:
        embed_dim: encoder width.
        predictor_dim: predictor width.
        depth, num_heads, mlp_ratio: transformer sizes.

    Example:
        >>> predictor = JEPAPredictor(embed_dim=64, predictor_dim=32, depth=2, num_heads=4)
        >>> context, ctx_idx, tgt_idx = torch.randn(2, 5, 64), torch.arange(5).repeat(2, 1), torch.arange(5, 9).repeat(2, 3, 1)
        >>> predictor(context, ctx_idx, tgt_idx, grid_h=4, grid_w=4).shape
        torch.Size([2, 3, 4, 64])
    """

    def __init__(
        self, embed_dim: int, predictor_dim: int = 384, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if predictor_dim % num_heads or predictor_dim % 4:
            raise ValueError(f"JEPAPredictor needs predictor_dim divisible by num_heads and by 4, got "
                             f"{predictor_dim}, {num_heads}")
        self.predictor_dim = predictor_dim
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.blocks = nn.ModuleList(Block(predictor_dim, num_heads, mlp_ratio, 0.0) for _ in range(depth))
        self.norm = nn.LayerNorm(predictor_dim, eps=1e-6)
        self.proj = nn.Linear(predictor_dim, embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """Truncated normal (std 0.02) weights, zero biases, the residual outputs of block ``l`` divided
        by ``sqrt(2 l)`` (the official ``fix_init_weight``)."""
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for layer, block in enumerate(self.blocks, start=1):
            block.proj.weight.data.div_(math.sqrt(2.0 * layer))
            block.mlp[-1].weight.data.div_(math.sqrt(2.0 * layer))

    def forward(self, context: Tensor, context_idx: Tensor, target_idx: Tensor, grid_h: int, grid_w: int) -> Tensor:
        """``context`` ``(B, N_ctx, D)`` at ``context_idx`` ``(B, N_ctx)``; targets ``(B, M, N_tgt)``
        indices; returns predictions ``(B, M, N_tgt, D)``."""
        b, m, t = target_idx.shape
        pos = sincos_position_embedding(grid_h, grid_w, self.predictor_dim).to(context)  # (N, d)
        x = self.embed(context) + pos[context_idx]
        queries = self.mask_token.to(x.dtype) + pos[target_idx.reshape(b * m, t)]  # (B M, T, d)
        x = torch.cat([x.repeat_interleave(m, dim=0), queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.norm(x[:, -t:])).reshape(b, m, t, -1)
