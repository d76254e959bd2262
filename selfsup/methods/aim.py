"""AIM: "Scalable Pre-training of Large Autoregressive Image Models".

El-Nouby, Klein, Zhai, Bautista, Toshev, Shankar, Susskind, Joulin, 2024.
https://arxiv.org/abs/2401.08541 ; official code (trunk and probes only): https://github.com/apple/ml-aim
"""
from __future__ import annotations

import torch
from torch import Tensor

from selfsup.backbones.base import Backbone
from selfsup.backbones.vit import VisionTransformer
from selfsup.losses.aim import AIMLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.aim_head import AIMHead
from selfsup.nn.patches import patchify, sincos_position_embedding
from selfsup.nn.prefix_causal_mask import prefix_causal_mask, sample_prefix_lengths


@METHODS.register("aim")
class AIM(Method):
    """Autoregressive next-patch prediction with a ViT under prefix causal attention.

    Each image becomes its raster-ordered patch sequence; a prefix length ``K`` is drawn per image
    uniformly from ``{1, ..., N - 1}``; the trunk runs with :func:`prefix_causal_mask` (the prefix
    attends bidirectionally, later patches causally); the output at patch ``k - 1`` goes through
    :class:`~selfsup.nn.aim_head.AIMHead` (after adding the 2-D sine-cosine position embedding, as
    the paper adds one before the head) and regresses the per-patch normalised pixels of patch
    ``k`` (:class:`~selfsup.losses.aim.AIMLoss`), for the non-prefix patches ``k >= K`` only.
    Defaults are the paper's (Sec. 3): head of 12 blocks, width 2048, expansion 4,
    normalised pixel targets. Departure: the paper's trunk has no class token; this library's ViT
    does, so the class token (and registers) sit before the first patch, inside the prefix. No
    online-probe features are returned: the causal pass is not the evaluation forward.

    Representation (``representation = "avg"``): the loss reaches only the final patch tokens (the
    class token's output feeds no prediction), so evaluation and exports use the mean of the
    final patch tokens of the ordinary bidirectional forward (prefix attention is what lets AIM
    drop the causal mask downstream, Sec. 3). The paper and the official code
    (github.com/apple/ml-aim, ``AttentionPoolingClassifier``) evaluate with an attentive probe
    on the patch features, which needs training; their mean is the frozen-feature stand-in here.

    Args:
        backbone: a :class:`~selfsup.backbones.vit.VisionTransformer`.
        head_width, head_blocks, head_mlp_ratio: the prediction head's size.
        norm_pix: normalise each target patch by its mean and standard deviation.
        head_pos_embed: add the sine-cosine position embedding before the head.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = AIM(backbone, head_width=32, head_blocks=1)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape
        torch.Size([])
    """

    card = MethodCard(
        label="AIM", year=2024, authors="El-Nouby et al.",
        title="Scalable Pre-training of Large Autoregressive Image Models", paper="https://arxiv.org/abs/2401.08541",
        code="https://github.com/apple/ml-aim", family="autoregressive", views="crop_flip", backbones=("vit",),
        summary="predict the next patch in raster order under prefix causal attention",
        small=dict(head_blocks=1, head_width=32),
        cpu=dict(head_width=96, head_blocks=2),
    )
    representation = "avg"

    def __init__(
        self,
        backbone: Backbone,
        *,
        head_width: int = 2048,
        head_blocks: int = 12,
        head_mlp_ratio: float = 4.0,
        norm_pix: bool = True,
        head_pos_embed: bool = True,
    ) -> None:
        super().__init__(backbone)
        channels = backbone.patch_embed.in_channels
        self.head = AIMHead(self.feature_dim, backbone.patch_size ** 2 * channels, head_width, head_blocks, head_mlp_ratio)
        self.criterion = AIMLoss(norm_pix=norm_pix)
        self.head_pos_embed = head_pos_embed

    def trunk(self, images: Tensor, prefix_lengths: Tensor) -> Tensor:
        """Patch outputs ``(B, N, D)`` of the ViT under the prefix causal mask (after the final norm).

        ``prefix_lengths`` counts patches; the class token and registers are put before the first
        patch and always belong to the prefix.
        """
        vit: VisionTransformer = self.backbone  # type: ignore[assignment]
        x = vit.patch_tokens(images)
        special = torch.cat([vit.cls_token, vit.registers], dim=1).expand(x.shape[0], -1, -1)
        x = torch.cat([special, x], dim=1)
        mask = prefix_causal_mask(prefix_lengths + vit.num_prefix, x.shape[1])
        for block in vit.blocks:
            x = block(x, mask)
        return vit.norm(x)[:, vit.num_prefix:]

    def predict(self, features: Tensor, grid: tuple[int, int]) -> Tensor:
        """Head predictions ``(B, N, p*p*C)``; row ``k`` is the prediction of patch ``k + 1``."""
        if self.head_pos_embed:
            pos = sincos_position_embedding(grid[0], grid[1], features.shape[-1]).to(features)
            features = features + pos.unsqueeze(0)
        return self.head(features)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        images = torch.cat(batch.views)
        vit: VisionTransformer = self.backbone  # type: ignore[assignment]
        p = vit.patch_size
        grid = (images.shape[-2] // p, images.shape[-1] // p)
        n = grid[0] * grid[1]
        prefix = sample_prefix_lengths(images.shape[0], n, device=images.device)
        prediction = self.predict(self.trunk(images, prefix), grid)[:, :-1]  # predicts patches 1..N-1
        target = patchify(images, p)[:, 1:]
        positions = torch.arange(1, n, device=images.device)
        loss_mask = positions.view(1, -1) >= prefix.view(-1, 1)  # patch k is a target when k >= K
        loss = self.criterion(prediction, target, loss_mask)
        return StepOutput(loss=loss, features=None, logs={"prefix_mean": prefix.float().mean()})
