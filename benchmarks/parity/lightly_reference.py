"""lightly's implementation of each method, as lightly's own benchmarks train it, on any backbone.

Each :class:`Reference` uses lightly's heads, loss and view transforms (imported from the installed
``lightly`` package, see ``requirements.txt``) and the optimisation of lightly's CIFAR-10 benchmark
(``docs/source/getting_started/benchmarks/cifar10_benchmark.py`` in github.com/lightly-ai/lightly):
SGD with momentum 0.9, weight decay 5e-4, learning rate ``6e-2 x batch / 128`` annealed by a cosine
over the epochs (stepped once per epoch), no warm-up, views without blur at the data's size.
Where that file has no entry for a method, the settings come from lightly's Imagenette benchmark
(``benchmarks/imagenette/resnet18/...`` / ``imagenette_benchmark.py``), named per entry. The heads
are sized to the backbone's feature width the way lightly sizes them to a ResNet-18's 512.

Only the parts lightly provides are taken from lightly; the backbone, data, batch, epochs and the
evaluation are the parity benchmark's (``run.py``), identical for both libraries.

    from lightly_reference import REFERENCES
    model = REFERENCES["simsiam"].build(backbone, feature_dim=128)
    loss = model.loss(views, epoch=0, epochs=8)
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightly import loss as lloss
from lightly.models import utils as lutils
from lightly.models.modules import heads
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, SimCLRTransform, SimSiamTransform
from lightly.utils.scheduler import cosine_schedule


class ReferenceModel(nn.Module):
    """A backbone, lightly's heads and lightly's loss; :meth:`loss` maps a batch of views to the loss."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x).flatten(start_dim=1)

    def loss(self, views: Sequence[Tensor], epoch: int, epochs: int) -> Tensor:
        raise NotImplementedError


class SimCLR(ReferenceModel):
    """lightly's cifar10 benchmark ``SimCLRModel``: SimCLRProjectionHead(d, d, 128), NTXentLoss()."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        self.projection_head = heads.SimCLRProjectionHead(feature_dim, feature_dim, 128)
        self.criterion = lloss.NTXentLoss()

    def loss(self, views, epoch, epochs):
        z0, z1 = (self.projection_head(self.features(v)) for v in views[:2])
        return self.criterion(z0, z1)


class SimSiam(ReferenceModel):
    """lightly's cifar10 benchmark ``SimSiamModel``: a 2-layer projection head d-2048-2048 with BatchNorm
    after both layers (the paper's CIFAR variant), SimSiamPredictionHead(2048, 512, 2048),
    symmetric negative cosine with stop-gradient."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        self.projection_head = heads.ProjectionHead([
            (feature_dim, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),
            (2048, 2048, nn.BatchNorm1d(2048), None),
        ])
        self.prediction_head = heads.SimSiamPredictionHead(2048, 512, 2048)
        self.criterion = lloss.NegativeCosineSimilarity()

    def loss(self, views, epoch, epochs):
        z0, z1 = (self.projection_head(self.features(v)) for v in views[:2])
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(z0.detach(), p1) + self.criterion(z1.detach(), p0))


class _MomentumModel(ReferenceModel):
    """Backbone + projection head with a frozen EMA copy; momentum ``cosine_schedule(epoch, epochs,
    0.996, 1)`` applied before each step, as lightly's benchmarks do."""

    def __init__(self, backbone: nn.Module, projection_head: nn.Module) -> None:
        super().__init__(backbone)
        self.projection_head = projection_head
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(projection_head)
        lutils.deactivate_requires_grad(self.backbone_momentum)
        lutils.deactivate_requires_grad(self.projection_head_momentum)

    def update_momentum(self, epoch: int, epochs: int) -> None:
        momentum = cosine_schedule(epoch, epochs, 0.996, 1)
        lutils.update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        lutils.update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)

    def momentum_projection(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


class BYOL(_MomentumModel):
    """lightly's cifar10 benchmark ``BYOLModel``: BYOLProjectionHead(d, 1024, 256),
    BYOLPredictionHead(256, 1024, 256), symmetric negative cosine against the EMA branch."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, heads.BYOLProjectionHead(feature_dim, 1024, 256))
        self.prediction_head = heads.BYOLPredictionHead(256, 1024, 256)
        self.criterion = lloss.NegativeCosineSimilarity()

    def loss(self, views, epoch, epochs):
        self.update_momentum(epoch, epochs)
        x0, x1 = views[:2]
        p0, p1 = (self.prediction_head(self.projection_head(self.features(x))) for x in (x0, x1))
        z0, z1 = self.momentum_projection(x0), self.momentum_projection(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


class TiCo(_MomentumModel):
    """lightly's Imagenette benchmark ``TiCoModel`` (the cifar10 file has no TiCo):
    TiCoProjectionHead(d, 1024, 256), TiCoLoss() (beta 0.9, rho 8), the online projection of view 0
    against the EMA projection of view 1; BYOL's views."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, heads.TiCoProjectionHead(feature_dim, 1024, 256))
        self.criterion = lloss.TiCoLoss()

    def loss(self, views, epoch, epochs):
        self.update_momentum(epoch, epochs)
        x0, x1 = views[:2]
        return self.criterion(self.projection_head(self.features(x0)), self.momentum_projection(x1))


class BarlowTwins(ReferenceModel):
    """lightly's cifar10 benchmark ``BarlowTwinsModel``: a 2-layer projection head d-2048-2048
    (BatchNorm + ReLU after the first layer), BarlowTwinsLoss() (lambda 5e-3); BYOL's views as
    lightly's Imagenette benchmark maps them."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        self.projection_head = heads.ProjectionHead([
            (feature_dim, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),
            (2048, 2048, None, None),
        ])
        self.criterion = lloss.BarlowTwinsLoss()

    def loss(self, views, epoch, epochs):
        z0, z1 = (self.projection_head(self.features(v)) for v in views[:2])
        return self.criterion(z0, z1)


def _simclr_views(size: int, normalize: dict) -> Callable:
    return SimCLRTransform(input_size=size, cj_strength=0.5, gaussian_blur=0.0, normalize=normalize)


def _simsiam_views(size: int, normalize: dict) -> Callable:
    return SimSiamTransform(input_size=size, gaussian_blur=0.0, normalize=normalize)


def _byol_views(size: int, normalize: dict) -> Callable:
    return BYOLTransform(
        view_1_transform=BYOLView1Transform(input_size=size, gaussian_blur=0.0, normalize=normalize),
        view_2_transform=BYOLView2Transform(input_size=size, gaussian_blur=0.0, normalize=normalize),
    )


@dataclass(frozen=True)
class Reference:
    """How lightly's benchmark trains one method: its model, its views and its base learning rate."""

    model: type[ReferenceModel]
    views: Callable[[int, dict], Callable]
    lr_per_128: float = 6e-2
    weight_decay: float = 5e-4

    def build(self, backbone: nn.Module, feature_dim: int) -> ReferenceModel:
        return self.model(backbone, feature_dim)

    def optimizer(self, model: nn.Module, batch_size: int) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=self.lr_per_128 * batch_size / 128, momentum=0.9,
                               weight_decay=self.weight_decay)


REFERENCES: dict[str, Reference] = {
    "simclr": Reference(SimCLR, _simclr_views),
    "simsiam": Reference(SimSiam, _simsiam_views),
    "byol": Reference(BYOL, _byol_views),
    "tico": Reference(TiCo, _byol_views),
    "barlowtwins": Reference(BarlowTwins, _byol_views),
}
"""selfsup method name -> lightly's implementation as its benchmarks train it."""
