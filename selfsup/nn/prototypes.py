"""Learnable prototypes scored by cosine similarity (MSN, PMSN)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CosinePrototypes"]


class CosinePrototypes(nn.Module):
    """``K`` learnable ``D``-dimensional prototypes; the scores of ``z`` are ``cos(z, q_k)``.

    Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning", arXiv 2204.07141
    (https://arxiv.org/abs/2204.07141), Sec. 3; official code https://github.com/facebookresearch/msn
    (``src/msn_train.py``): 1024 prototypes of the 256-d head output, drawn uniformly from
    ``[-1 / sqrt(D), 1 / sqrt(D)]``, trained by the gradient of the anchor predictions (the
    targets use them without gradient) and L2-normalised whenever they are used, as are the
    inputs. They get no weight decay (see the methods' ``parameter_groups``).

    Args:
        num_prototypes: ``K``.
        dim: ``D``, the width of the representations scored.

    Attributes:
        weight: ``(K, D)`` parameter, not normalised in place.

    Example:
        >>> prototypes = CosinePrototypes(num_prototypes=16, dim=8)
        >>> scores = prototypes(torch.randn(4, 8))
        >>> scores.shape, bool(scores.abs().max() <= 1)
        (torch.Size([4, 16]), True)
    """

    def __init__(self, num_prototypes: int, dim: int) -> None:
        super().__init__()
        if num_prototypes < 1 or dim < 1:
            raise ValueError(f"CosinePrototypes needs num_prototypes >= 1 and dim >= 1, got {num_prototypes}, {dim}")
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_prototypes, dim).uniform_(-bound, bound))

    @property
    def num_prototypes(self) -> int:
        """``K``."""
        return int(self.weight.shape[0])

    def forward(self, z: Tensor) -> Tensor:
        """Cosine similarities ``(B, K)`` of representations ``z`` ``(B, D)`` to every prototype."""
        return F.normalize(z, dim=-1) @ F.normalize(self.weight, dim=-1).T

    def extra_repr(self) -> str:
        return f"num_prototypes={self.weight.shape[0]}, dim={self.weight.shape[1]}"
