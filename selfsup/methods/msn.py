"""MSN: "Masked Siamese Networks for Label-Efficient Learning".

Assran, Caron, Misra, Bojanowski, Bordes, Vincent, Joulin, Rabbat, Ballas, 2022.
https://arxiv.org/abs/2204.07141 -- official code: https://github.com/facebookresearch/msn
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.losses.msn import MSNLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch, decay_groups
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.mlp import MLP
from selfsup.nn.momentum import MomentumTeacher
from selfsup.nn.multicrop import forward_by_resolution
from selfsup.nn.masking import random_masking
from selfsup.nn.prototypes import CosinePrototypes


def msn_projector(in_dim: int, hidden_dim: int = 2048, output_dim: int = 256, use_bn: bool = True) -> MLP:
    """MSN's 3-layer projection head ``in -> hidden -> hidden -> out`` with BatchNorm and GELU.

    Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning", arXiv 2204.07141
    (https://arxiv.org/abs/2204.07141); official code https://github.com/facebookresearch/msn
    (``init_model``): Linear layers with biases, initialised from a truncated normal (std 0.02)
    with zero biases; 2048 hidden units and 256 outputs for ViT-S/16.

    Example:
        >>> head = msn_projector(192, hidden_dim=64, output_dim=32)
        >>> head(torch.randn(4, 192)).shape
        torch.Size([4, 32])
    """
    head = MLP([in_dim, hidden_dim, hidden_dim, output_dim], batch_norm=use_bn, activation="gelu", bias=True)
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
    return head


@METHODS.register("msn")
class MSN(Method):
    """Masked anchors match the prototype assignment of an unmasked view under an EMA target.

    Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning", arXiv 2204.07141
    (https://arxiv.org/abs/2204.07141); official code https://github.com/facebookresearch/msn.
    View 0 is the target view: it goes unmasked through the target encoder (an EMA copy of
    backbone + projector). The next views with view 1's size (one "random" anchor in the paper)
    go through the online ViT with ``mask_ratio`` of their patches dropped (they never enter the
    encoder, :func:`~selfsup.nn.masking.random_masking`); the remaining, smaller views
    (the paper's focal crops) go through unmasked, as in the official code. Anchor and target
    class tokens are projected, scored against shared learnable prototypes by cosine similarity
    and compared with :class:`~selfsup.losses.msn.MSNLoss` (sharpened, Sinkhorn-balanced targets,
    cross-entropy plus mean-entropy maximisation). The target follows the online networks with a
    momentum rising linearly from ``base_momentum`` to ``final_momentum`` over
    ``momentum_horizon`` times the run (the official schedule spans 1.25 runs, so it ends near
    0.9992).

    Defaults are the official ViT-S/16 configuration (``configs/pretrain/msn_vits16.yaml``): 1024
    prototypes, projector 2048-2048-256 with BatchNorm, ``tau`` 0.1, sharpening ``T`` 0.25,
    3 Sinkhorn steps, ME-MAX weight 1, mask ratio 0.15 (the paper uses 0.3-0.7 for larger ViTs),
    momentum 0.996 -> 1. Prototypes get no weight decay. Not reproduced: the per-sample masks
    here are independent (the official code draws one per batch), the official sum over processes
    of the prototypes' gradient, and the optimisation recipe (AdamW with weight decay 0.04 -> 0.4,
    gradient clipping 3). ``StepOutput.features`` (for the online probe) are the target backbone's
    features of view 0, which cost nothing extra; MSN evaluates that encoder.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = MSN(backbone, num_prototypes=64, hidden_dim=32, output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16)] * 2 + [torch.randn(8, 3, 8, 8)] * 2  # target, anchor, 2 focal views (8 px)
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> sorted(out.logs)
        ['cross_entropy', 'regularizer']
    """

    card = MethodCard(
        label="MSN", year=2022, authors="Assran et al.",
        title="Masked Siamese Networks for Label-Efficient Learning", paper="https://arxiv.org/abs/2204.07141",
        code="https://github.com/facebookresearch/msn", family="distillation", views="msn", backbones=("vit",),
        summary="masked and focal anchor views predict an EMA target's sharpened prototype assignment",
        small=dict(num_prototypes=64, hidden_dim=32, output_dim=16), small_views=dict(num_focal=2),
        cpu=dict(hidden_dim=512), cpu_views=dict(num_focal=4),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_prototypes: int = 1024,
        hidden_dim: int = 2048,
        output_dim: int = 256,
        use_bn: bool = True,
        temperature: float = 0.1,
        sharpen_temperature: float = 0.25,
        sinkhorn_iterations: int = 3,
        regularization_weight: float = 1.0,
        mask_ratio: float = 0.15,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        momentum_horizon: float = 1.25,
        prior: str = "uniform",
        power_law_exponent: float = 0.25,
    ) -> None:
        super().__init__(backbone)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"{type(self).__name__} mask_ratio must be in [0, 1), got {mask_ratio}")
        self.head = msn_projector(self.feature_dim, hidden_dim, output_dim, use_bn)
        self.prototypes = CosinePrototypes(num_prototypes, output_dim)
        self.teacher = MomentumTeacher(
            {"backbone": self.backbone, "head": self.head}, base_momentum=base_momentum,
            final_momentum=final_momentum, schedule="linear", horizon=momentum_horizon, owner=type(self).__name__,
        )
        self.criterion = MSNLoss(
            temperature, sharpen_temperature, sinkhorn_iterations, regularization_weight, prior, power_law_exponent
        )
        self.mask_ratio = mask_ratio

    def _check_views(self, views: list[Tensor]) -> None:
        """Raise a clear error unless there are >= 2 views of one batch size with patch-multiple sides."""
        if len(views) < 2:
            raise ValueError(f"{type(self).__name__} needs a target view and at least one anchor view, got {len(views)}")
        p = self.backbone.patch_size
        for i, view in enumerate(views):
            if view.shape[-2] % p or view.shape[-1] % p or len(view) != len(views[0]):
                raise ValueError(
                    f"{type(self).__name__}: view {i} is {tuple(view.shape)}; every view needs the same batch size "
                    f"and sides that are multiples of the patch size {p} (set the recipe's size / focal_size)"
                )

    def num_masked_views(self, views: list[Tensor]) -> int:
        """How many anchor views (from view 1 on) have view 1's size: those are masked."""
        count = 1
        while 1 + count < len(views) and views[1 + count].shape[-2:] == views[1].shape[-2:]:
            count += 1
        return count

    def masked_anchor_features(self, images: Tensor) -> Tensor:
        """Online class tokens ``(B, D)`` of ``images`` with ``mask_ratio`` of each one's patches dropped."""
        p = self.backbone.patch_size
        num_patches = (images.shape[-2] // p) * (images.shape[-1] // p)
        keep, _, _ = random_masking(len(images), num_patches, self.mask_ratio, images.device)
        return self.backbone.forward_tokens(images, keep=keep)[:, 0]

    def training_step(self, batch: ViewBatch) -> StepOutput:
        views = batch.views
        self._check_views(views)
        n = len(views[0])
        with torch.no_grad():
            target_features = self.teacher["backbone"](views[0])
            target = self.teacher["head"](target_features)
        masked = self.num_masked_views(views)
        anchors = [self.head(self.masked_anchor_features(torch.cat(views[1:1 + masked])))]
        if len(views) > 1 + masked:
            anchors.append(self.head(forward_by_resolution(self.backbone, views[1 + masked:])))
        anchor_scores = self.prototypes(torch.cat(anchors)).reshape(len(views) - 1, n, -1)
        terms = self.criterion.terms(anchor_scores, self.prototypes(target))
        logs = {"cross_entropy": terms["cross_entropy"].detach(), "regularizer": terms["regularizer"].detach()}
        return StepOutput(loss=terms["loss"], features=target_features, logs=logs)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The usual decay / no-decay split, plus the prototypes without weight decay or LARS."""
        others = ((name, p) for name, p in self.named_parameters() if not name.startswith("prototypes."))
        groups = decay_groups(others, weight_decay)
        groups.append({"name": "prototypes", "params": [self.prototypes.weight], "weight_decay": 0.0,
                       "lars_exclude": True})
        return groups
