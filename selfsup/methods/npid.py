"""NPID: "Unsupervised Feature Learning via Non-Parametric Instance Discrimination".

Wu, Xiong, Yu, Lin, 2018. https://arxiv.org/abs/1805.01978
Official code: https://github.com/zhirongw/lemniscate.pytorch
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.losses.npid import NPIDLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.registry import METHODS


@METHODS.register("npid", "NPID (2018): one memory vector per image, non-parametric softmax by NCE")
class NPID(Method):
    """Instance discrimination against a memory bank of one 128-d vector per training image.

    One augmented view per image; the backbone's pooled features go through a linear layer to
    ``proj_output_dim`` (128) and are L2-normalised (the official ``low_dim`` head), then
    :class:`~selfsup.losses.npid.NPIDLoss` scores them against the memory bank with NCE
    (``num_negatives`` 4096, temperature 0.07, the paper's ImageNet values) or the exact softmax
    (``num_negatives=0``). After every optimizer step (:meth:`on_step_end`) the memory rows of the
    batch's ``indices`` become ``normalise(m v + (1 - m) f)`` with ``m = memory_momentum`` (0.5)
    and ``f`` the features the loss used. ``num_samples`` (the training-set size) is filled in by
    the engine.

    Example:
        >>> method = NPID(selfsup.backbones.get("resnet18", cifar_stem=True), num_samples=50000)
        >>> out = method.training_step(ViewBatch(views=[x0], labels=y, indices=i))
    """

    default_views = "npid"

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_samples: int,
        proj_output_dim: int = 128,
        temperature: float = 0.07,
        num_negatives: int = 4096,
        memory_momentum: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(backbone)
        self.projector = nn.Linear(self.feature_dim, proj_output_dim)
        self.criterion = NPIDLoss(
            num_samples=num_samples, dim=proj_output_dim, temperature=temperature,
            num_negatives=num_negatives, momentum=memory_momentum, seed=seed,
        )
        self._pending: tuple[Tensor, Tensor] | None = None

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """NCE loss of the normalised 128-d features of ``views[0]``; the memory update is deferred."""
        features = self.backbone(batch.views[0])
        z = F.normalize(self.projector(features), dim=1)
        loss = self.criterion(z, batch.indices)
        if self.training:  # the memory update waits for on_step_end
            self._pending = (z.detach(), batch.indices.detach())
        return StepOutput(loss=loss, features=features, logs={"npid_z": float(self.criterion.z)})

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        """Write ``normalise(m v + (1 - m) f)`` into the memory rows of the last batch."""
        if self._pending is not None:
            self.criterion.update_memory(*self._pending)
            self._pending = None
