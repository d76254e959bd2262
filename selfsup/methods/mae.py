"""MAE: "Masked Autoencoders Are Scalable Vision Learners".

He, Chen, Xie, Li, Dollar, Girshick, 2021. https://arxiv.org/abs/2111.06377
Official code: https://github.com/facebookresearch/mae
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.backbones.vit import VisionTransformer
from selfsup.losses.mae import MAELoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.mae_decoder import MAEDecoder
from selfsup.nn.masking import random_masking
from selfsup.nn.patches import patchify


@METHODS.register("mae")
class MAE(Method):
    """A ViT encodes only the visible patches; a light decoder reconstructs the masked ones.

    Each image masks ``mask_ratio`` of its patches uniformly at random (per sample, by sorting
    uniform noise: :func:`selfsup.nn.masking.random_masking`); only the kept patches (with their
    position embeddings) and the class token go through the encoder
    (``backbone.forward_tokens(keep=...)``). :class:`~selfsup.nn.mae_decoder.MAEDecoder` fills
    the masked positions with a learned mask token and predicts every patch's pixels;
    :class:`~selfsup.losses.mae.MAELoss` is the MSE to the per-patch normalised pixels, averaged
    over masked patches only. Defaults are the paper's (Sec. 3-4, Appendix A.1): mask ratio 0.75,
    decoder width 512, depth 8, 16 heads, ``norm_pix_loss=True``; views: crop (scale 0.2-1) and
    flip only (``crop_flip``). The paper's optimiser (AdamW, betas (0.9, 0.95), lr 1.5e-4 x
    batch / 256, weight decay 0.05) is a recipe setting. The evaluation representation is the
    class token of the unmasked image. The encoder's own mask token is unused and frozen. With
    ``online_probe`` the engine's online probe gets that class token of ``views[0]``, computed
    without gradient (one extra forward of all patches); set it False to save that forward.

    Args:
        backbone: a :class:`~selfsup.backbones.vit.VisionTransformer`.
        mask_ratio: fraction of patches masked per image.
        decoder_embed_dim, decoder_depth, decoder_num_heads, decoder_mlp_ratio: decoder sizes.
        norm_pix_loss: regress per-patch normalised pixels.
        online_probe: return unmasked class-token features for the engine's online probe.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = MAE(backbone, decoder_depth=1, decoder_embed_dim=32, decoder_num_heads=4)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape
        (torch.Size([]), torch.Size([8, 96]))
    """

    card = MethodCard(
        label="MAE", year=2021, authors="He et al.",
        title="Masked Autoencoders Are Scalable Vision Learners", paper="https://arxiv.org/abs/2111.06377",
        code="https://github.com/facebookresearch/mae", family="masked image modelling", views="crop_flip",
        backbones=("vit",),
        summary="encode 25% visible ViT patches, decode and regress the masked pixels",
        small=dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4),
        cpu=dict(decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        mask_ratio: float = 0.75,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        decoder_mlp_ratio: float = 4.0,
        norm_pix_loss: bool = True,
        online_probe: bool = True,
    ) -> None:
        super().__init__(backbone)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"MAE needs mask_ratio in [0, 1), got {mask_ratio}")
        self.mask_ratio = mask_ratio
        self.online_probe = online_probe
        # masked patches are dropped, never replaced: the encoder's mask token is unused, and an
        # unused trainable parameter would break DistributedDataParallel
        backbone.mask_token.requires_grad_(False)
        channels = backbone.patch_embed.in_channels
        self.decoder = MAEDecoder(
            self.feature_dim, backbone.patch_size ** 2 * channels, decoder_embed_dim, decoder_depth,
            decoder_num_heads, decoder_mlp_ratio,
        )
        self.criterion = MAELoss(norm_pix_loss=norm_pix_loss)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        images = batch.views[0]
        vit: VisionTransformer = self.backbone  # type: ignore[assignment]
        p = vit.patch_size
        grid_h, grid_w = images.shape[-2] // p, images.shape[-1] // p
        keep, mask, restore = random_masking(images.shape[0], grid_h * grid_w, self.mask_ratio, images.device)
        latent = vit.forward_tokens(images, keep=keep)
        prediction = self.decoder(latent, restore, vit.num_prefix, grid_h, grid_w)
        loss = self.criterion(prediction, patchify(images, p), mask)
        features = None
        if self.online_probe:
            with torch.no_grad():
                features = vit(images)
        return StepOutput(loss=loss, features=features)
