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
import torch.utils.checkpoint
from torch import Tensor, nn

from selfsup.nn.precision import at_least_fp32


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


SHORT_SEQUENCE = 128
"""On the CPU, attention over at most this many tokens is computed as two matrix products and a
softmax: PyTorch's fused CPU kernel (flash attention) is several times slower there for short
sequences, e.g. its backward took 38% of a DINOv2 step on 50 tokens of a 96-d ViT."""


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(d) + mask) v`` over ``(B, heads, N, d)`` tensors.

    ``attn_mask`` as in ``F.scaled_dot_product_attention``: boolean (True = take part) or additive.
    Uses the fused kernel except for short sequences on the CPU (:data:`SHORT_SEQUENCE`), where
    the explicit form is faster; its softmax runs in float32 (or the inputs' float64).

    Example:
        >>> q = k = v = torch.randn(2, 3, 5, 8)
        >>> attention(q, k, v).shape
        torch.Size([2, 3, 5, 8])
    """
    if q.device.type != "cpu" or k.shape[-2] > SHORT_SEQUENCE:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    scores = at_least_fp32(scores)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return scores.softmax(dim=-1).to(v.dtype) @ v


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
        #: recompute this block's activations in the backward pass instead of keeping them (training only)
        self.checkpoint_activations = False

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def attention_weights(self, x: Tensor) -> Tensor:
        """Softmax attention ``(B, heads, N, N)`` of this block for input tokens ``x``."""
        q, k, _ = self.qkv_heads(x)
        return (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        if self.checkpoint_activations and self.training and torch.is_grad_enabled():
            # the recomputation replays the same random state, so stochastic depth draws the same paths
            return torch.utils.checkpoint.checkpoint(self._forward, x, attn_mask, use_reentrant=False)
        return self._forward(x, attn_mask)

    def _forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv_heads(x)
        attended = attention(q, k, v, attn_mask=attn_mask)
        x = x + self.drop_path(self.proj(attended.transpose(1, 2).reshape(x.shape)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
