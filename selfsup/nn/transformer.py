"""Transformer building blocks: a pre-norm self-attention block and stochastic depth.

Vaswani et al. 2017, "Attention Is All You Need", arXiv 1706.03762, in the pre-norm form of the
ViT (Dosovitskiy et al. 2021, arXiv 2010.11929); stochastic depth from Huang et al. 2016, "Deep
Networks with Stochastic Depth", arXiv 1603.09382. Used by the ViT backbone and by the MAE
decoder, the I-JEPA predictor and other heads.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for a whole sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= self.p
        return x * keep / (1.0 - self.p)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)), each with stochastic depth."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=qkv_bias), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def attention_weights(self, x: Tensor) -> Tensor:
        """Softmax attention ``(B, heads, N, N)`` of this block for input tokens ``x``."""
        q, k, _ = self.qkv_heads(x)
        return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv_heads(x)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        x = x + self.drop_path(self.proj(attended.transpose(1, 2).reshape(x.shape)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
