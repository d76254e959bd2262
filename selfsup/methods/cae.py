"""CAE: "Context Autoencoder for Self-Supervised Representation Learning".

Chen, Ding, Wang, Xin, Mo, Wang, Han, Luo, Zeng, Wang, 2022. https://arxiv.org/abs/2202.03026
Official code: https://github.com/Atten4Vis/CAE (also PaddlePaddle/VIMER/CAE)
"""
from __future__ import annotations

import torch
from torch import Tensor

from selfsup.backbones.base import Backbone
from selfsup.backbones.vit import VisionTransformer
from selfsup.losses.cae import CAELoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.block_masking import block_masks
from selfsup.nn.cae_regressor import CAEDecoder, LatentRegressor
from selfsup.nn.patches import patchify, sincos_position_embedding


def _gather(x: Tensor, index: Tensor) -> Tensor:
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


@METHODS.register("cae")
class CAE(Method):
    """Context autoencoder: encode the visible patches, regress the masked patches' latents from
    them, align those with the encoder's own latents of the masked patches, decode the masked
    patches.

    Per image: block-wise masking of exactly ``num_masked`` patches
    (:func:`~selfsup.nn.block_masking.block_mask` with ``exact=True``, CAE's generator); the
    ViT encodes only the visible patches (``forward_tokens(keep=...)``, the masked ones never
    enter it); :class:`~selfsup.nn.cae_regressor.LatentRegressor` turns one mask-token query per
    masked patch into a predicted latent by cross-attention to the visible latents (class token
    left out, as the official code) with fixed 2-D sine-cosine positions; the alignment target is
    the same encoder run on the masked patches only, without gradient (the official
    ``alignment_encoder`` shares the encoder's parameter storage, i.e. momentum 0; no EMA);
    :class:`~selfsup.nn.cae_regressor.CAEDecoder` maps the predicted latents to the masked
    patches' targets. Loss :class:`~selfsup.losses.cae.CAELoss`: reconstruction ``+ 2 *``
    alignment MSE.

    Deviation: the paper's decoder predicts DALL-E tokenizer ids (cross-entropy over 8192
    classes); here, as in several reimplementations, it regresses the masked patches' pixels
    normalised per patch (MSE), so no tokenizer is needed. Other defaults are the official
    ViT-B settings (``tools/run_pretraining.py``): 98 of 196 patches masked (50%), blocks of at
    least 16 patches, regressor and decoder depth 4 at the encoder's width and head count, layer
    scale 0.1, alignment weight 2. The online probe is not fed.

    Representation (``representation = "avg"``): the regressor reads the visible patch latents
    only (the class token is dropped before it, as in the official ``modeling_cae.py``), so the
    final class token gets no gradient; evaluation and exports use the mean of the final patch
    tokens of the unmasked image, the official fine-tuning pooling (``use_mean_pooling``, default
    on in ``tools/run_class_finetuning.py``). Departure: the official *linear* probe
    (``tools/run_linear.py``, ``linear_type='standard'``) reads the un-normalised class token and
    its attentive probe cross-attends to all tokens; neither is the output CAE's loss trains.

    Args:
        backbone: a :class:`~selfsup.backbones.vit.VisionTransformer`.
        mask_ratio: fraction of patches masked, rounded to a count (0.5).
        min_block_patches: smallest masked block in patches (16 on a 14x14 grid).
        regressor_depth, decoder_depth: blocks (4, 4).
        num_heads: heads of the regressor and decoder (default: the encoder's).
        layer_scale: initial layer scale of the regressor and decoder (0.1).
        align_weight: ``lambda`` (2).
        norm_pix: normalise the pixel targets per patch (True).

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = CAE(backbone, min_block_patches=4, regressor_depth=1, decoder_depth=1)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> sorted(out.logs)
        ['alignment', 'reconstruction']
    """

    card = MethodCard(
        label="CAE", year=2022, authors="Chen et al.",
        title="Context Autoencoder for Self-Supervised Representation Learning",
        paper="https://arxiv.org/abs/2202.03026", code="https://github.com/Atten4Vis/CAE",
        family="masked image modelling", views="crop_flip", backbones=("vit",),
        summary="regress masked latents by cross-attention, align them, decode normalised pixels",
        small=dict(min_block_patches=4, regressor_depth=1, decoder_depth=1),
        cpu=dict(regressor_depth=2, decoder_depth=2),
    )
    representation = "avg"

    def __init__(
        self,
        backbone: Backbone,
        *,
        mask_ratio: float = 0.5,
        min_block_patches: int = 16,
        regressor_depth: int = 4,
        decoder_depth: int = 4,
        num_heads: int | None = None,
        layer_scale: float = 0.1,
        align_weight: float = 2.0,
        norm_pix: bool = True,
    ) -> None:
        super().__init__(backbone)
        if not 0.0 < mask_ratio < 1.0 or min_block_patches < 1 or regressor_depth < 1 or decoder_depth < 0:
            raise ValueError(
                "CAE needs 0 < mask_ratio < 1, min_block_patches >= 1, regressor_depth >= 1 and decoder_depth >= 0; "
                f"got {mask_ratio}, {min_block_patches}, {regressor_depth}, {decoder_depth}"
            )
        dim, heads = self.feature_dim, num_heads or backbone.blocks[0].heads
        self.mask_ratio, self.min_block_patches = mask_ratio, min_block_patches
        self.regressor = LatentRegressor(dim, regressor_depth, heads, layer_scale=layer_scale)
        channels = backbone.patch_embed.in_channels
        self.decoder = CAEDecoder(dim, backbone.patch_size ** 2 * channels, decoder_depth, heads, layer_scale=layer_scale)
        self.criterion = CAELoss(align_weight, norm_pix)

    def sample_mask(self, images: Tensor) -> Tensor:
        """Block-wise masks ``(B, N)`` with exactly ``round(mask_ratio * N)`` True per row."""
        p = self.backbone.patch_size
        return block_masks(
            images.shape[0], images.shape[-2] // p, images.shape[-1] // p, self.mask_ratio,
            min_num_patches=self.min_block_patches, exact=True, device=images.device,
        )

    def forward_parts(self, images: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Everything the loss needs, for masks with the same count per row.

        Returns ``visible`` (B, V, D) encoder latents of the visible patches, ``pred_latents`` and
        ``target_latents`` (B, M, D), ``pred_pixels`` and ``target_pixels`` (B, M, p*p*C, raw), and
        the raster indices ``visible_index`` (B, V) and ``masked_index`` (B, M).
        """
        counts = mask.sum(1)
        if not bool((counts == counts[0]).all()) or int(counts[0]) in (0, mask.shape[1]):
            raise ValueError("CAE needs the same number of masked patches in every row, and at least one of each")
        num_visible = mask.shape[1] - int(counts[0])
        order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices  # visible first, raster order
        visible_index, masked_index = order[:, :num_visible], order[:, num_visible:]
        vit, prefix, p = self.backbone, self.backbone.num_prefix, self.backbone.patch_size
        visible = vit.forward_tokens(images, keep=visible_index)[:, prefix:]
        with torch.no_grad():
            target_latents = vit.forward_tokens(images, keep=masked_index)[:, prefix:]
        table = sincos_position_embedding(images.shape[-2] // p, images.shape[-1] // p, self.feature_dim)
        table = table.to(visible).unsqueeze(0).expand(images.shape[0], -1, -1)
        pos_visible, pos_masked = _gather(table, visible_index), _gather(table, masked_index)
        pred_latents = self.regressor(visible, pos_visible, pos_masked)
        return {
            "visible": visible, "pred_latents": pred_latents, "target_latents": target_latents,
            "pred_pixels": self.decoder(pred_latents, pos_masked),
            "target_pixels": _gather(patchify(images, p), masked_index),
            "visible_index": visible_index, "masked_index": masked_index,
        }

    def training_step(self, batch: ViewBatch) -> StepOutput:
        images = batch.views[0]
        parts = self.forward_parts(images, self.sample_mask(images))
        loss, recon, align = self.criterion(
            parts["pred_pixels"], parts["target_pixels"], parts["pred_latents"], parts["target_latents"],
        )
        return StepOutput(loss=loss, logs={"reconstruction": recon.detach(), "alignment": align.detach()})
