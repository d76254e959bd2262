"""NNCLR: "With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
Representations".

Dwibedi, Aytar, Tompson, Sermanet, Zisserman, 2021. https://arxiv.org/abs/2104.14548
Official code: none released; public re-implementation https://github.com/vturrisi/solo-learn
(``solo/methods/nnclr.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from selfsup.backbones.base import Backbone
from selfsup.losses.nnclr import NNCLRLoss
from selfsup.methods.base import Method, StepOutput, TrainingProgress, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP
from selfsup.nn.support_set import NearestNeighbourSupportSet


@METHODS.register("nnclr")
class NNCLR(Method):
    """Contrast each sample's support-set nearest neighbour with the other view's prediction.

    Both views go through the backbone, a 3-layer projector (``z``) and a 2-layer predictor
    (``p``). ``NN(z0)`` and ``NN(z1)``, the cosine nearest neighbours of the projections in the
    support set (a FIFO queue of past projections), replace the projections as anchors; the loss
    (:class:`~selfsup.losses.nnclr.NNCLRLoss`) is averaged over the two orders
    ``(NN(z0), p1)`` and ``(NN(z1), p0)``, with the predictions of the global batch as
    candidates. After the optimizer step (:meth:`on_step_end`) the normalised view-0 projections
    of the batch (of all processes) enter the support set, as in solo-learn; batches seen in
    eval mode are not enqueued.

    Defaults are the paper's (Sec. 4, "Implementation details"): projector 2048-2048-256 with
    BatchNorm on every layer, predictor 4096-256, support set of 98,304, temperature 0.1.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = NNCLR(backbone, queue_size=256, proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="NNCLR", year=2021, authors="Dwibedi et al.",
        title="With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual Representations",
        paper="https://arxiv.org/abs/2104.14548", code=None, family="contrastive", views="byol",
        backbones=ANY_BACKBONE,
        summary="support-set nearest neighbours of the projections as positives",
        small=dict(proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32, queue_size=100),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 256,
        pred_hidden_dim: int = 4096,
        queue_size: int = 98304,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(backbone)
        if queue_size < 1:
            raise ValueError(f"NNCLR queue_size must be >= 1, got {queue_size}")
        self.projector = MLP(
            [self.feature_dim, proj_hidden_dim, proj_hidden_dim, proj_output_dim],
            last_batch_norm=True,
        )
        self.predictor = MLP([proj_output_dim, pred_hidden_dim, proj_output_dim])
        self.support_set = NearestNeighbourSupportSet(queue_size, proj_output_dim)
        self.criterion = NNCLRLoss(temperature=temperature, gather_distributed=True)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """The symmetrised NNCLR loss; remembers the view-0 projections for the support set.

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = NNCLR(backbone, queue_size=256, proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32)
            >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
            >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
            >>> out.loss.backward()
        """
        x0, x1 = batch.views[0], batch.views[1]
        n = len(x0)
        features = self.backbone(torch.cat([x0, x1]))
        z = self.projector(features)
        p0, p1 = self.predictor(z).chunk(2)
        z0, z1 = z.chunk(2)
        nn0, nn1 = self.support_set.nearest(z0), self.support_set.nearest(z1)
        loss = (self.criterion(nn0, p1) + self.criterion(nn1, p0)) / 2
        self.defer(z0.detach())
        return StepOutput(loss=loss, features=features[:n])

    @torch.no_grad()
    def on_step_end(self, progress: TrainingProgress) -> None:
        """Enqueue the view-0 projections of the step's batches (several with gradient accumulation)
        into the support set.

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = NNCLR(backbone, queue_size=256, proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32)
            >>> optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
            >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
            >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
            >>> method.training_step(batch).loss.backward()
            >>> optimizer.step()
            >>> method.end_step()  # calls on_step_end(method.progress): the step's projections enter the support set
        """
        for (z0,) in self.take_deferred():
            self.support_set.update(z0)
