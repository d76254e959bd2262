"""MaskFeat: "Masked Feature Prediction for Self-Supervised Visual Pre-Training".

Wei, Fan, Xie, Wu, Yuille, Feichtenhofer, 2021. https://arxiv.org/abs/2112.09133
Official code: https://github.com/facebookresearch/SlowFast (``projects/maskfeat``)
"""
from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.backbones.vit import VisionTransformer
from selfsup.losses.maskfeat import MaskedFeatureLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.block_masking import block_masks
from selfsup.nn.hog import HOG


@METHODS.register("maskfeat")
class MaskFeat(Method):
    """A ViT sees its image with some patches replaced by the mask token and regresses, through
    one linear layer on each output patch token, the HOG features of the masked patches.

    Defaults are the paper's ImageNet ViT setting (Sec. 4 and the official ``masked.py``):
    BEiT's block-wise masking of 40% of the patches (blocks of at least 16 patches, aspect ratio
    0.3 to 1/0.3; see :func:`~selfsup.nn.block_masking.block_mask`, which may fall a patch or two
    short of 40%, as BEiT's generator), masked patches replaced by a learned mask token in the
    encoder (``forward_tokens(mask=...)``), HOG per RGB channel with 9 orientation bins on 8x8
    pixel cells L2-normalised per cell (:class:`~selfsup.nn.hog.HOG`, computed batched on the
    device from the normalised view), a linear head from each final patch token to its patch's
    ``C * 9 * (p / 8)^2`` HOG values, and the mean squared error on masked patches only
    (:class:`~selfsup.losses.maskfeat.MaskedFeatureLoss`). ``cell_size`` must divide the patch
    size: on small images scale it with the patch (the recipes use 2 px cells for 4 px patches,
    the paper's 2x2 cells per patch). The online probe is not fed (the only forward pass is the
    masked one).

    Representation (``representation = "avg"``): the head reads only the final patch tokens, so
    the final class token gets no gradient; evaluation and exports use the mean of the final patch
    tokens of the unmasked image, as the official ViT fine-tuning
    (``configs/masked_ssl/in1k_VIT_B_MaskFeat_FT.yaml``: ``USE_MEAN_POOLING: True``).

    Args:
        backbone: a :class:`~selfsup.backbones.vit.VisionTransformer`.
        mask_ratio: fraction of patches to mask (0.4).
        min_block_patches: smallest masked block, in patches (16 on a 14x14 grid).
        nbins: HOG orientation bins (9).
        cell_size: HOG cell side in pixels (8).
        hog_normalize: ``"cell"`` (official code), ``"patch"`` or ``"none"``.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = MaskFeat(backbone, cell_size=2, min_block_patches=4)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape
        torch.Size([])
    """

    card = MethodCard(
        label="MaskFeat", year=2021, authors="Wei et al.",
        title="Masked Feature Prediction for Self-Supervised Visual Pre-Training",
        paper="https://arxiv.org/abs/2112.09133", code="https://github.com/facebookresearch/SlowFast",
        family="masked image modelling", views="crop_flip", backbones=("vit",),
        summary="predict the HOG features of block-masked ViT patches",
        small=dict(cell_size=2, min_block_patches=4),
    )
    representation = "avg"

    def __init__(
        self,
        backbone: Backbone,
        *,
        mask_ratio: float = 0.4,
        min_block_patches: int = 16,
        nbins: int = 9,
        cell_size: int = 8,
        hog_normalize: str = "cell",
    ) -> None:
        super().__init__(backbone)
        if not 0.0 < mask_ratio < 1.0 or min_block_patches < 1:
            raise ValueError(
                f"MaskFeat needs 0 < mask_ratio < 1 and min_block_patches >= 1, got {mask_ratio}, {min_block_patches}"
            )
        if backbone.patch_size % cell_size:
            raise ValueError(
                f"MaskFeat: the HOG cell size ({cell_size}) must divide the patch size ({backbone.patch_size}); "
                f"set method.cell_size (the paper uses 8 px cells in 16 px patches, i.e. patch_size / 2)"
            )
        self.mask_ratio, self.min_block_patches = mask_ratio, min_block_patches
        self.hog = HOG(nbins=nbins, cell_size=cell_size, normalize=hog_normalize)
        channels = backbone.patch_embed.in_channels
        self.head = nn.Linear(self.feature_dim, self.hog.feature_dim(channels, backbone.patch_size))
        self.criterion = MaskedFeatureLoss()

    def sample_mask(self, images: torch.Tensor) -> torch.Tensor:
        """Block-wise masks ``(B, N)`` (True = masked) for the patch grid of ``images``."""
        p = self.backbone.patch_size
        return block_masks(
            images.shape[0], images.shape[-2] // p, images.shape[-1] // p, self.mask_ratio,
            min_num_patches=self.min_block_patches, device=images.device,
        )

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The head's HOG predictions ``(B, N, K)`` for every patch of the masked input."""
        tokens = self.backbone.forward_tokens(images, mask=mask)
        return self.head(tokens[:, self.backbone.num_prefix:])

    def training_step(self, batch: ViewBatch) -> StepOutput:
        images = batch.views[0]
        mask = self.sample_mask(images)
        target = self.hog.patch_features(images, self.backbone.patch_size)
        loss = self.criterion(self.predict(images, mask), target, mask)
        return StepOutput(loss=loss, logs={"mask_ratio": mask.float().mean()})
