"""MoCo v3's in-batch contrastive loss, scaled by ``2 * tau``."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather, rank
from selfsup.nn.precision import at_least_fp32

__all__ = ["MoCoV3Loss"]


class MoCoV3Loss(nn.Module):
    """``2 tau * CE(q k^T / tau, own index)`` with the keys of the whole global batch.

    Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", 2021,
    https://arxiv.org/abs/2104.02057, Eq. 1 and Algorithm 1; official code
    https://github.com/facebookresearch/moco-v3 (``moco/builder.py``, ``contrastive_loss``).
    ``q`` and ``k`` are L2-normalised; query ``i`` of this process is contrasted with the keys of
    all processes (gathered with :func:`selfsup.nn.gather`, rank order), its positive being the
    key of the same image: label ``rank * n + i``. The mean cross-entropy is multiplied by
    ``2 tau``, as in the official code, which makes the gradient scale independent of ``tau``.
    MoCo v3 sums this loss over the two view orders ``(q1, k2)`` and ``(q2, k1)``.

    Across processes, the mean of the per-process losses equals the one-process loss on the
    concatenated batch, and with DDP's gradient averaging so do the gradients (gather's backward
    sums every process's contribution to this process's rows; see the two-process test).

    Args:
        temperature: ``tau > 0``; the official code uses 1.0 for ResNet and 0.2 for ViT.
        gather_distributed: Contrast with the keys of all processes (a no-op in one process).

    Raises:
        ValueError: ``temperature`` is not finite and positive.

    Example:
        >>> loss_fn = MoCoV3Loss(temperature=1.0)
        >>> loss = loss_fn(torch.randn(8, 256), torch.randn(8, 256))
    """

    def __init__(self, temperature: float = 1.0, gather_distributed: bool = True) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"MoCoV3Loss temperature must be finite and > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss of queries ``q`` (n, d) against keys ``k`` (n, d).

        Raises:
            ValueError: The inputs are not two non-empty ``(n, d)`` tensors of the same shape.

        Example:
            >>> MoCoV3Loss(0.2)(torch.randn(4, 16), torch.randn(4, 16)).shape
            torch.Size([])
        """
        if q.dim() != 2 or q.shape != k.shape or q.shape[0] == 0:
            raise ValueError(
                "MoCoV3Loss expects two non-empty (n, d) tensors of the same shape, got "
                f"{tuple(q.shape)} and {tuple(k.shape)}"
            )
        with torch.autocast(q.device.type, enabled=False):
            dtype = torch.promote_types(at_least_fp32(q).dtype, k.dtype)
            q = F.normalize(q.to(dtype), dim=1)
            k = F.normalize(k.to(dtype), dim=1)
            offset = 0
            if self.gather_distributed:
                k, offset = gather(k), rank() * q.shape[0]
            logits = q @ k.T / self.temperature
            labels = torch.arange(q.shape[0], device=q.device) + offset
            return 2 * self.temperature * F.cross_entropy(logits, labels)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"
