"""A2MIM: "Architecture-Agnostic Masked Image Modeling -- From ViT back to CNN".

Li, Wu, Wu, Zang, Li, 2022 (ICML 2023). https://arxiv.org/abs/2205.13943
Official code: https://github.com/Westlake-AI/openmixup
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.backbones.resnet import TorchvisionResNet
from selfsup.backbones.small_resnet import SmallResNet
from selfsup.backbones.vit import VisionTransformer
from selfsup.losses.a2mim import A2MIMLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.a2mim_masking import fill_with_mean_colour, random_block_mask
from selfsup.nn.patches import unpatchify


@METHODS.register("a2mim")
class A2MIM(Method):
    """Reconstruct the pixels of masked blocks from a mean-colour-filled image (ViT variant).

    Per image, ``ceil(mask_ratio * cells)`` random ``mask_patch_size`` blocks are masked
    (:func:`~selfsup.nn.a2mim_masking.random_block_mask`) and filled with the image's mean colour
    (:func:`~selfsup.nn.a2mim_masking.fill_with_mean_colour`); a learnable mask token is *added*
    (not substituted) to the masked patch tokens at the input of block ``mask_layer`` (official
    ``replace=False``); a linear head on the final patch tokens predicts each patch's pixels
    (SimMIM-style 1x1 convolution + pixel shuffle); the loss is
    :class:`~selfsup.losses.a2mim.A2MIMLoss` (L1 on masked pixels + 0.1 x focal frequency loss).
    Defaults are the official ViT-B config (``configs/selfsup/_base_/models/a2mim/vit_base.py``
    and ``datasets/imagenet/a2mim_rgb_m_sz224_bs64.py``): mask ratio 0.6, 32 px mask blocks,
    mask token at layer 0 (after the patch embedding; the paper places it in the middle stage
    for CNNs, and ``mask_layer`` moves it to any block), learnable mask token, FFT weight 0.1.

    Representation (``representation = "avg"``): the decoder reads only the final patch tokens, so
    the final class token gets no gradient; evaluation, the online probe (here the masked views'
    pooled tokens) and exports use the mean of the final patch tokens. Departure: openmixup's ViT
    fine-tuning head reads the class token, which fine-tuning then trains; frozen-feature
    evaluation needs an output the pre-training trained. A ResNet's features are its global
    average pool, likewise trained.

    ResNets (the paper's CNN variant): the mask token, one learnable vector per channel, is added
    at the masked positions (the pixel mask downsampled to the feature map) of the output of
    stage ``mask_layer`` (0 = stem, 1-4 = residual stages; 3 = the middle stage, the paper's
    choice); a 1x1 convolution + pixel shuffle on the last feature map predicts the pixels
    (SimMIM-style decoder). Differences from the official ResNet-50 config: plain L1 instead of
    its focal L1 with sigmoid, and the FFT weight stays an option (the official R50 uses 0.5).

    Args:
        backbone: a :class:`~selfsup.backbones.vit.VisionTransformer` or a selfsup ResNet
            (``resnet18/34/50``, ``resnet_small``, ``resnet_tiny``).
        mask_ratio: share of mask blocks masked per image.
        mask_patch_size: side of a mask block in pixels (a multiple of the ViT patch size).
        mask_layer: ViT: index of the block whose input receives the mask token (0 = first block);
            ResNet: the stage whose output receives it (default None: 0 for ViTs, 3 for ResNets).
        fft_weight: weight of the frequency loss.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = A2MIM(backbone, mask_patch_size=8)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> float(out.logs["mask_share"])  # the share of the image masked
        0.75
    """

    card = MethodCard(
        label="A2MIM", year=2022, authors="Li et al.",
        title="Architecture-Agnostic Masked Image Modeling -- From ViT back to CNN",
        paper="https://arxiv.org/abs/2205.13943", code="https://github.com/Westlake-AI/openmixup",
        family="masked image modelling", views="crop_flip", backbones=("resnet", "vit"),
        summary="mean-colour masking, mask token added mid-network, L1 + Fourier loss",
        small=dict(mask_patch_size=8),
    )
    representation = "avg"

    def __init__(
        self,
        backbone: Backbone,
        *,
        mask_ratio: float = 0.6,
        mask_patch_size: int = 32,
        mask_layer: int | None = None,
        fft_weight: float = 0.1,
    ) -> None:
        super().__init__(backbone)
        self.is_vit = isinstance(backbone, VisionTransformer)
        if self.is_vit:
            mask_layer = 0 if mask_layer is None else mask_layer
            if mask_patch_size % backbone.patch_size or not 0 <= mask_layer < len(backbone.blocks):
                raise ValueError(
                    f"A2MIM needs mask_patch_size a multiple of the patch size {backbone.patch_size} and "
                    f"0 <= mask_layer < depth {len(backbone.blocks)}; got {mask_patch_size}, {mask_layer}"
                )
            self.channels = backbone.patch_embed.in_channels
            self.mask_token = nn.Parameter(torch.zeros(1, 1, self.feature_dim))
            self.decoder = nn.Linear(self.feature_dim, backbone.patch_size ** 2 * self.channels)
        else:
            stages = resnet_stages(backbone)  # TypeError for other backbones
            mask_layer = 3 if mask_layer is None else mask_layer
            if not 0 <= mask_layer < len(stages):
                raise ValueError(f"A2MIM on a ResNet needs 0 <= mask_layer < {len(stages)}, got {mask_layer}")
            self.channels = backbone.config["in_channels"]
            self.mask_token = nn.Parameter(torch.zeros(1, stage_channels(stages[mask_layer]), 1, 1))
            self.stride = output_stride(backbone)
            self.decoder = nn.Conv2d(self.feature_dim, self.stride ** 2 * self.channels, 1)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.mask_ratio, self.mask_patch_size, self.mask_layer = mask_ratio, mask_patch_size, mask_layer
        self.criterion = A2MIMLoss(fft_weight=fft_weight)

    def sample_mask(self, images: Tensor) -> Tensor:
        """Pixel mask ``(B, 1, H, W)`` of random blocks (1 = masked)."""
        b, _, h, w = images.shape
        return random_block_mask(b, h, w, self.mask_patch_size, self.mask_ratio, device=images.device).to(images.dtype)

    def encode_resnet(self, images: Tensor, mask: Tensor) -> Tensor:
        """The last feature map ``(B, C, h, w)`` of mean-filled ``images``, with the mask token added
        at the masked positions of stage ``mask_layer``'s output."""
        x = images
        for index, stage in enumerate(resnet_stages(self.backbone)):
            x = stage(x)
            if index == self.mask_layer:
                x = x + F.interpolate(mask, size=x.shape[-2:], mode="nearest") * self.mask_token
        return x

    def encode(self, images: Tensor, mask: Tensor) -> Tensor:
        """All tokens ``(B, prefix + N, D)`` after the final norm, for mean-filled ``images``.

        ``mask`` is the pixel mask; the mask token is added to the patches it covers at the input
        of block ``mask_layer``.
        """
        vit: VisionTransformer = self.backbone  # type: ignore[assignment]
        p = vit.patch_size
        token_mask = mask[:, 0, ::p, ::p].flatten(1).unsqueeze(-1)  # (B, N, 1), constant within a patch
        x = vit.patch_tokens(images)
        special = torch.cat([vit.cls_token, vit.registers], dim=1).expand(x.shape[0], -1, -1)
        x = torch.cat([special, x], dim=1)
        addition = torch.cat([torch.zeros_like(special[..., :1]), token_mask], dim=1) * self.mask_token
        for index, block in enumerate(vit.blocks):
            if index == self.mask_layer:
                x = x + addition
            x = block(x)
        return vit.norm(x)

    def reconstruct(self, tokens: Tensor, height: int, width: int) -> Tensor:
        """Predicted image ``(B, C, H, W)`` from the patch tokens."""
        vit: VisionTransformer = self.backbone  # type: ignore[assignment]
        patches = self.decoder(tokens[:, vit.num_prefix:])
        return unpatchify(patches, vit.patch_size, height, width, self.channels)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        images = torch.cat(batch.views)
        mask = self.sample_mask(images)
        n = batch.views[0].shape[0]
        if not self.is_vit:
            fmap = self.encode_resnet(fill_with_mean_colour(images, mask), mask)
            reconstruction = F.pixel_shuffle(self.decoder(fmap), self.stride)
            loss = self.criterion(reconstruction, images, mask)
            return StepOutput(loss=loss, features=fmap[:n].mean((2, 3)), logs={"mask_share": mask.mean()})
        tokens = self.encode(fill_with_mean_colour(images, mask), mask)
        reconstruction = self.reconstruct(tokens, images.shape[-2], images.shape[-1])
        loss = self.criterion(reconstruction, images, mask)
        features = self.backbone.pool_tokens(tokens[:n])  # type: ignore[operator]
        return StepOutput(loss=loss, features=features, logs={"mask_share": mask.mean()})


def resnet_stages(backbone: Backbone) -> list[nn.Module]:
    """The stem and the four residual stages of a selfsup ResNet, in order (a TypeError otherwise).

    Example:
        >>> len(resnet_stages(selfsup.backbones.get("resnet_tiny")))
        5
    """
    if isinstance(backbone, TorchvisionResNet):
        stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool)
        return [stem, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    if isinstance(backbone, SmallResNet):
        return [backbone.stem, *backbone.stages]
    raise TypeError(
        f"A2MIM supports VisionTransformer and selfsup ResNet backbones; got {type(backbone).__name__}. "
        "Use e.g. --backbone vit_tiny or --backbone resnet18."
    )


def stage_channels(stage: nn.Module) -> int:
    """Output channels of a ResNet stage: those of its last BatchNorm."""
    norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


def output_stride(backbone: Backbone) -> int:
    """How many input pixels one position of the last feature map spans (8 with a CIFAR stem, else 32)."""
    if isinstance(backbone, TorchvisionResNet):
        return 8 if backbone.config["cifar_stem"] else 32
    return 8  # SmallResNet: stride-1 stem, three stride-2 stages
