"""Keep numerically sensitive computations (loss similarities, softmaxes) in at least fp32."""
from __future__ import annotations

import torch


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32, unless it is already float32 or float64.

    Example:
        >>> at_least_fp32(torch.zeros(2, dtype=torch.bfloat16)).dtype
        torch.float32
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))
