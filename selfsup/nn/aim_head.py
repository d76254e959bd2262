"""AIM's prediction head: residual MLP blocks applied to each patch feature on its own."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["AIMHead"]


class _ResidualMLPBlock(nn.Module):
    """``x + W2 GELU(W1 LN(x))`` with expansion ratio 4 and no biases."""

    def __init__(self, width: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class AIMHead(nn.Module):
    """Per-patch MLP head of AIM mapping trunk features to pixels of the next patch.

    El-Nouby et al. 2024, "Scalable Pre-training of Large Autoregressive Image Models",
    arXiv 2401.08541, Sec. 3 "Prediction heads" (official code github.com/apple/ml-aim, which
    ships only the trunk): a linear projection to ``width``, ``num_blocks`` pre-norm residual MLP
    blocks (expansion ratio 4, biases dropped, as in the trunk), a LayerNorm and a linear
    projection to the ``out_dim`` pixel values of a patch. The paper's default head has 12 blocks
    of width 2048. Each token is processed independently (no mixing across patches).

    Args:
        in_dim: trunk width.
        out_dim: pixels per patch (``patch_size**2 * channels``).
        width: width of the residual blocks.
        num_blocks: number of residual MLP blocks.
        mlp_ratio: hidden expansion of each block.

    Example:
        >>> head = AIMHead(192, 48, width=64, num_blocks=2)
        >>> head(torch.zeros(2, 16, 192)).shape
        torch.Size([2, 16, 48])
    """

    def __init__(self, in_dim: int, out_dim: int, width: int = 2048, num_blocks: int = 12, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.proj_in = nn.Linear(in_dim, width, bias=False)
        self.blocks = nn.Sequential(*[_ResidualMLPBlock(width, mlp_ratio) for _ in range(num_blocks)])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.proj_out = nn.Linear(width, out_dim, bias=False)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_out(self.norm(self.blocks(self.proj_in(x))))
