"""SimMIM: "SimMIM: A Simple Framework for Masked Image Modeling".

Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu, 2021. https://arxiv.org/abs/2111.09886
Official code: https://github.com/microsoft/SimMIM
"""
from __future__ import annotations

import torch
from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.backbones.swin import SwinTransformer
from selfsup.backbones.vit import VisionTransformer
from selfsup.losses.simmim import SimMIMLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch, decay_groups
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.masking import block_random_mask
from selfsup.nn.patches import unpatchify


@METHODS.register("simmim")
class SimMIM(Method):
    """Masked patches become a learned mask token; a linear head predicts their raw pixels.

    Each image masks ``mask_ratio`` of its ``mask_patch_size`` pixel squares at random
    (:func:`selfsup.nn.masking.block_random_mask`); every patch token goes through the encoder,
    masked ones replaced by the ViT's mask token plus their position
    (``backbone.forward_tokens(mask=...)``). A one-layer linear head maps each output patch
    token to its ``p x p x C`` pixels (the official 1x1 convolution and pixel shuffle, up to the
    order of the outputs), and :class:`~selfsup.losses.simmim.SimMIMLoss` is the L1 distance to
    the normalised input pixels over masked pixels only. Defaults are the paper's (Sec. 3-4 and
    the official ViT-B / Swin configs): mask ratio 0.6 with 32 px mask patches (at 192-224 px;
    recipes scale the mask patch with the image and it must be a multiple of the ViT patch
    and divide the view size); views: crop with scale (0.67, 1) and flip (``simmim``). The
    paper's ViT also has relative position bias and layer scale, which the library's ViT does
    not.

    Representation (``representation = "avg"``): the loss reaches only the final patch tokens (the
    head reads nothing else), so the final class token gets no gradient; evaluation, the online
    probe and exports use the mean of the final patch tokens of the unmasked image, as the
    official ViT fine-tuning does (``USE_MEAN_POOLING: True`` in
    ``configs/vit_base__800ep/simmim_finetune__vit_base__img224__800ep.yaml``; its
    ``models/vision_transformer.py`` averages ``x[:, 1:]``). With ``online_probe`` it is computed
    for ``views[0]`` without gradient for the engine's online probe.

    With a :class:`~selfsup.backbones.swin.SwinTransformer` (``swin_tiny``; Liu et al. 2021,
    arXiv 2103.14030), as in the paper: masked patch embeddings become the Swin's mask token
    before its first stage, and the head is the official 1x1 convolution to ``stride^2 * C``
    channels plus a pixel shuffle by the Swin's total stride (32 for Swin-T), applied to the last
    feature map; views must then be multiples of that stride, and the features are the
    average-pooled last stage (the Swin's own pooling, which the head's loss trains).

    Args:
        backbone: a :class:`~selfsup.backbones.vit.VisionTransformer` or a
            :class:`~selfsup.backbones.swin.SwinTransformer`.
        mask_ratio: fraction of mask patches masked per image.
        mask_patch_size: side of a mask patch in pixels.
        online_probe: return the unmasked image's pooled features for the engine's online probe.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = SimMIM(backbone, mask_patch_size=8)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape
        (torch.Size([]), torch.Size([8, 96]))
    """

    card = MethodCard(
        label="SimMIM", year=2021, authors="Xie et al.",
        title="SimMIM: A Simple Framework for Masked Image Modeling", paper="https://arxiv.org/abs/2111.09886",
        code="https://github.com/microsoft/SimMIM", family="masked image modelling", views="simmim",
        backbones=("vit", "swin"),
        summary="mask-token ViT input, linear head regresses masked pixels with L1",
        small=dict(mask_patch_size=8),
    )
    representation = "avg"

    def __init__(
        self,
        backbone: Backbone,
        *,
        mask_ratio: float = 0.6,
        mask_patch_size: int = 32,
        online_probe: bool = True,
    ) -> None:
        super().__init__(backbone)
        if not 0.0 < mask_ratio <= 1.0:
            raise ValueError(f"SimMIM needs mask_ratio in (0, 1], got {mask_ratio}")
        self.swin = isinstance(backbone, SwinTransformer)
        if mask_patch_size < 1 or mask_patch_size % backbone.patch_size:
            raise ValueError(
                f"SimMIM needs mask_patch_size to be a multiple of the {'Swin' if self.swin else 'ViT'} patch size "
                f"{backbone.patch_size}, "
                f"got {mask_patch_size}"
            )
        self.mask_ratio, self.mask_patch_size = mask_ratio, mask_patch_size
        self.online_probe = online_probe
        self.channels = backbone.patch_embed.in_channels
        if self.swin:  # official: Conv2d(num_features, stride^2 * C, 1) + PixelShuffle(stride)
            stride = backbone.stride
            self.head: nn.Module = nn.Sequential(
                nn.Conv2d(self.feature_dim, stride ** 2 * self.channels, 1), nn.PixelShuffle(stride))
        else:
            self.head = nn.Linear(self.feature_dim, backbone.patch_size ** 2 * self.channels)
        self.criterion = SimMIMLoss()

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """The usual split, with the class token and a learned position table also free of weight
        decay (the official ViT's ``no_weight_decay``: ``pos_embed``, ``cls_token``; for a Swin the
        official ``relative_position_bias_table`` and ``mask_token``)."""
        no_decay = {"backbone.cls_token", "backbone.pos_embed"}
        named = list(self.named_parameters())
        if self.swin:
            no_decay = {n for n, _ in named if n == "backbone.mask_token" or n.endswith("relative_position_bias_table")}
        groups = decay_groups([(n, q) for n, q in named if n not in no_decay], weight_decay)
        groups[1]["params"] += [q for n, q in named if n in no_decay and q.requires_grad]
        return groups

    def sample_mask(self, batch_size: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """``(B, N)`` token mask (True = masked) for views of ``height x width`` pixels."""
        s, p = self.mask_patch_size, self.backbone.patch_size
        if height % s or width % s:
            raise ValueError(
                f"SimMIM: the view size {height}x{width} is not a multiple of mask_patch_size={s}; "
                "set method.mask_patch_size to a divisor of the view size (and a multiple of the ViT patch)"
            )
        stride = self.backbone.stride if self.swin else p
        if height % stride or width % stride:
            raise ValueError(
                f"SimMIM: the view size {height}x{width} is not a multiple of the Swin's total stride {stride} "
                "(its head pixel-shuffles the last feature map by the stride); use a view size that is a multiple of it"
            )
        return block_random_mask(batch_size, height // p, width // p, s // p, self.mask_ratio, device)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        images = batch.views[0]
        b, _, h, w = images.shape
        p = self.backbone.patch_size
        mask = self.sample_mask(b, h, w, images.device)
        reconstruction = self.reconstruct(images, mask)
        pixel_mask = mask.reshape(b, h // p, w // p).repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)
        loss = self.criterion(reconstruction, images, pixel_mask)
        features = None
        if self.online_probe:
            with torch.no_grad():
                features = self.backbone(images)
        return StepOutput(loss=loss, features=features)

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pixels predicted from ``images`` with the tokens of ``mask`` replaced by the mask token.

        ViT: mask token at the input, a linear head per patch token, unpatchified. Swin: mask token
        at the input, the official 1x1 conv + pixel shuffle on the last feature map.
        """
        if self.swin:
            swin: SwinTransformer = self.backbone  # type: ignore[assignment]
            return self.head(swin.forward_features(images, mask=mask))
        vit: VisionTransformer = self.backbone  # type: ignore[assignment]
        _, c, h, w = images.shape
        tokens = vit.forward_tokens(images, mask=mask)[:, vit.num_prefix:]
        return unpatchify(self.head(tokens), vit.patch_size, h, w, c)
