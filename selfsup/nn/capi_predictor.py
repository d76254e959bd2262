"""CAPI's parts around the encoder: inverse-block masks, the cross-attention predictor and the
weight-normalised cluster head.

Darcet et al. 2025, "Cluster and Predict Latent Patches for Improved Masked Image Modeling",
arXiv 2502.08769 (https://arxiv.org/abs/2502.08769), Sec. 3 and Table 1 (the cross-attention
predictor and inverse block masking are the paper's choices); official code
https://github.com/facebookresearch/capi (``data.py``: ``InverseBlockMasking``,
``collate_data_and_cast``; ``model.py``: ``EncoderDecoder``, ``Block``, ``L2NormLinear``).

Example:
    >>> visible, predict = inverse_block_masks(2, 7, 7, mask_ratio=0.65, prediction_share=0.25)
    >>> visible.shape, predict.shape
    (torch.Size([2, 18]), torch.Size([2, 7]))
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.nn.patches import sincos_position_embedding
from selfsup.nn.transformer import attention

__all__ = ["CAPIPredictor", "CrossAttentionLayer", "L2NormLinear", "inverse_block_masks"]


def inverse_block_masks(batch: int, grid_h: int, grid_w: int, *, mask_ratio: float = 0.65,
                        prediction_share: float = 0.05, min_aspect: float = 0.5,
                        roll: bool = True) -> tuple[Tensor, Tensor]:
    """``(visible (B, V), predicted (B, P))`` patch indices of each image, raster order.

    Official ``InverseBlockMasking`` with ``roll=True``: ``M = int(N * mask_ratio)`` patches are
    masked, the other ``V = N - M`` form one visible block (aspect drawn log-uniformly in
    ``[min_aspect, 1 / min_aspect]`` within what fits, top-left corner uniform, the first ``V``
    cells of the rectangle in raster order kept) that is then rolled cyclically by a uniform
    offset along each axis. ``P = max(1, int(M * prediction_share))`` of the masked patches,
    chosen uniformly, are predicted (official ``prediction_subsampling`` 0.05). Drawn from torch's
    global generator.
    """
    n = grid_h * grid_w
    masked = int(n * mask_ratio)
    visible = n - masked
    if not 0 < visible < n:
        raise ValueError(f"inverse_block_masks: mask_ratio {mask_ratio} leaves {visible} of {n} patches visible; "
                         "it must leave at least one visible and one masked")
    predicted = max(1, int(masked * prediction_share))
    keep, targets = [], []
    low = max(math.log(min_aspect), math.log(visible / grid_w**2))
    high = min(math.log(1 / min_aspect), math.log(grid_h**2 / visible))
    for _ in range(batch):
        aspect = math.exp(low + (high - low) * float(torch.rand(())))
        h = min(grid_h, math.ceil(math.sqrt(visible * aspect)))
        w = min(grid_w, math.ceil(math.sqrt(visible / aspect)))
        while h * w < visible:  # ceil of both sides fits except at the grid's edge
            h, w = (h + 1, w) if h < grid_h else (h, w + 1)
        top = int(torch.randint(0, grid_h - h + 1, ()))
        left = int(torch.randint(0, grid_w - w + 1, ()))
        block = torch.zeros(grid_h, grid_w, dtype=torch.bool)
        block[top:top + h, left:left + w] = True
        cells = block.flatten().nonzero().flatten()[:visible]
        block = torch.zeros(n, dtype=torch.bool)
        block[cells] = True
        block = block.reshape(grid_h, grid_w)
        if roll:
            block = torch.roll(block, (int(torch.randint(0, grid_h, ())), int(torch.randint(0, grid_w, ()))), (0, 1))
        flat = block.flatten()
        keep.append(flat.nonzero().flatten())
        hidden = (~flat).nonzero().flatten()
        targets.append(hidden[torch.randperm(masked)[:predicted]].sort().values)
    return torch.stack(keep), torch.stack(targets)


class CrossAttentionLayer(nn.Module):
    """One predictor block: the queries attend to the encoder's tokens only, then an MLP.

    Pre-norm residuals as the official ``Block`` with a context: ``x = x + W_o Attn(W_q (LN(x) + p_x),
    W_k (LN_c(c) + p_c), W_v LN_c(c))`` and ``x = x + MLP(LN(x))``, no biases in the attention's
    projections (official). The official block rotates queries and keys by their positions (RoPE);
    selfsup's ViT carries absolute position embeddings, so here the positions ``p`` are added to
    the normalised inputs of the query and key projections (CAE's regressor adds them likewise). Queries never attend to each other, so each prediction is independent of
    which other positions are predicted.

    Example:
        >>> layer = CrossAttentionLayer(dim=32, context_dim=48, num_heads=4)
        >>> layer(torch.zeros(2, 3, 32), torch.zeros(2, 3, 32), torch.zeros(2, 9, 48), torch.zeros(2, 9, 48)).shape
        torch.Size([2, 3, 32])
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CrossAttentionLayer needs dim divisible by num_heads, got {dim}, {num_heads}")
        self.num_heads = num_heads
        self.norm_q, self.norm_c = nn.LayerNorm(dim), nn.LayerNorm(context_dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k, self.v = nn.Linear(context_dim, dim, bias=False), nn.Linear(context_dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, pos_x: Tensor, context: Tensor, pos_context: Tensor) -> Tensor:
        b, m, d = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.reshape(b, t.shape[1], self.num_heads, d // self.num_heads).transpose(1, 2)

        c = self.norm_c(context)
        q = heads(self.q(self.norm_q(x) + pos_x))
        k, v = heads(self.k(c + pos_context)), heads(self.v(c))
        x = x + self.proj(attention(q, k, v).transpose(1, 2).reshape(b, m, d))
        return x + self.mlp(self.norm_mlp(x))


class CAPIPredictor(nn.Module):
    """Predict tokens at chosen positions from the encoder's tokens of the visible patches.

    Official ``EncoderDecoder`` decoder: every query starts as one learned mask token, ``depth``
    :class:`CrossAttentionLayer` s attend to the encoder's final tokens (its prefix tokens included,
    at position zero), then a LayerNorm without affine parameters. Positions are 2-D sine-cosine
    embeddings of the patch grid, at the query's width for the queries and at the encoder's width
    for the visible patches.

    Example:
        >>> predictor = CAPIPredictor(context_dim=48, dim=32, depth=2, num_heads=4)
        >>> tokens = torch.randn(2, 1 + 5, 48)  # class token + 5 visible patches
        >>> predictor(tokens, torch.arange(5).expand(2, -1), torch.tensor([[7, 9], [6, 8]]), 4, 4, 1).shape
        torch.Size([2, 2, 32])
    """

    def __init__(self, context_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"CAPIPredictor needs depth >= 1, got {depth}")
        self.dim, self.context_dim = dim, context_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.layers = nn.ModuleList(CrossAttentionLayer(dim, context_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)

    def forward(self, tokens: Tensor, visible: Tensor, predict: Tensor, grid_h: int, grid_w: int,
                num_prefix: int) -> Tensor:
        """``tokens`` (B, prefix + V, C) from the encoder, ``visible`` (B, V) and ``predict`` (B, P)
        patch indices; returns (B, P, dim)."""
        pos_q = _positions(grid_h, grid_w, self.dim, predict, tokens.dtype)
        pos_c = _positions(grid_h, grid_w, self.context_dim, visible, tokens.dtype)
        pos_c = torch.cat([pos_c.new_zeros(len(tokens), num_prefix, self.context_dim), pos_c], dim=1)
        x = self.mask_token.to(tokens.dtype).expand(len(predict), predict.shape[1], -1)
        for layer in self.layers:
            x = layer(x, pos_q, tokens, pos_c)
        return self.norm(x)


def _positions(grid_h: int, grid_w: int, dim: int, index: Tensor, dtype: torch.dtype) -> Tensor:
    table = sincos_position_embedding(grid_h, grid_w, dim).to(device=index.device, dtype=dtype)
    return table[index]


class L2NormLinear(nn.Module):
    """The student's cluster head: cosine logits against weight-normalised prototypes.

    Official ``L2NormLinear``: inputs are L2-normalised, the linear layer (no bias, truncated normal
    std 0.02) is weight-normalised with its gain started at 1 (and trained), so each logit is
    ``g_k <x / |x|, w_k / |w_k|>``.

    Example:
        >>> L2NormLinear(32, 16)(torch.randn(3, 32)).abs().max() <= 1 + 1e-6
        tensor(True)
    """

    def __init__(self, dim: int, num_clusters: int) -> None:
        super().__init__()
        layer = nn.Linear(dim, num_clusters, bias=False)
        nn.init.trunc_normal_(layer.weight, std=0.02)
        self.layer = nn.utils.parametrizations.weight_norm(layer)
        with torch.no_grad():
            self.layer.parametrizations.weight.original0.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(F.normalize(x, dim=-1, eps=1e-12))
