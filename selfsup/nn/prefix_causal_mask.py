"""Prefix causal attention masks and random prefix lengths for autoregressive image models.

El-Nouby et al. 2024, "Scalable Pre-training of Large Autoregressive Image Models" (AIM),
arXiv 2401.08541, Sec. 3 "Prefix Transformer"; official code github.com/apple/ml-aim
(``PrefixCausalAttention``). The first ``K`` patches (the prefix) attend to each other in both
directions; every later patch attends causally (to itself and to the patches before it), and
every token may attend to the whole prefix.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["prefix_causal_mask", "sample_prefix_lengths"]


def prefix_causal_mask(prefix_lengths: Tensor, num_tokens: int) -> Tensor:
    """Boolean attention mask ``(B, 1, T, T)``: entry ``[b, 0, i, j]`` is True when query ``i`` may
    attend to key ``j``, i.e. ``j <= i`` (causal) or ``j < prefix_lengths[b]`` (the prefix).

    From AIM (El-Nouby et al. 2024, arXiv 2401.08541, Sec. 3; official code
    github.com/apple/ml-aim). Pass it as ``attn_mask`` to
    ``F.scaled_dot_product_attention`` (True = take part); the singleton dimension broadcasts
    over the heads. Tokens that must always be visible (a class token, registers) are put first
    and counted in ``prefix_lengths``.

    Args:
        prefix_lengths: ``(B,)`` integer prefix lengths, each in ``[0, num_tokens]``.
        num_tokens: sequence length ``T``.

    Example:
        >>> prefix_causal_mask(torch.tensor([2]), 4)[0, 0].int().tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    """
    positions = torch.arange(num_tokens, device=prefix_lengths.device)
    causal = positions.view(1, -1) <= positions.view(-1, 1)  # [i, j]: j <= i
    in_prefix = positions.view(1, 1, -1) < prefix_lengths.view(-1, 1, 1)  # [b, ., j]
    return (causal.unsqueeze(0) | in_prefix).unsqueeze(1)


def sample_prefix_lengths(batch_size: int, num_patches: int, device: torch.device | str | None = None,
                          generator: torch.Generator | None = None) -> Tensor:
    """One prefix length per sample, uniform on ``{1, ..., num_patches - 1}``, as AIM's
    pre-training samples ``K`` (El-Nouby et al. 2024, arXiv 2401.08541, Sec. 3; official code
    github.com/apple/ml-aim), so at least one patch is predicted and the prefix is never empty.

    Example:
        >>> k = sample_prefix_lengths(8, 16)
        >>> bool(((k >= 1) & (k <= 15)).all())
        True
    """
    if num_patches < 2:
        raise ValueError(f"a prefix needs at least 2 patches (one prefix, one target), got {num_patches}")
    return torch.randint(1, num_patches, (batch_size,), device=device, generator=generator)
