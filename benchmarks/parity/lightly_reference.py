"""lightly's implementation of each method, as lightly's own benchmarks train it, on any backbone.

Each :class:`Reference` uses lightly's heads, loss and view transforms (imported from the installed
``lightly`` package, see ``requirements.txt``) and the optimisation of lightly's CIFAR-10 benchmark
(``docs/source/getting_started/benchmarks/cifar10_benchmark.py`` in github.com/lightly-ai/lightly):
SGD with momentum 0.9, weight decay 5e-4, learning rate ``6e-2 x batch / 128`` annealed by a cosine
over the epochs (stepped once per epoch), no warm-up, views without blur at the data's size
(SimSiam and FastSiam: 6e-2 whatever the batch, as that file's ``SimSiamModel``).
Where that file has no entry for a method, the settings come from lightly's Imagenette benchmark
(``benchmarks/imagenette/resnet18/...`` / ``imagenette_benchmark.py``), named per entry; where
neither has it, from lightly's example (MMCR: ``examples/pytorch/mmcr.py``) or its ImageNet
ResNet-50 benchmark (W-MSE: ``benchmarks/imagenet/resnet50/wmse.py``); for the ViT methods, from its
ImageNet ViT-B/16 benchmark (MAE, SimMIM: ``benchmarks/imagenet/vitb16/<method>.py``), on timm's ViT with the CPU
rows' ViT dimensions, which lightly's masked-ViT modules wrap (:func:`vit_nano_timm`). The heads are
sized to the backbone's feature width the way lightly sizes them to a ResNet-18's 512 (or a
ResNet-50's 2048); MAE's decoder is the size of selfsup's CPU row's.
Where the benchmark gives a method its own optimiser, :class:`Reference` carries it: SwAV (Adam, lr
``1e-3 x batch / 128``, weight decay 1e-6, as the CIFAR-10 file's ``SwaVModel``), VICReg (lightly's
LARS, lr ``0.3 x batch / 256``, momentum 0.9, weight decay 1e-4, as the Imagenette file's
``VICRegModel``, without its 20 warm-up epochs) and W-MSE (LARS, lr ``0.1 x sqrt(batch)``, weight
decay 1e-6 off biases and norms, as the ResNet-50 file, without its 10 warm-up epochs); the per-epoch
cosine without warm-up is the same for all.

Only the parts lightly provides are taken from lightly; the backbone (for the ViT rows, timm's ViT of
selfsup's ViT's dimensions), data, batch, epochs and the evaluation are the parity benchmark's
(``run.py``), identical for both libraries.

    from lightly_reference import REFERENCES
    model = REFERENCES["simsiam"].build(backbone, feature_dim=128)
    loss = model.loss(views, epoch=0, epochs=8)
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightly import loss as lloss
from lightly.models import utils as lutils
from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM, NNMemoryBankModule, heads
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    DINOTransform,
    FastSiamTransform,
    MAETransform,
    MMCRTransform,
    SimCLRTransform,
    SimSiamTransform,
    SwaVTransform,
    VICRegTransform,
    WMSETransform,
)
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_schedule
from timm.models.vision_transformer import VisionTransformer

from selfsup import backbones


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
    0.996, 1)`` (unless :meth:`momentum` says otherwise) applied before each step, as lightly's
    benchmarks do."""

    def __init__(self, backbone: nn.Module, projection_head: nn.Module) -> None:
        super().__init__(backbone)
        self.projection_head = projection_head
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(projection_head)
        lutils.deactivate_requires_grad(self.backbone_momentum)
        lutils.deactivate_requires_grad(self.projection_head_momentum)

    def momentum(self, epoch: int, epochs: int) -> float:
        return cosine_schedule(epoch, epochs, 0.996, 1)

    def update_momentum(self, epoch: int, epochs: int) -> None:
        momentum = self.momentum(epoch, epochs)
        lutils.update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        lutils.update_momentum(self.projection_head, self.projection_head_momentum, m=momentum)

    def momentum_projection(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


class BYOL(_MomentumModel):
    """lightly's cifar10 benchmark ``BYOLModel``: BYOLProjectionHead(d, 1024, 256),
    BYOLPredictionHead(256, 1024, 256), symmetric negative cosine against the EMA branch, EMA
    momentum fixed at 0.99 (the file's ``update_momentum(..., m=0.99)``; its ImageNet benchmark uses
    a cosine from 0.99 to 1)."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, heads.BYOLProjectionHead(feature_dim, 1024, 256))
        self.prediction_head = heads.BYOLPredictionHead(256, 1024, 256)
        self.criterion = lloss.NegativeCosineSimilarity()

    def momentum(self, epoch: int, epochs: int) -> float:
        return 0.99

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


class MoCoV2(_MomentumModel):
    """lightly's cifar10 benchmark ``MocoModel`` (MoCo v2): MoCoProjectionHead(d, d, 128) (no
    BatchNorm), EMA momentum fixed at 0.99 (updated before each step), NTXentLoss(temperature=0.1)
    with a memory bank of 4096 keys (the file's batch-128 setting; its batch-512 rows used 8192), keys
    from the EMA branch computed on a batch_shuffle'd batch and unshuffled, and the symmetric loss
    ``0.5 (loss(q(x0), k(x1)) + loss(q(x1), k(x0)))``, each half enqueueing its keys in turn; SimCLR's
    views. Not mirrored: the benchmark's ResNet-18 uses SplitBatchNorm (8 splits), which is what makes
    the shuffle matter; the parity backbone has plain BatchNorm."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, heads.MoCoProjectionHead(feature_dim, feature_dim, 128))
        self.criterion = lloss.NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))

    def momentum(self, epoch: int, epochs: int) -> float:
        return 0.99

    def query_key(self, q_view: Tensor, k_view: Tensor) -> tuple[Tensor, Tensor]:
        k_view, shuffle = lutils.batch_shuffle(k_view)
        q = self.projection_head(self.features(q_view))
        k = lutils.batch_unshuffle(self.momentum_projection(k_view), shuffle)
        return q, k

    def loss(self, views, epoch, epochs):
        self.update_momentum(epoch, epochs)
        x0, x1 = views[:2]
        loss_1 = self.criterion(*self.query_key(x0, x1))
        loss_2 = self.criterion(*self.query_key(x1, x0))
        return 0.5 * (loss_1 + loss_2)


class NNCLR(ReferenceModel):
    """lightly's cifar10 benchmark ``NNCLRModel``: a 2-layer projection head d-2048-256 (BatchNorm
    after both layers, ReLU after the first), NNCLRPredictionHead(256, 4096, 256), NTXentLoss()
    (temperature 0.5), NNMemoryBankModule of 4096 projections (randomly initialised, as lightly's;
    view 0 queried without update, view 1 queried then enqueued), symmetric
    ``0.5 (loss(nn(z0), p1) + loss(nn(z1), p0))``; SimCLR's views."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        self.projection_head = heads.ProjectionHead([
            (feature_dim, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),
            (2048, 256, nn.BatchNorm1d(256), None),
        ])
        self.prediction_head = heads.NNCLRPredictionHead(256, 4096, 256)
        self.criterion = lloss.NTXentLoss()
        self.memory_bank = NNMemoryBankModule(size=(4096, 256))

    def loss(self, views, epoch, epochs):
        z0, z1 = (self.projection_head(self.features(v)) for v in views[:2])
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        z0 = self.memory_bank(z0.detach(), update=False)
        z1 = self.memory_bank(z1.detach(), update=True)
        return 0.5 * (self.criterion(z0, p1) + self.criterion(z1, p0))


class DCL(SimCLR):
    """lightly's cifar10 benchmark ``DCL``: SimCLRProjectionHead(d, d, 128), DCLLoss() (temperature
    0.1, no weighting); SimCLR's views."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, feature_dim)
        self.criterion = lloss.DCLLoss()


class DCLW(SimCLR):
    """lightly's cifar10 benchmark ``DCLW``: SimCLRProjectionHead(d, d, 128), DCLWLoss() (temperature
    0.1, sigma 0.5); SimCLR's views."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, feature_dim)
        self.criterion = lloss.DCLWLoss()


class VICReg(ReferenceModel):
    """lightly's Imagenette benchmark ``VICRegModel`` (the cifar10 file has no VICReg):
    BarlowTwinsProjectionHead(d, 2048, 2048), VICRegLoss() (lambda 25, mu 25, nu 1); VICRegTransform
    with cj_strength 0.5 at the data's size, blur off as for the other references; LARS (see
    ``REFERENCES``). Not mirrored: the file's CosineWarmupScheduler (20 warm-up epochs of 200)."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        self.projection_head = heads.BarlowTwinsProjectionHead(feature_dim, 2048, 2048)
        self.criterion = lloss.VICRegLoss()

    def loss(self, views, epoch, epochs):
        z0, z1 = (self.projection_head(self.features(v)) for v in views[:2])
        return self.criterion(z0, z1)


class SwAV(ReferenceModel):
    """lightly's cifar10 benchmark ``SwaVModel``: SwaVProjectionHead(d, d, 128), L2-normalised
    outputs into SwaVPrototypes(128, 512), the prototypes renormalised onto the unit sphere before
    each step, SwaVLoss() (temperature 0.1, 3 Sinkhorn iterations, epsilon 0.05) with the first two
    views as high-resolution crops and any further ones as low-resolution; two 28 px crops (scale 0.14
    to 1), cj_strength 0.5, no blur; Adam (see ``REFERENCES``). As in that file there is no queue
    and no freezing of the prototypes (those are only in the Imagenette ``SwaVQueueModel``)."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        self.projection_head = heads.SwaVProjectionHead(feature_dim, feature_dim, 128)
        self.prototypes = heads.SwaVPrototypes(128, 512)
        self.criterion = lloss.SwaVLoss()

    def loss(self, views, epoch, epochs):
        self.prototypes.normalize()
        outputs = [self.prototypes(nn.functional.normalize(self.projection_head(self.features(v)), dim=1, p=2))
                   for v in views]
        return self.criterion(outputs[:2], outputs[2:])


class DINO(ReferenceModel):
    """lightly's cifar10 benchmark ``DINOModel``: DINOProjectionHead(d, 2048, 256, 2048,
    batch_norm=True) with its MLP replaced by 2 layers d-2048-256 (BatchNorm + GELU after the first,
    PyTorch's default init), weight-normalised last layer with its norm fixed; the teacher is a copy of
    the backbone and a separately initialised head (as lightly's benchmark builds it, not a copy),
    updated by EMA with momentum fixed at 0.99 before each step; DINOLoss(output_dim=2048) (teacher
    temperature 0.04 throughout, its warm-up being 0.04 to 0.04, student 0.1, center momentum 0.9)
    given the epoch; teacher on the two global views, student on all views. DINOTransform with two
    global crops at the data's size (scale 0.4 to 1), no local crops, cj_strength 0.5, no blur,
    solarisation 0.2 on the second global view. The last layer is never
    frozen (the file does not call ``cancel_last_layer_gradients``)."""

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        self.head = self.build_head(feature_dim)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = self.build_head(feature_dim)
        lutils.deactivate_requires_grad(self.teacher_backbone)
        lutils.deactivate_requires_grad(self.teacher_head)
        self.criterion = lloss.DINOLoss(output_dim=2048)

    @staticmethod
    def build_head(feature_dim: int) -> nn.Module:
        head = heads.DINOProjectionHead(feature_dim, 2048, 256, 2048, batch_norm=True)
        head.layers = heads.ProjectionHead([
            (feature_dim, 2048, nn.BatchNorm1d(2048), nn.GELU()),
            (2048, 256, None, None),
        ]).layers
        return head

    def loss(self, views, epoch, epochs):
        lutils.update_momentum(self.backbone, self.teacher_backbone, m=0.99)
        lutils.update_momentum(self.head, self.teacher_head, m=0.99)
        with torch.no_grad():
            teacher_out = [self.teacher_head(self.teacher_backbone(v).flatten(start_dim=1)) for v in views[:2]]
        student_out = [self.head(self.features(v)) for v in views]
        return self.criterion(teacher_out, student_out, epoch=epoch)


class FastSiam(SimSiam):
    """lightly's cifar10 benchmark ``FastSiamModel`` (a ``SimSiamModel`` with its own training step;
    ``examples/pytorch/fastsiam.py`` has the same loss): SimSiam's heads (a 2-layer projection head
    d-2048-2048 with BatchNorm after both layers, SimSiamPredictionHead(2048, 512, 2048)); each
    view's prediction against the mean of the other views' stop-gradient projections,
    NegativeCosineSimilarity, averaged over the views. FastSiamTransform with its 4 views at the
    data's size, no blur, as that file. Optimiser: the file's ``SimSiamModel``'s, which
    ``FastSiamModel`` inherits: SGD, momentum 0.9, weight decay 5e-4, lr 6e-2 with no scaling by the
    batch ("results in better training stability"), see ``REFERENCES``. The example's heads
    (SimSiamProjectionHead(512, 512, 128), SimSiamPredictionHead(128, 64, 128)) and plain SGD (lr
    0.06, no momentum, no weight decay) are not used: the example calls itself a small-GPU demo,
    not the reference settings."""

    def loss(self, views, epoch, epochs):
        zs, ps = [], []
        for v in views:
            z = self.projection_head(self.features(v))
            ps.append(self.prediction_head(z))
            zs.append(z.detach())
        zs, ps = torch.stack(zs), torch.stack(ps)
        n = len(views)
        loss = 0.0
        for i in range(n):
            others = torch.arange(n, device=zs.device) != i
            loss = loss + self.criterion(ps[i], zs[others].mean(dim=0)) / n
        return loss


class MMCR(_MomentumModel):
    """lightly's ``examples/pytorch/mmcr.py`` (no lightly benchmark has MMCR):
    MMCRProjectionHead(d, d, 128) (the example's (512, 512, 128) on a ResNet-18; with its default 2
    hidden layers that is d-d-d-128, BatchNorm + ReLU after the hidden layers, no biases), a
    momentum copy of backbone and head with momentum ``cosine_schedule(epoch, epochs, 0.996, 1)``
    updated before each step, MMCRLoss() (lambda 5e-3) on the online and momentum projections of
    all views stacked as (batch, views, dim). MMCRTransform with 4 views at the data's size, no blur:
    the example's 8 views reduced to the 4 of selfsup's recipe (``fashion_mnist_cpu/mmcr``), so that
    both libraries see the same views per image at the same budget. Optimiser: the example's plain
    SGD (lr 0.06 whatever the batch, no momentum, no weight decay; compare.py's per-epoch cosine on
    top). Neither lightly's MMCRLoss nor its head normalises the embeddings (the paper projects them
    onto the unit sphere), so the loss, minus the centroids' nuclear norm, has no lower bound: on
    2026-12-05 both this optimiser and the cifar10 benchmark's SGD (lr 0.12 at batch 256, momentum
    0.9, weight decay 5e-4) made the embeddings non-finite in the first epoch (the SVD fails at step
    45 of 210 with this optimiser in bf16);
    in fp32, with this optimiser, the mean embedding norm went from 4.4 at step 0 to 253 at step 5,
    9.7e3 at step 10 and overflowed by step 55. So lightly 1.6.0's MMCR gives no parity row."""

    num_views = 4

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, heads.MMCRProjectionHead(feature_dim, feature_dim, 128))
        self.criterion = lloss.MMCRLoss()

    def loss(self, views, epoch, epochs):
        self.update_momentum(epoch, epochs)
        online = torch.stack([self.projection_head(self.features(v)) for v in views], dim=1)
        momentum = torch.stack([self.momentum_projection(v) for v in views], dim=1)
        return self.criterion(online, momentum)


class WMSE(ReferenceModel):
    """lightly's ImageNet ResNet-50 benchmark ``WMSE`` (``benchmarks/imagenet/resnet50/wmse.py``,
    which is on lightly's W-MSE branch, pull request #1474, not on its master; lightly 1.6.0 has its
    loss and transform but not its ``WMSEProjectionHead``, a SimCLRProjectionHead):
    SimCLRProjectionHead(d, d, 128, num_layers=3) (the file's WMSEProjectionHead(num_layers=3),
    2048-2048-2048-128 on ResNet-50's 2048 features: BatchNorm after every layer, ReLU after the
    hidden ones), WMSELoss (embedding 128, whitening sub-batches of w_size 256, one whitening
    iteration, eps 0, the normalised MSE over the view pairs) on the projections of all views, passed
    through the backbone as one concatenated batch as the file does; so the batch must be a multiple
    of 256 (the parity rows' 256 is). WMSETransform at the data's size, no blur, with 2 views: the
    file's 4 reduced to the 2 of selfsup's row (``fashion_mnist/wmse`` under the CPU protocol, the
    two-view ``simclr`` recipe), so that both libraries see the same views per image at the same
    budget. LARS with lr ``0.1 x sqrt(batch)``, momentum 0.9, weight decay 1e-6, biases and norm
    parameters in a group without weight decay (and so, in lightly's LARS, without the trust ratio),
    see ``REFERENCES``. Not mirrored: the file's CosineWarmupScheduler (10 warm-up epochs of 100,
    stepped per step, down to 0.001 of the lr) and its ``gather_distributed=True`` (a multi-GPU
    option, absent from lightly 1.6.0's WMSELoss; the parity run is one process). Deviation: the loss
    (whitening and MSE) runs in float32 outside autocast, the backbone and head staying in the run's
    precision: under the parity run's bf16 autocast lightly 1.6.0's Whitening2d computes the
    covariance in bf16, which at init was already not positive-definite (Cholesky fails at the first
    step); the file trains with 16-mixed on GPU, and its branch's Whitening2d casts the covariance to
    float32 for the Cholesky ("only supports fp32")."""

    num_views = 2

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        self.projection_head = heads.SimCLRProjectionHead(feature_dim, feature_dim, 128, num_layers=3)
        self.criterion = lloss.WMSELoss(num_samples=self.num_views)

    def loss(self, views, epoch, epochs):
        z = self.projection_head(self.features(torch.cat(list(views))))
        with torch.autocast(z.device.type, enabled=False):
            return self.criterion(z.float())


class _MaskedViTModel(ReferenceModel):
    """A timm ViT inside lightly's MaskedVisionTransformerTIMM (which re-initialises it as lightly does:
    its weight init and a fixed sine-cosine position embedding), for the masked-image references."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.encoder = MaskedVisionTransformerTIMM(vit=backbone)
        self.patch_size = backbone.patch_embed.patch_size[0]
        self.in_channels = backbone.patch_embed.proj.in_channels

    def masked_pixels(self, images: Tensor, idx_mask: Tensor) -> Tensor:
        """The raw pixels of the masked patches; ``idx_mask`` counts the class token, the patches do not."""
        return lutils.get_at_index(lutils.patchify(images, self.patch_size), idx_mask - 1)


class MAE(_MaskedViTModel):
    """lightly's ImageNet ViT-B/16 benchmark ``MAE`` (``benchmarks/imagenet/vitb16/mae.py``):
    MaskedVisionTransformerTIMM around a timm ViT (sine-cosine position embedding, lightly's weight
    initialisation), MAEDecoderTIMM with its mask token drawn from N(0, 0.02), 75% of the patch tokens
    masked per image (the class token always kept), and the mean squared error between the decoder's
    predictions and the raw pixels of the masked patches (no per-patch normalisation, as that file);
    MAETransform (crop scale 0.2 to 1, bicubic, flip) at the data's size; AdamW, lr ``1.5e-4 x batch /
    256``, betas 0.9 / 0.95, weight decay 0.05 off biases and norm parameters (see ``REFERENCES``).
    The encoder is timm's ViT with the dimensions of selfsup's CPU row (:func:`vit_nano_timm`), the
    decoder the CPU row's size (width 96, depth 2, 3 heads: ``MAE.card.cpu``) where the file has 512 /
    8 / 16 for ViT-B; evaluated on the class token, as the file's online classifier and selfsup's row.
    Not mirrored: the file's 40 warm-up epochs of 800 (the parity runs' per-epoch cosine has none)."""

    mask_ratio = 0.75
    decoder_sizes = dict(decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3)

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        mask_token = nn.Parameter(torch.zeros(1, 1, self.decoder_sizes["decoder_embed_dim"]))
        nn.init.normal_(mask_token, std=0.02)
        self.decoder = MAEDecoderTIMM(
            num_patches=backbone.patch_embed.num_patches, patch_size=self.patch_size,
            in_chans=self.in_channels, embed_dim=feature_dim, mlp_ratio=4.0,
            proj_drop_rate=0.0, attn_drop_rate=0.0, mask_token=mask_token, **self.decoder_sizes)

    def loss(self, views, epoch, epochs):
        images = views[0]
        batch, length = images.shape[0], self.encoder.sequence_length
        idx_keep, idx_mask = lutils.random_token_mask((batch, length), mask_ratio=self.mask_ratio,
                                                      device=images.device)
        kept = self.decoder.embed(self.encoder.encode(images=images, idx_keep=idx_keep))
        tokens = lutils.repeat_token(self.decoder.mask_token, (batch, length))
        tokens = lutils.set_at_index(tokens, idx_keep, kept.type_as(tokens))
        decoded = self.decoder.decode(tokens)
        predicted = self.decoder.predict(lutils.get_at_index(decoded, idx_mask))
        return nn.functional.mse_loss(predicted, self.masked_pixels(images, idx_mask))


class SimMIM(_MaskedViTModel):
    """lightly's ImageNet ViT-B/16 benchmark ``SimMIM`` (``benchmarks/imagenet/vitb16/simmim.py``):
    MaskedVisionTransformerTIMM around a timm ViT (its zero-initialised mask token replaces the masked
    patch tokens, the whole sequence is encoded), one linear layer from each masked token to its
    patch's pixels, and the L1 loss against the raw pixels of the masked patches; 60% of the patch
    tokens masked. The file masks 2 x 2 blocks of its 16 px patches, SimMIM's 32 px mask patches at 224
    px; at 28 px that size is one 4 px patch (the CPU row's ``mask_patch_size: 4``), so here single
    tokens are masked (``random_token_mask``). MAETransform with crop scale 0.67 to 1 at the data's size;
    AdamW, lr ``1e-4 x batch / 256``, betas 0.9 / 0.999, weight decay 0.05 off biases and norm
    parameters (see ``REFERENCES``). The file's online classifier reads the class token, which
    SimMIM's loss gives no gradient; both libraries' rows are scored on the mean patch token, the
    output the loss trains (the representation selfsup's SimMIM declares, ``representation = "avg"``).
    Not mirrored: the file's 10 warm-up epochs."""

    mask_ratio = 0.6

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone)
        self.decoder = nn.Linear(feature_dim, self.patch_size ** 2 * self.in_channels)

    def loss(self, views, epoch, epochs):
        images = views[0]
        _, idx_mask = lutils.random_token_mask((images.shape[0], self.encoder.sequence_length),
                                               mask_ratio=self.mask_ratio, device=images.device)
        encoded = self.encoder.encode(images=images, idx_mask=idx_mask)
        predicted = self.decoder(lutils.get_at_index(encoded, idx_mask))
        return nn.functional.l1_loss(predicted, self.masked_pixels(images, idx_mask))


class MeanPatchToken(nn.Module):
    """A timm ViT's mean final patch token (after its final norm, class token left out): the
    representation of the rows whose loss trains only the patch tokens, as selfsup's ``pool: avg``."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, images: Tensor) -> Tensor:
        return self.vit.forward_features(images)[:, self.vit.num_prefix_tokens:].mean(dim=1)


def _simclr_views(size: int, normalize: dict) -> Callable:
    return SimCLRTransform(input_size=size, cj_strength=0.5, gaussian_blur=0.0, normalize=normalize)


def _simsiam_views(size: int, normalize: dict) -> Callable:
    return SimSiamTransform(input_size=size, gaussian_blur=0.0, normalize=normalize)


def _byol_views(size: int, normalize: dict) -> Callable:
    return BYOLTransform(
        view_1_transform=BYOLView1Transform(input_size=size, gaussian_blur=0.0, normalize=normalize),
        view_2_transform=BYOLView2Transform(input_size=size, gaussian_blur=0.0, normalize=normalize),
    )


def _vicreg_views(size: int, normalize: dict) -> Callable:
    return VICRegTransform(input_size=size, cj_strength=0.5, gaussian_blur=0.0, normalize=normalize)


def _swav_views(size: int, normalize: dict) -> Callable:
    # lightly's file leaves crop_max_scales at its 2-entry default, which 1.6.0's MultiCropTransform
    # rejects for one crop size; 1.0 is that default's entry for the high-resolution crops
    return SwaVTransform(crop_sizes=[size], crop_counts=[2], crop_min_scales=[0.14], crop_max_scales=[1.0],
                         cj_strength=0.5, gaussian_blur=0, normalize=normalize)


def _dino_views(size: int, normalize: dict) -> Callable:
    return DINOTransform(global_crop_size=size, n_local_views=0, cj_strength=0.5, gaussian_blur=(0, 0, 0),
                         normalize=normalize)


def _fastsiam_views(size: int, normalize: dict) -> Callable:
    return FastSiamTransform(num_views=4, input_size=size, gaussian_blur=0.0, normalize=normalize)


def _mmcr_views(size: int, normalize: dict) -> Callable:
    return MMCRTransform(k=MMCR.num_views, input_size=size, gaussian_blur=0.0, normalize=normalize)


def _wmse_views(size: int, normalize: dict) -> Callable:
    return WMSETransform(num_samples=WMSE.num_views, input_size=size, gaussian_blur=0.0, normalize=normalize)


def _mae_views(size: int, normalize: dict) -> Callable:
    return MAETransform(input_size=size, normalize=normalize)


def _simmim_views(size: int, normalize: dict) -> Callable:
    return MAETransform(input_size=size, min_scale=0.67, normalize=normalize)


def _sgd(params: list, lr: float, weight_decay: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adam(params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _lars(params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return LARS(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _bias_norm_undecayed(params: list) -> list[dict]:
    # lightly's get_weight_decay_parameters([backbone, head]) puts norm layers' parameters and biases
    # in a group with weight decay 0; on conv / linear / norm networks (and ViTs) those are the 1-d
    # parameters (a ViT's class token and mask tokens, 3-d, stay decayed, as lightly's)
    return [{"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def _lars_bias_norm_undecayed(params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return LARS(_bias_norm_undecayed(params), lr=lr, momentum=0.9, weight_decay=weight_decay)


def _adamw_bias_norm_undecayed(params: list, lr: float, weight_decay: float,
                               betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    return torch.optim.AdamW(_bias_norm_undecayed(params), lr=lr, weight_decay=weight_decay, betas=betas)


def resnet_small(in_channels: int) -> tuple[nn.Module, int]:
    """selfsup's ``resnet_small`` width 16, the ResNet rows' backbone, and its feature width."""
    backbone = backbones.get("resnet_small", in_channels=in_channels, width=16)
    return backbone, backbone.feature_dim


def vit_nano_timm(in_channels: int) -> tuple[nn.Module, int]:
    """timm's ViT with the dimensions of the CPU protocol's ViT rows (selfsup's ``vit_nano`` with 4 blocks:
    96-d, 3 heads, MLP ratio 4, 4 px patches at 28 px, class token, no drop path), for the references
    whose lightly modules wrap a timm ViT; its forward gives the final-norm class token."""
    vit = VisionTransformer(img_size=28, patch_size=4, in_chans=in_channels, num_classes=0, embed_dim=96, depth=4,
                            num_heads=3, mlp_ratio=4.0, qkv_bias=True, class_token=True, global_pool="token",
                            drop_path_rate=0.0)
    return vit, vit.embed_dim


def per_128(lr: float) -> Callable[[int], float]:
    """The rule ``lr x batch / 128`` (lightly's CIFAR-10 benchmark's ``6e-2 * lr_factor``)."""
    return lambda batch: lr * batch / 128


def unscaled(lr: float) -> Callable[[int], float]:
    """``lr`` whatever the batch."""
    return lambda batch: lr


def per_256(lr: float) -> Callable[[int], float]:
    """The rule ``lr x batch / 256`` (lightly's ImageNet benchmarks')."""
    return lambda batch: lr * batch / 256


def per_sqrt_batch(lr: float) -> Callable[[int], float]:
    """The rule ``lr x sqrt(batch)``."""
    return lambda batch: lr * batch ** 0.5


@dataclass(frozen=True)
class Reference:
    """How lightly's benchmark trains one method: its model, its views, its learning rate as a function
    of the batch size, its optimiser (SGD with momentum 0.9 unless the benchmark gives the method
    another) and the backbone both libraries' rows train (``backbone_row``: the CPU table's name for it;
    ``backbone``: a builder of it from the number of input channels, with its feature width) and the
    representation both rows are scored on (``scored``: the backbone's pooled output unless a reference
    names another, e.g. the mean patch token for the rows that train only the patch tokens)."""

    model: type[ReferenceModel]
    views: Callable[[int, dict], Callable]
    lr: Callable[[int], float] = per_128(6e-2)
    weight_decay: float = 5e-4
    optim: Callable[[list, float, float], torch.optim.Optimizer] = _sgd
    backbone: Callable[[int], tuple[nn.Module, int]] = resnet_small
    backbone_row: str = "resnet_small (width=16)"
    scored: Callable[[nn.Module], nn.Module] = lambda backbone: backbone  # the trained backbone as scored

    def build(self, backbone: nn.Module, feature_dim: int) -> ReferenceModel:
        return self.model(backbone, feature_dim)

    def optimizer(self, model: nn.Module, batch_size: int) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return self.optim(params, self.lr(batch_size), self.weight_decay)


REFERENCES: dict[str, Reference] = {
    "simclr": Reference(SimCLR, _simclr_views),
    # cifar10's SimSiamModel: lr 6e-2 with "no lr-scaling, results in better training stability"
    "simsiam": Reference(SimSiam, _simsiam_views, lr=unscaled(6e-2)),
    "byol": Reference(BYOL, _byol_views),
    "tico": Reference(TiCo, _byol_views),
    "barlowtwins": Reference(BarlowTwins, _byol_views),
    "mocov2": Reference(MoCoV2, _simclr_views),
    "nnclr": Reference(NNCLR, _simclr_views),
    "dcl": Reference(DCL, _simclr_views),
    "dclw": Reference(DCLW, _simclr_views),
    # Imagenette's VICRegModel: LARS, lr 0.3 x batch / 256 ("training diverges without LARS"), wd 1e-4
    "vicreg": Reference(VICReg, _vicreg_views, lr=per_128(0.3 * 128 / 256), weight_decay=1e-4, optim=_lars),
    # cifar10's SwaVModel: Adam, lr 1e-3 x batch / 128, wd 1e-6
    "swav": Reference(SwAV, _swav_views, lr=per_128(1e-3), weight_decay=1e-6, optim=_adam),
    "dino": Reference(DINO, _dino_views),
    # cifar10's FastSiamModel inherits SimSiamModel's SGD: lr 6e-2 with "no lr-scaling", momentum 0.9, wd 5e-4
    "fastsiam": Reference(FastSiam, _fastsiam_views, lr=unscaled(6e-2)),
    # examples/pytorch/mmcr.py: SGD lr 0.06, no momentum, no weight decay
    "mmcr": Reference(MMCR, _mmcr_views, lr=unscaled(6e-2), weight_decay=0.0, optim=functools.partial(_sgd, momentum=0.0)),
    # resnet50/wmse.py: LARS, lr 0.1 x sqrt(batch), wd 1e-6 off biases and norms
    "wmse": Reference(WMSE, _wmse_views, lr=per_sqrt_batch(0.1), weight_decay=1e-6,
                      optim=_lars_bias_norm_undecayed),
    # vitb16/mae.py: AdamW lr 1.5e-4 x batch / 256, betas 0.9 / 0.95, wd 0.05 off biases and norms
    "mae": Reference(MAE, _mae_views, lr=per_256(1.5e-4), weight_decay=0.05,
                     optim=functools.partial(_adamw_bias_norm_undecayed, betas=(0.9, 0.95)),
                     backbone=vit_nano_timm,
                     backbone_row="vit_nano (depth=4, patch_size=4, drop_path_rate=0.0, image_size=28)"),
    # vitb16/simmim.py: AdamW lr 1e-4 x batch / 256, betas 0.9 / 0.999, wd 0.05 off biases and norms
    "simmim": Reference(SimMIM, _simmim_views, lr=per_256(1e-4), weight_decay=0.05, optim=_adamw_bias_norm_undecayed,
                        backbone=vit_nano_timm, scored=MeanPatchToken,
                        backbone_row="vit_nano (image_size=28, patch_size=4, depth=4, drop_path_rate=0.0)"),
}
"""selfsup method name -> lightly's implementation as its benchmarks train it."""
