"""FastSiam's loss: each view's prediction against the mean projection of the other views."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from selfsup.losses.negative_cosine import NegativeCosineSimilarity
from selfsup.nn.precision import at_least_fp32

__all__ = ["FastSiamLoss"]


class FastSiamLoss(NegativeCosineSimilarity):
    """SimSiam's negative cosine similarity with a target averaged over the other ``k - 1`` views.

    Pototzky, Sultan, Schmidt-Thieme, "FastSiam: Resource-Efficient Self-supervised Learning on a
    Single GPU", GCPR 2022, https://doi.org/10.1007/978-3-031-16788-1_4 (no official code; lightly
    implements it in ``examples/pytorch/fastsiam.py``). For ``k`` views with predictions ``p_i``
    and projections ``z_i``, ``L = 1/k sum_i D(p_i, stopgrad(1/(k-1) sum_{j != i} z_j))`` with ``D``
    the negative cosine similarity. The average of several targets is a steadier target than
    SimSiam's single view, which is what lets FastSiam train with small batches. Unlike
    :class:`NegativeCosineSimilarity`, this loss stops the gradient of the targets itself. With
    ``k = 2`` it is SimSiam's symmetrised loss.

    Example:
        >>> loss_fn = FastSiamLoss()
        >>> loss = loss_fn([torch.randn(8, 16) for _ in range(4)], [torch.randn(8, 16) for _ in range(4)])
    """

    def forward(self, predictions: Sequence[torch.Tensor], projections: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """The mean over views of ``D(p_i, stopgrad(mean of the other views' z))``.

        Example:
            >>> z = [torch.ones(2, 3)] * 3
            >>> round(float(FastSiamLoss()(z, z)), 4)  # predictions equal to the targets
            -1.0
        """
        k = len(predictions)
        if k < 2 or len(projections) != k:
            raise ValueError(f"FastSiamLoss needs k >= 2 predictions and as many projections, got "
                             f"{k} predictions and {len(projections)} projections")
        targets = torch.stack([at_least_fp32(z.detach()) for z in projections])  # the mean in fp32
        total = targets.sum(dim=0)
        loss = sum(super(FastSiamLoss, self).forward(p, (total - targets[i]) / (k - 1))
                   for i, p in enumerate(predictions))
        return loss / k
