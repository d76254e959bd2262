"""Cross-entropy against cluster pseudo-labels, optionally re-weighted by cluster size."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.nn.distributed import gather_no_grad, world_size
from selfsup.nn.precision import at_least_fp32

__all__ = ["ClusterCrossEntropyLoss", "cluster_size_weights"]


@torch.no_grad()
def cluster_size_weights(labels: Tensor, num_clusters: int, power: float) -> Tensor:
    """Per-cluster weights ``n_c ** -power`` from the pseudo-labels of the whole data set.

    ``power=0.5`` is ODC's loss re-weighting (Zhan et al., "Online Deep Clustering for
    Unsupervised Representation Learning", 2020, https://arxiv.org/abs/2006.10645, Sec. 3.3;
    code https://github.com/open-mmlab/mmselfsup, ``reweight_pow=0.5``). ``power=1`` makes the
    expected batch loss equal the one under DeepCluster's sampling "uniformly over clusters"
    (Caron et al. 2018, https://arxiv.org/abs/1807.05520, Sec. 3.3): drawing cluster ``c`` with
    probability ``1/k`` and then one of its ``n_c`` images gives image ``i`` the probability
    ``1 / (k n_c)``, i.e. an importance weight ``1 / n_c`` relative to uniform sampling. Empty
    clusters get weight 0 (no sample carries their label). Weights sum to 1.

    Args:
        labels: ``(N,)`` pseudo-labels in ``[0, num_clusters)``.
        num_clusters: ``k``.
        power: Exponent; 0 gives equal weights.

    Returns:
        ``(num_clusters,)`` float32 weights.

    Example:
        >>> cluster_size_weights(torch.tensor([0, 0, 0, 0, 1]), 2, power=1.0)
        tensor([0.2000, 0.8000])
    """
    counts = torch.bincount(labels, minlength=num_clusters).double()
    weights = torch.where(counts > 0, counts.clamp(min=1) ** -power, torch.zeros_like(counts))
    return (weights / weights.sum()).float()


class ClusterCrossEntropyLoss(nn.Module):
    """Weighted cross-entropy of ``logits / temperature`` against pseudo-labels.

    ``loss = sum_i w[y_i] CE(logits_i / T, y_i) / sum_i w[y_i]`` over the global batch (PyTorch's
    weighted mean; all weights 1 without ``class_weights``). This is the classification loss of
    DeepCluster (Caron et al., "Deep Clustering for Unsupervised Learning of Visual Features",
    2018, https://arxiv.org/abs/1807.05520, Eq. 1; code
    https://github.com/facebookresearch/deepcluster), of DeepCluster-v2 with ``T = 0.1`` on
    prototype scores (Caron et al. 2020, https://arxiv.org/abs/2006.09882, Appendix; code
    https://github.com/facebookresearch/swav ``main_deepclusterv2.py``) and of ODC with class
    weights ``n_c ** -0.5`` (Zhan et al. 2020, https://arxiv.org/abs/2006.10645; the authors' code
    passes them as ``nn.CrossEntropyLoss(weight=...)``).

    The denominator is a statistic of the whole batch: with ``gather_distributed`` each rank
    divides its weighted sum by the mean over ranks of the per-rank weight sums, so the mean of
    the per-rank losses (DDP averages gradients) is the loss of the concatenated batch.

    Args:
        temperature: ``T > 0`` dividing the logits.
        gather_distributed: Normalise by the global batch's weight sum.

    Example:
        >>> loss = ClusterCrossEntropyLoss()(torch.randn(4, 10), torch.tensor([0, 1, 2, 3]))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 1.0, gather_distributed: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"ClusterCrossEntropyLoss temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    def forward(self, logits: Tensor, labels: Tensor, class_weights: Tensor | None = None) -> Tensor:
        """Weighted mean cross-entropy of ``(B, k)`` logits against ``(B,)`` labels.

        Example:
            >>> ClusterCrossEntropyLoss(0.1)(torch.zeros(2, 3), torch.tensor([0, 2])).item() > 0
            True
        """
        with torch.autocast(logits.device.type, enabled=False):
            logits = at_least_fp32(logits) / self.temperature
            per_sample = F.cross_entropy(logits, labels, reduction="none")
            if class_weights is None:
                weights = torch.ones_like(per_sample)
            else:
                weights = class_weights.to(per_sample)[labels]
            total = weights.sum()
            if self.gather_distributed and world_size() > 1:
                total = gather_no_grad(total.reshape(1)).mean()
            return (weights * per_sample).sum() / total.clamp(min=torch.finfo(total.dtype).tiny)
