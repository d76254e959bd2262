"""iBOT's projection head: DINO's head for the class token and for every patch token."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.dino_head import DINOHead, WeightNormLinear

__all__ = ["iBOTHead"]


class iBOTHead(nn.Module):  # noqa: N801 - the paper's spelling
    """A :class:`DINOHead` applied to the class token and to each patch token.

    Zhou et al. 2021, "iBOT: Image BERT Pre-Training with Online Tokenizer", arXiv 2111.07832
    (https://arxiv.org/abs/2111.07832), Sec. 3.3; official code https://github.com/bytedance/ibot
    (``models/head.py``): the MLP and the L2-normalised bottleneck are shared by all tokens; with
    ``shared_head=True`` (the official ViT commands) the patch tokens also share the weight-normalised
    last layer, otherwise they get their own with ``patch_out_dim`` outputs.

    Args:
        in_dim: backbone token width.
        out_dim: class-token outputs.
        patch_out_dim: patch-token outputs when the last layer is not shared.
        hidden_dim, bottleneck_dim: MLP sizes (2048, 256).
        shared_head: one last layer for both kinds of tokens.
        norm_last_layer: keep the last layers' weight norms at 1.

    Example:
        >>> head = iBOTHead(64, out_dim=32, patch_out_dim=32, hidden_dim=16, bottleneck_dim=8)
        >>> [t.shape for t in head(torch.randn(2, 64), torch.randn(2, 5, 64))]
        [torch.Size([2, 32]), torch.Size([2, 5, 32])]
    """

    def __init__(
        self, in_dim: int, out_dim: int = 8192, patch_out_dim: int = 8192, hidden_dim: int = 2048,
        bottleneck_dim: int = 256, shared_head: bool = True, norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.cls_head = DINOHead(in_dim, out_dim, hidden_dim, bottleneck_dim, norm_last_layer=norm_last_layer)
        self.patch_last_layer = (
            None if shared_head else WeightNormLinear(bottleneck_dim, patch_out_dim, learn_norm=not norm_last_layer)
        )

    @property
    def last_layers(self) -> list[nn.Module]:
        """The weight-normalised output layers (frozen during the first epoch)."""
        layers: list[nn.Module] = [self.cls_head.last_layer]
        return layers + ([self.patch_last_layer] if self.patch_last_layer is not None else [])

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cls`` ``(B, D)`` and ``patches`` ``(B, N, D)`` to ``(B, K)`` and ``(B, N, K_patch)`` logits."""
        b, n, d = patches.shape
        z = F.normalize(self.cls_head.mlp(torch.cat([cls, patches.reshape(b * n, d)])), dim=-1)
        out_cls = self.cls_head.last_layer(z[:b])
        last = self.patch_last_layer if self.patch_last_layer is not None else self.cls_head.last_layer
        return out_cls, last(z[b:]).reshape(b, n, -1)
