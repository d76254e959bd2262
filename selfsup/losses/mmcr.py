"""MMCR's loss: maximise the nuclear norm of the matrix of view centroids."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.nn.distributed import gather
from selfsup.nn.precision import at_least_fp32

__all__ = ["MMCRLoss"]


def _stack_views(views: Sequence[torch.Tensor] | torch.Tensor, what: str) -> torch.Tensor:
    z = torch.stack(list(views)) if not isinstance(views, torch.Tensor) else views
    if z.dim() != 3 or z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"MMCRLoss needs {what} as (views, batch, dim) or a list of (batch, dim) tensors, "
                         f"got shape {tuple(z.shape)}")
    return F.normalize(at_least_fp32(z), dim=-1)


class MMCRLoss(nn.Module):
    """Maximum Manifold Capacity Representations' loss over ``k`` views of a batch.

    Yerxa, Kuang, Simoncelli, Chung, "Learning Efficient Coding of Natural Images with Maximum
    Manifold Capacity Representations", NeurIPS 2023, https://arxiv.org/abs/2303.03307, Sec. 3
    (Eq. 2); official code https://github.com/ThomasYerxa/mmcr (``loss_mmcr.py``,
    ``loss_mmcr_momentum.py``). Each embedding is projected onto the unit sphere, the ``k`` views of
    image ``b`` are averaged into its centroid ``c_b``, and the loss is minus the nuclear norm (the
    sum of singular values) of the ``(B, d)`` centroid matrix ``C``:
    ``L = -||C||_* + lmbda / B * sum_b ||Z_b||_*``, where ``Z_b`` is the ``(d, k)`` matrix of image
    ``b``'s views. The second, "local" term is the paper's optional one; ``lmbda = 0`` in all of the
    official recipes. With ``targets`` (the views through a momentum encoder, the official ImageNet
    variant) the centroid is the mean of the online and the target centroids.

    With ``gather_distributed=True`` the centroids of all processes are gathered with gradient, so
    ``C`` is the global batch's, as in the official code. Each rank's local term is divided by its
    own batch size, which DDP's gradient averaging turns into the global ``lmbda / B`` term.

    Args:
        lmbda: weight of the local nuclear-norm term (the official ``lmbda``).
        gather_distributed: use the global batch of centroids across processes.

    Example:
        >>> loss_fn = MMCRLoss()
        >>> loss = loss_fn([torch.randn(16, 32) for _ in range(4)])  # 4 views of 16 images
    """

    def __init__(self, lmbda: float = 0.0, gather_distributed: bool = True) -> None:
        super().__init__()
        if lmbda < 0:
            raise ValueError(f"MMCRLoss needs lmbda >= 0, got {lmbda}")
        self.lmbda = float(lmbda)
        self.gather_distributed = gather_distributed

    def forward(
        self,
        views: Sequence[torch.Tensor] | torch.Tensor,
        targets: Sequence[torch.Tensor] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``-||C||_* (+ lmbda / B * sum_b ||Z_b||_*)`` for ``views`` of shape ``(k, B, d)``.

        Example:
            >>> z = torch.randn(2, 8, 4)
            >>> float(MMCRLoss()(z)) < 0
            True
        """
        with torch.autocast(_device_type(views), enabled=False):  # singular values in fp32 or better
            z = _stack_views(views, "views")
            centroids = z.mean(dim=0)
            if targets is not None:
                t = _stack_views(targets, "targets")
                if t.shape[1:] != z.shape[1:]:
                    raise ValueError(f"MMCRLoss: targets of shape {tuple(t.shape)} do not match views of "
                                     f"shape {tuple(z.shape)} in batch and dim")
                centroids = 0.5 * (centroids + t.mean(dim=0))
            if self.gather_distributed:
                centroids = gather(centroids)
            loss = -torch.linalg.svdvals(centroids).sum()
            if self.lmbda > 0:
                local = torch.linalg.svdvals(z.permute(1, 2, 0)).sum()  # (B, d, k): one matrix per image
                loss = loss + self.lmbda * local / z.shape[1]
            return loss

    def extra_repr(self) -> str:
        return f"lmbda={self.lmbda}, gather_distributed={self.gather_distributed}"


def _device_type(views: Sequence[torch.Tensor] | torch.Tensor) -> str:
    first = views if isinstance(views, torch.Tensor) else views[0]
    return first.device.type
