"""Shared machinery of the queue-based MoCo family (v1, v2, v2+).

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning",
2019, https://arxiv.org/abs/1911.05722; Chen, Fan, Girshick, He, "Improved Baselines with Momentum
Contrastive Learning", 2020, https://arxiv.org/abs/2003.04297. Official code:
https://github.com/facebookresearch/moco. MoCo v2+ is solo-learn's symmetric variant
(https://github.com/vturrisi/solo-learn, ``solo/methods/mocov2plus.py``).
"""
from __future__ import annotations

from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.losses import NTXentLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.nn import MomentumTeacher

__all__ = ["MomentumContrast"]


class MomentumContrast(Method):
    """Query encoder + momentum key encoder + FIFO queue(s) of keys, trained with InfoNCE.

    Subclasses choose the projection head and the hyper-parameters; this class holds the key
    encoder (a frozen copy of backbone + projector updated by EMA after every optimizer step,
    MoCo Eq. 2), the InfoNCE loss against a queue (:class:`~selfsup.losses.NTXentLoss` with a
    memory bank, MoCo Eq. 1 and Alg. 1) and the momentum schedule
    ``m = final - (final - base) (cos(pi p) + 1) / 2`` (constant when ``final`` is None or equals
    ``base``), both owned by the :class:`~selfsup.nn.MomentumTeacher` that the base class updates.

    Asymmetric (MoCo v1 / v2, ``symmetric=False``): queries from view 0, keys from view 1, one
    queue of view-1 keys. Symmetric (solo-learn's MoCo v2+): the loss is averaged over both view
    orders and, as in solo-learn, each order has its own queue (``criterion`` holds past view-1
    keys and serves the view-0 queries; ``criterion_reverse`` holds past view-0 keys).

    Args:
        backbone: The query encoder's backbone (copied for the key encoder).
        projector: The query encoder's head (copied for the key encoder).
        proj_output_dim: Width of the projector output (and of the queue).
        temperature: InfoNCE temperature ``T``.
        queue_size: Number of queued negative keys ``K`` (per queue).
        base_momentum: Key-encoder momentum at the start of training.
        final_momentum: Momentum at the end (None for a constant ``base_momentum``).
        symmetric: Average the loss over both view orders (two queues).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)  # 32-d features
        >>> head = selfsup.nn.MLP([32, 16], batch_norm=False)
        >>> moco = MomentumContrast(backbone, head, proj_output_dim=16, temperature=0.07,
        ...                         queue_size=256, base_momentum=0.999, final_momentum=None)
        >>> moco.criterion.memory_bank.features().shape  # the queue of past keys
        torch.Size([256, 16])
    """

    default_views = "mocov2"

    def __init__(
        self,
        backbone: Backbone,
        projector: nn.Module,
        *,
        proj_output_dim: int,
        temperature: float,
        queue_size: int,
        base_momentum: float,
        final_momentum: float | None,
        symmetric: bool = False,
    ) -> None:
        super().__init__(backbone)
        if queue_size < 1:
            raise ValueError(f"MoCo queue_size must be >= 1, got {queue_size}")
        self.projector = projector
        self.target = MomentumTeacher({"backbone": self.backbone, "projector": self.projector},
                                      base_momentum=base_momentum, final_momentum=final_momentum, owner="MoCo")
        self.symmetric = symmetric

        def make_loss() -> NTXentLoss:
            return NTXentLoss(
                temperature=temperature, memory_bank_size=queue_size,
                memory_bank_dim=proj_output_dim, gather_distributed=True,
            )

        self.criterion = make_loss()
        self.criterion_reverse = make_loss() if symmetric else None

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """InfoNCE of the queries against the keys and the queue(s); keys enter the queue(s).

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = selfsup.methods.get("mocov2", backbone=backbone, proj_output_dim=16, queue_size=256)
            >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # queries: view 0; keys: view 1
            >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
            >>> out.loss.backward(); method.end_step()  # after the optimizer step: EMA key encoder, keys queued
        """
        x0, x1 = batch.views[0], batch.views[1]
        if not self.symmetric:
            features = self.backbone(x0)
            loss = self.criterion(self.projector(features), self.target(x1))
            return StepOutput(loss=loss, features=features)
        assert self.criterion_reverse is not None
        # one view per call, for queries and keys alike (BatchNorm statistics per view, as solo-learn)
        features = self.backbone(x0)
        q0, q1 = self.projector(features), self.projector(self.backbone(x1))
        loss = (self.criterion(q0, self.target(x1)) + self.criterion_reverse(q1, self.target(x0))) / 2
        return StepOutput(loss=loss, features=features)
