"""CAPI's losses: online clustering of the teacher's patch tokens, and predicting those clusters.

Darcet, Baldassarre, Oquab, Mairal, Bojanowski 2025, "Cluster and Predict Latent Patches for
Improved Masked Image Modeling", arXiv 2502.08769 (https://arxiv.org/abs/2502.08769), Sec. 3;
official code https://github.com/facebookresearch/capi (``model.py``: ``sinkhorn_knopp``,
``OnlineClustering``; ``train_capi.py``: ``do_student``, ``do_teacher``).

Example:
    >>> clustering = OnlineClustering(dim=32, num_clusters=16)
    >>> targets, clustering_loss = clustering(torch.randn(4, 9, 32))  # teacher patch tokens (B, N, D)
    >>> capi_prediction_loss(torch.randn(4, 2, 16), targets[:, :2]).shape  # student logits (B, M, K)
    torch.Size([])
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.nn.distributed import world_size
from selfsup.nn.precision import at_least_fp32

__all__ = ["OnlineClustering", "capi_prediction_loss", "positionwise_sinkhorn"]

EXP_MAX = 50.0
"""The exponent each cluster column's largest logit is shifted to before ``exp`` (official ``stable_exp``)."""


@torch.no_grad()
def positionwise_sinkhorn(logits: Tensor, iterations: int = 3, gather_distributed: bool = True,
                          eps: float = 1e-8) -> Tensor:
    """Soft cluster assignments ``(B, N, K)`` balanced over the batch at each patch position.

    CAPI's Sinkhorn-Knopp (official ``sinkhorn_knopp`` with ``positionwise_sk=True``): for each
    position ``n`` on its own, ``M = exp(logits[:, n])`` (B, K) is divided ``iterations`` times
    first by its sums over the batch (each cluster column; summed over all processes when
    distributed) and then by its sums over clusters (each token row), so every token's assignment
    is a distribution over the clusters and, at every position, the batch is spread evenly over
    them. Balancing each position separately is the paper's guard against clusters that encode
    position (Sec. 3.2). Without gradient, in at least float32.

    Args:
        logits: ``(B, N, K)`` cluster logits, already divided by the target temperature.
        iterations: normalisation rounds (3 in the official config).
        gather_distributed: sum over the batches of all processes.

    Example:
        >>> codes = positionwise_sinkhorn(torch.randn(8, 3, 5))
        >>> codes.shape, torch.allclose(codes.sum(-1), torch.ones(8, 3))  # each code sums to 1
        (torch.Size([8, 3, 5]), True)
    """
    if logits.dim() != 3 or 0 in logits.shape:
        raise ValueError(f"positionwise_sinkhorn expects non-empty (B, N, K) logits, got {tuple(logits.shape)}")
    distributed = gather_distributed and world_size() > 1
    with torch.autocast(logits.device.type, enabled=False):
        x = at_least_fp32(logits)
        # a per-(position, cluster) shift cancels in the first division over the batch; as the
        # official stable_exp, each column's largest entry becomes exp(50), so the 1e-8 guards stay
        # negligible
        shift = x.amax(dim=0, keepdim=True)
        if distributed:
            dist.all_reduce(shift, op=dist.ReduceOp.MAX)
        m = torch.exp(x - shift + EXP_MAX)
        for _ in range(iterations):
            over_batch = m.sum(dim=0, keepdim=True)
            if distributed:
                dist.all_reduce(over_batch)
            m = m / (over_batch + eps)
            m = m / (m.sum(dim=-1, keepdim=True) + eps)
    return m


class OnlineClustering(nn.Module):
    """The teacher's clustering head: cluster logits of patch tokens, their balanced assignments
    (the student's targets) and the loss that trains the cluster centres.

    Official ``OnlineClustering``: tokens are L2-normalised, ``logits = W x + b`` (``W`` drawn from
    N(0, 1), ``b`` zero), targets ``A = positionwise_sinkhorn(logits / target_temp)``, and the head
    learns to predict its own balanced assignment: ``loss = mean over tokens of
    -sum_k A_k log softmax(logits / pred_temp)_k``. Only the head receives this gradient (the
    tokens come from the EMA teacher, without gradient).

    Args:
        dim: token width.
        num_clusters: ``K`` (16,384 in the official config).
        target_temp, pred_temp: 0.06 and 0.12 (official).
        iterations: Sinkhorn rounds (3).
        bias: a bias on the logits (official: yes).
        gather_distributed: balance over the batches of all processes.

    Example:
        >>> targets, loss = OnlineClustering(32, 16)(torch.randn(4, 9, 32))
        >>> targets.shape
        torch.Size([4, 9, 16])
    """

    def __init__(self, dim: int, num_clusters: int, *, target_temp: float = 0.06, pred_temp: float = 0.12,
                 iterations: int = 3, bias: bool = True, gather_distributed: bool = True) -> None:
        super().__init__()
        if num_clusters < 2 or target_temp <= 0 or pred_temp <= 0 or iterations < 1:
            raise ValueError(f"OnlineClustering needs num_clusters >= 2, temperatures > 0 and iterations >= 1, got "
                             f"{num_clusters}, {target_temp}, {pred_temp}, {iterations}")
        self.layer = nn.Linear(dim, num_clusters, bias=bias)
        nn.init.normal_(self.layer.weight, std=1.0)
        if bias:
            nn.init.zeros_(self.layer.bias)
        self.target_temp, self.pred_temp, self.iterations = target_temp, pred_temp, iterations
        self.gather_distributed = gather_distributed

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(assignments (B, N, K) without gradient, clustering loss)`` of tokens ``(B, N, D)``."""
        logits = self.layer(F.normalize(tokens, dim=-1, eps=1e-7))
        targets = positionwise_sinkhorn(logits.detach() / self.target_temp, self.iterations, self.gather_distributed)
        with torch.autocast(logits.device.type, enabled=False):
            log_p = F.log_softmax(at_least_fp32(logits) / self.pred_temp, dim=-1)
            loss = -(targets * log_p).sum(dim=-1).mean()
        return targets, loss


def capi_prediction_loss(student_logits: Tensor, targets: Tensor, temperature: float = 0.12) -> Tensor:
    """The student's loss: mean over predicted tokens of ``-sum_k t_k log softmax(s / temperature)_k``.

    Official ``do_student``: ``student_logits`` come from the student's head on the predictor's
    outputs at the predicted positions, ``targets`` are the teacher's assignments there; the
    student temperature is 0.12. Computed in at least float32.

    Example:
        >>> t = torch.softmax(torch.randn(4, 2, 16), -1)
        >>> capi_prediction_loss(torch.randn(4, 2, 16), t).shape
        torch.Size([])
    """
    if student_logits.shape != targets.shape:
        raise ValueError(f"capi_prediction_loss: student logits {tuple(student_logits.shape)} and targets "
                         f"{tuple(targets.shape)} differ in shape")
    with torch.autocast(student_logits.device.type, enabled=False):
        log_p = F.log_softmax(at_least_fp32(student_logits) / temperature, dim=-1)
        return -(targets.to(log_p.dtype) * log_p).sum(dim=-1).mean()
