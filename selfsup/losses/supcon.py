"""The supervised contrastive loss (SupCon, L_out), for any number of views."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.nn.distributed import gather, gather_no_grad, rank, world_size
from selfsup.nn.precision import at_least_fp32

__all__ = ["SupConLoss"]


class SupConLoss(nn.Module):
    """Supervised contrastive loss, the ``L_out`` form (positives averaged outside the log).

    Khosla et al., "Supervised Contrastive Learning", 2020, https://arxiv.org/abs/2004.11362,
    Eq. 2; official code https://github.com/HobbitLong/SupContrast. The ``V x N`` views of a batch
    are the anchors; for anchor ``i`` (row L2-normalised), ``A(i)`` is every other view and
    ``P(i)`` the views in ``A(i)`` with the same label::

        L = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_i . z_p / T) / sum_{a in A(i)} exp(z_i . z_a / T) )

    **Unknown labels** (``-1``): such a sample is its own class, so its positives are only its
    own other views (SimCLR's positives). This keeps the loss defined on partly labelled batches
    without letting all unlabelled samples attract each other. An anchor with no positive at all
    (an unlabelled sample with one view) is left out of the mean; the official code would give
    0/0 there.

    The official code also multiplies the loss by ``T / base_temperature`` (0.07); that constant
    rescaling of the learning rate is not part of Eq. 2 and is left out.

    With ``gather_distributed=True`` the keys (``A(i)``) are the views and labels of every
    process; each rank keeps its own anchors and scales its sum by ``world / (global number of
    anchors with a positive)``, so the mean of the per-rank losses is the one-process loss.

    Args:
        temperature: ``T > 0``; 0.1, the paper's and official CIFAR command's value.
        gather_distributed: Use the views of all processes as keys.

    Raises:
        ValueError: Bad temperature, mismatched shapes.

    Example:
        >>> loss_fn = SupConLoss(temperature=0.1)
        >>> loss = loss_fn([torch.randn(8, 128), torch.randn(8, 128)], torch.arange(8) % 3)
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"SupConLoss temperature must be finite and > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    def forward(self, views: Sequence[Tensor], labels: Tensor) -> Tensor:
        """Return the scalar loss.

        Args:
            views: ``V >= 1`` tensors ``(N, D)``, the embeddings of each view of the same ``N``
                samples.
            labels: ``(N,)`` integer labels, ``-1`` where unknown.

        Example:
            >>> z = [torch.randn(4, 8) for _ in range(3)]  # three views
            >>> SupConLoss(0.1)(z, torch.tensor([0, 0, 1, -1])).shape
            torch.Size([])
        """
        if len(views) == 0 or any(v.dim() != 2 or v.shape != views[0].shape for v in views):
            raise ValueError("SupConLoss expects a non-empty list of (N, D) tensors of one shape")
        n = views[0].shape[0]
        if labels.shape != (n,):
            raise ValueError(f"SupConLoss labels must have shape ({n},), got {tuple(labels.shape)}")
        distributed = self.gather_distributed and world_size() > 1
        w, r = (world_size(), rank()) if distributed else (1, 0)
        device = views[0].device
        with torch.autocast(device.type, enabled=False):
            z = [F.normalize(at_least_fp32(v), dim=1) for v in views]
            anchors = torch.cat(z)  # (V n, d): view-major, as the keys below
            keys = torch.cat([gather(v) for v in z]) if distributed else anchors  # (V w n, d)
            all_labels = gather_no_grad(labels) if distributed else labels  # (w n,)

            num_views, total = len(views), w * n
            local = torch.arange(n, device=device)
            anchor_sample = (r * n + local).repeat(num_views)  # global sample id of each anchor
            anchor_pos = torch.cat([v * total + r * n + local for v in range(num_views)])
            key_sample = torch.arange(total, device=device).repeat(num_views)
            key_label = all_labels.repeat(num_views)
            anchor_label = labels.repeat(num_views)

            logits = anchors @ keys.T / self.temperature  # (V n, V w n)
            rows = torch.arange(len(anchors), device=device)
            is_self = torch.zeros_like(logits, dtype=torch.bool)
            is_self[rows, anchor_pos] = True
            same_label = (anchor_label[:, None] == key_label[None, :]) & (anchor_label[:, None] >= 0)
            positive = (same_label | (anchor_sample[:, None] == key_sample[None, :])) & ~is_self

            log_norm = torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1, keepdim=True)
            log_prob = logits - log_norm
            num_pos = positive.sum(dim=1)
            has_pos = num_pos > 0
            per_anchor = -(log_prob * positive).sum(dim=1)[has_pos] / num_pos[has_pos]
            count = has_pos.sum()
            if distributed:
                count = gather_no_grad(count.reshape(1)).sum()
            if int(count) == 0:
                return logits.sum() * 0.0  # no anchor has a positive: zero, still in the graph
            return per_anchor.sum() * w / count

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"
