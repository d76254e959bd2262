"""DINO's projection head: an MLP, an L2-normalised bottleneck and a weight-normalised last layer."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.mlp import MLP

__all__ = ["DINOHead", "WeightNormLinear", "dino_mlp"]


class WeightNormLinear(nn.Module):
    """A bias-free Linear layer whose rows are ``g * v / ||v||`` (weight normalisation).

    Salimans & Kingma 2016, "Weight Normalization", arXiv 1602.07868
    (https://arxiv.org/abs/1602.07868), as used for DINO's last layer (Caron et al. 2021,
    "Emerging Properties in Self-Supervised Vision Transformers", arXiv 2104.14294,
    https://arxiv.org/abs/2104.14294; official code https://github.com/facebookresearch/dino,
    ``vision_transformer.py`` ``DINOHead``): the norm ``g`` starts at 1 and, with
    ``learn_norm=False`` (DINO's ``norm_last_layer``), stays 1, so every output is a cosine
    similarity to a direction ``v``. ``v`` starts as ``nn.Linear``'s default initialisation.

    Args:
        in_dim: input width.
        out_dim: number of outputs (DINO's ``out_dim``, 65536).
        learn_norm: whether ``g`` is trained.

    Example:
        >>> layer = WeightNormLinear(4, 3)
        >>> layer(torch.randn(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool = False) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Linear's default
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=learn_norm)

    @property
    def weight(self) -> torch.Tensor:
        """The effective ``(out_dim, in_dim)`` weight ``g * v / ||v||`` (row norms)."""
        return self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T`` for ``x`` of shape ``(B, in_dim)``."""
        return F.linear(x, self.weight)


def dino_mlp(in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, num_layers: int = 3,
             use_bn: bool = False) -> MLP:
    """DINO's head MLP to the bottleneck (GELU, weights truncated-normal with std 0.02, zero biases);
    :class:`DINOHead` ends it with its last layer, SimDINO uses it alone.

    Example:
        >>> dino_mlp(64, 32, 16)(torch.randn(4, 64)).shape
        torch.Size([4, 16])
    """
    if num_layers < 1:
        raise ValueError(f"the DINO head MLP needs num_layers >= 1, got {num_layers}")
    mlp = MLP([in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim], batch_norm=use_bn, activation="gelu",
              bias=True)
    for module in mlp.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
    return mlp


class DINOHead(nn.Module):
    """MLP -> L2 normalisation -> weight-normalised Linear to ``out_dim`` outputs.

    Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", arXiv
    2104.14294 (https://arxiv.org/abs/2104.14294), Sec. 3.1 and Appendix; official code
    https://github.com/facebookresearch/dino (``DINOHead``): a 3-layer MLP with hidden width 2048
    and GELU (no BatchNorm by default) to a 256-d bottleneck, L2-normalised, then a
    weight-normalised layer with 65,536 outputs whose norm is frozen at 1 (``norm_last_layer``).
    MLP weights start from a truncated normal with std 0.02 and zero biases.

    Args:
        in_dim: backbone feature width.
        out_dim: number of outputs ``K``.
        hidden_dim: MLP hidden width.
        bottleneck_dim: width of the normalised bottleneck.
        num_layers: Linear layers in the MLP (at least 1).
        use_bn: BatchNorm after the hidden layers.
        norm_last_layer: keep the last layer's weight norm fixed at 1.

    Example:
        >>> head = DINOHead(64, out_dim=128, hidden_dim=32, bottleneck_dim=16)
        >>> head(torch.randn(4, 64)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.mlp = dino_mlp(in_dim, hidden_dim, bottleneck_dim, num_layers, use_bn)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_norm=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim)`` features to ``(B, out_dim)`` logits."""
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
