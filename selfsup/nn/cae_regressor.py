"""CAE's latent contextual regressor (cross-attention) and its decoder for the masked patches."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.nn.transformer import attention

__all__ = ["CAEDecoder", "CrossAttentionBlock", "LatentRegressor", "LayerScaleBlock"]


def _mlp(dim: int, mlp_ratio: float) -> nn.Sequential:
    hidden = int(dim * mlp_ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


def _heads(x: Tensor, heads: int) -> Tensor:
    b, n, d = x.shape
    return x.reshape(b, n, heads, d // heads).transpose(1, 2)


class CrossAttentionBlock(nn.Module):
    """One regressor block: the queries attend to the visible latents and to themselves.

    Chen et al. 2022, "Context Autoencoder for Self-Supervised Representation Learning", arXiv
    2202.03026 (https://arxiv.org/abs/2202.03026), Sec. 3 "Latent contextual regressor"; official
    code https://github.com/Atten4Vis/CAE (``models/modeling_cae_helper.py``, ``RegressorBlock``):
    with ``z = [visible; queries]`` and its positions ``p_z``,
    ``y = q + g1 * Attn(LN_q(q + p_q), LN_k(z + p_z), LN_v(z))``, then ``y = LN(y)`` and
    ``y = y + g2 * MLP(y)``, where ``g1, g2`` are layer scales (0.1 at the start). Query and value
    projections have a bias, the key projection none (as the official code).

    Example:
        >>> block = CrossAttentionBlock(dim=32, num_heads=4)
        >>> block(torch.zeros(2, 5, 32), torch.zeros(2, 9, 32), torch.zeros(1, 5, 32), torch.zeros(1, 9, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, layer_scale: float = 0.1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CrossAttentionBlock needs dim divisible by num_heads, got {dim}, {num_heads}")
        self.num_heads = num_heads
        self.norm_q, self.norm_k, self.norm_v = (nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _mlp(dim, mlp_ratio)
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, queries: Tensor, context: Tensor, pos_queries: Tensor, pos_context: Tensor) -> Tensor:
        """``queries`` (B, M, D) with positions ``pos_queries``; ``context`` (B, T, D) with ``pos_context``."""
        q = _heads(self.q(self.norm_q(queries + pos_queries)), self.num_heads)
        k = _heads(self.k(self.norm_k(context + pos_context)), self.num_heads)
        v = _heads(self.v(self.norm_v(context)), self.num_heads)
        attended = attention(q, k, v).transpose(1, 2).reshape(queries.shape)
        x = self.norm_out(queries + self.gamma1 * self.proj(attended))
        return x + self.gamma2 * self.mlp(x)


class LatentRegressor(nn.Module):
    """Predict the latents of the masked patches from the visible patches' latents.

    CAE's regressor (Chen et al. 2022, arXiv 2202.03026, https://arxiv.org/abs/2202.03026;
    official https://github.com/Atten4Vis/CAE, ``LatentRegresser``): the queries start as a learned
    mask token for every masked patch; each of ``depth`` :class:`CrossAttentionBlock` s updates
    them from the concatenation of the (fixed) visible latents and the current queries; a final
    LayerNorm. The visible latents are never updated.

    Args:
        dim, depth, num_heads, mlp_ratio: sizes (CAE: the encoder's width, depth 4).
        layer_scale: initial layer scale (0.1).

    Example:
        >>> reg = LatentRegressor(dim=32, depth=2, num_heads=4)
        >>> reg(torch.zeros(2, 7, 32), torch.zeros(1, 7, 32), torch.zeros(1, 9, 32).expand(2, -1, -1)).shape
        torch.Size([2, 9, 32])
    """

    def __init__(self, dim: int, depth: int = 4, num_heads: int = 12, mlp_ratio: float = 4.0,
                 layer_scale: float = 0.1) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, num_heads, mlp_ratio, layer_scale) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        _init_linears(self.blocks)

    def forward(self, visible: Tensor, pos_visible: Tensor, pos_masked: Tensor) -> Tensor:
        """Latents ``(B, M, D)`` of the masked patches at positions ``pos_masked`` (B, M, D)."""
        queries = self.mask_token.expand(pos_masked.shape[0], pos_masked.shape[1], -1).to(visible.dtype)
        pos_context = torch.cat([pos_visible.expand(visible.shape[0], -1, -1), pos_masked], dim=1)
        for block in self.blocks:
            queries = block(queries, torch.cat([visible, queries], dim=1), pos_masked, pos_context)
        return self.norm(queries)


class LayerScaleBlock(nn.Module):
    """Pre-norm self-attention block with layer scale: ``x + g1 Attn(LN x)``, then ``x + g2 MLP(LN x)``.

    The decoder block of CAE (Chen et al. 2022, arXiv 2202.03026; official
    https://github.com/Atten4Vis/CAE, ``Block`` with ``init_values``), after BEiT / CaiT.

    Example:
        >>> LayerScaleBlock(32, 4)(torch.zeros(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, layer_scale: float = 0.1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"LayerScaleBlock needs dim divisible by num_heads, got {dim}, {num_heads}")
        self.num_heads = num_heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = _mlp(dim, mlp_ratio)
        self.gamma1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.gamma2 = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (_heads(t, self.num_heads) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        attended = attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = x + self.gamma1 * self.proj(attended)
        return x + self.gamma2 * self.mlp(self.norm2(x))


class CAEDecoder(nn.Module):
    """Map predicted masked latents (plus their positions) to per-patch targets.

    CAE's decoder (Chen et al. 2022, arXiv 2202.03026, https://arxiv.org/abs/2202.03026; official
    https://github.com/Atten4Vis/CAE, ``Decoder``): ``depth`` :class:`LayerScaleBlock` s over the
    masked patches only, a LayerNorm and a linear head (to DALL-E token logits in the paper; here
    to ``out_dim`` normalised pixel values).

    Example:
        >>> dec = CAEDecoder(dim=32, out_dim=48, depth=2, num_heads=4)
        >>> dec(torch.zeros(2, 9, 32), torch.zeros(2, 9, 32)).shape
        torch.Size([2, 9, 48])
    """

    def __init__(self, dim: int, out_dim: int, depth: int = 4, num_heads: int = 12, mlp_ratio: float = 4.0,
                 layer_scale: float = 0.1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(LayerScaleBlock(dim, num_heads, mlp_ratio, layer_scale) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out_dim)
        _init_linears(self.blocks)

    def forward(self, latents: Tensor, positions: Tensor) -> Tensor:
        x = latents + positions
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def _init_linears(blocks: nn.ModuleList) -> None:
    """Xavier-uniform linear weights and zero biases (the official default, ``fix_init_weight=False``)."""
    for module in blocks.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
