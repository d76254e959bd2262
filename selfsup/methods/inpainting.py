"""Context Encoders: "Context Encoders: Feature Learning by Inpainting".

Pathak, Krahenbuhl, Donahue, Darrell, Efros, CVPR 2016. https://arxiv.org/abs/1604.07379
Official code: https://github.com/pathak22/context-encoder
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.losses.inpainting import InpaintingLoss, hidden_pixels_loss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.region_mask import random_region_mask

MASKS = ("random_region", "centre")


def centre_box(size: int, hole_fraction: float) -> tuple[int, int]:
    """``(start, side)`` of the centred square whose side is ``hole_fraction`` of ``size`` (rounded, >= 1).

    Example:
        >>> centre_box(128, 0.5)
        (32, 64)
    """
    side = max(1, round(size * hole_fraction))
    return (size - side) // 2, side


class InpaintingDecoder(nn.Module):
    """Backbone feature map -> the pixels of a ``side x side`` square (the centre, or the whole image
    for random regions): a 1x1 convolution to ``width`` channels, a bilinear resize to ``side``, two
    3x3 convolutions with BatchNorm and ReLU, a 3x3 convolution to the image's channels. (The paper's
    decoder, for AlexNet's 6x6 map, is a channel-wise fully connected layer and five up-convolutions;
    this one takes any backbone's map.)"""

    def __init__(self, in_dim: int, out_channels: int, width: int = 64) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_dim, width, kernel_size=1)
        self.refine = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 3, padding=1),
        )

    def forward(self, feature_map: torch.Tensor, side: int) -> torch.Tensor:
        x = F.interpolate(self.reduce(feature_map), size=(side, side), mode="bilinear", align_corners=False)
        return self.refine(x)


@METHODS.register("inpainting")
class Inpainting(Method):
    """Hide part of each image and regress its pixels from the visible context.

    ``mask = "random_region"`` (the default): smooth blobs of arbitrary shape hide ``region_fraction``
    (a quarter) of each image (:func:`~selfsup.nn.region_mask.random_region_mask`); the decoder
    predicts the whole image and the loss is the squared error over the hidden pixels
    (:func:`~selfsup.losses.hidden_pixels_loss`, the paper's Eq. 1). The paper (Sec. 3.3) finds these
    masks give "a similarly general feature" to random blocks, "significantly outperforming" the
    central region, and uses them "for all our feature based experiments": a central hole lets the
    network learn low-level features that latch onto the hole's fixed boundary.

    ``mask = "centre"``: the centred square of side ``hole_fraction`` of the image (the paper's 64 of
    128 pixels, its semantic-inpainting setting) is hidden except for a border ``overlap`` pixels wide
    (defaults to the paper's 4 of 64 centre pixels, scaled to the centre's side); the decoder predicts
    the centre and :class:`~selfsup.losses.InpaintingLoss` weighs the visible border
    ``overlap_weight`` (10) times more.

    Hidden pixels are set to 0 in the normalised view, the data set's mean colour, as the paper fills
    them with the mean. The decoder (:class:`InpaintingDecoder`) reads the backbone's feature map.
    Reconstruction only: the paper's adversarial term is not implemented. A ViT is evaluated and
    exported on its mean patch token (``representation = "avg"``), the output the decoder trains. The
    online probe reads the pooled map of the masked image.

    Example:
        >>> method = Inpainting(selfsup.backbones.get("resnet_tiny", width=4), decoder_width=8)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="Context Encoders", year=2016, authors="Pathak et al.",
        title="Context Encoders: Feature Learning by Inpainting", paper="https://arxiv.org/abs/1604.07379",
        code="https://github.com/pathak22/context-encoder", family="pretext task", views="crop_flip",
        backbones=("resnet", "vit", "swin"),
        summary="regress the pixels of hidden random regions (or the centre) from the context (L2, no adversary)",
        small=dict(decoder_width=8),
    )
    representation = "avg"  # a ViT: the decoder reads the patch tokens (the feature map), not the class token

    def __init__(
        self,
        backbone: Backbone,
        *,
        mask: str = "random_region",
        region_fraction: float = 0.25,
        region_cells: int = 8,
        hole_fraction: float = 0.5,
        overlap: int | None = None,
        overlap_weight: float = 10.0,
        decoder_width: int = 64,
    ) -> None:
        super().__init__(backbone)
        if mask not in MASKS:
            raise ValueError(f"Inpainting's mask must be one of {', '.join(MASKS)}, got {mask!r}")
        if not 0.0 < region_fraction < 1.0 or region_cells < 2:
            raise ValueError(f"Inpainting needs 0 < region_fraction < 1 and region_cells >= 2, got "
                             f"{region_fraction}, {region_cells}")
        if not 0.0 < hole_fraction < 1.0 or overlap_weight <= 0 or (overlap is not None and overlap < 0):
            raise ValueError(f"Inpainting needs 0 < hole_fraction < 1, overlap >= 0 and overlap_weight > 0, got "
                             f"{hole_fraction}, {overlap}, {overlap_weight}")
        channels = int(backbone.config.get("in_channels", 3))
        self.decoder = InpaintingDecoder(self.feature_dim, channels, decoder_width)
        self.mask, self.region_fraction, self.region_cells = mask, region_fraction, region_cells
        self.hole_fraction, self.overlap, self.overlap_weight = hole_fraction, overlap, overlap_weight
        self._criteria: dict[int, InpaintingLoss] = {}  # one per visible border width (views of one size: one)

    def overlap_for(self, side: int) -> int:
        """The visible border of a centre of ``side`` pixels (the paper's 4 of 64 unless given)."""
        overlap = round(side * 4 / 64) if self.overlap is None else self.overlap
        return min(overlap, (side - 1) // 2)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """The reconstruction loss of the first view's hidden pixels.

        Example:
            >>> method = Inpainting(selfsup.backbones.get("resnet_tiny", width=4), decoder_width=8)
            >>> views = [torch.randn(8, 3, 16, 16)]
            >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
            >>> method.training_step(batch).loss.backward()
        """
        x = batch.views[0]
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"Inpainting needs square views, got {tuple(x.shape)}")
        if self.mask == "random_region":
            hidden_pixels = random_region_mask(x.shape[0], x.shape[-1], self.region_fraction, self.region_cells,
                                               device=x.device)
            feature_map = self.backbone.feature_map(x.masked_fill(hidden_pixels, 0.0))
            loss = hidden_pixels_loss(self.decoder(feature_map, x.shape[-1]), x, hidden_pixels)
        else:
            feature_map, loss = self.centre_loss(x)
        return StepOutput(loss=loss, features=feature_map.mean(dim=(2, 3)))

    def centre_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The feature map of ``x`` with its centre hidden, and the weighted loss of the predicted centre."""
        start, side = centre_box(x.shape[-1], self.hole_fraction)
        border = self.overlap_for(side)
        target = x[..., start:start + side, start:start + side]
        hidden = x.clone()
        hidden[..., start + border:start + side - border, start + border:start + side - border] = 0.0
        feature_map = self.backbone.feature_map(hidden)
        prediction = self.decoder(feature_map, side)
        criterion = self._criteria.setdefault(border, InpaintingLoss(border, self.overlap_weight))
        return feature_map, criterion(prediction, target)
