"""DINOv2: "Learning Robust Visual Features without Supervision".

Oquab, Darcet, Moutakanni, Vo, Szafraniec, Khalidov, Fernandez, Haziza, Massa, El-Nouby, et al.,
2023. https://arxiv.org/abs/2304.07193
Official code: https://github.com/facebookresearch/dinov2
"""
from __future__ import annotations

from typing import Any

import torch

from selfsup.backbones.base import Backbone
from selfsup.methods.card import MethodCard
from selfsup.methods.ibot import iBOT
from selfsup.methods.registry import METHODS
from selfsup.nn.block_masking import ibot_masks


@METHODS.register("dinov2")
class DINOv2(iBOT):
    """iBOT's class and masked-patch self-distillation plus the KoLeo regulariser.

    Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision", arXiv
    2304.07193 (https://arxiv.org/abs/2304.07193), Sec. 4; official code
    https://github.com/facebookresearch/dinov2 (``ssl_default_config.yaml``, ``ssl_meta_arch.py``).
    Differences from :class:`~selfsup.methods.ibot.iBOT`, all from the official default config:
    exactly half of each global view's images are masked, with ratios stratified over [0.1, 0.5]
    and blocks of 4 to N/2 patches; one head (65,536 outputs) for class and patch tokens with
    separate centres, the patch centre updated from masked patches only; teacher temperature 0.04
    -> 0.07 over 30 epochs for both; teacher momentum 0.992 -> 1; plus ``koleo_weight`` (0.1) times
    the KoLeo loss (:class:`~selfsup.losses.koleo.KoLeoLoss`) of the student's backbone class
    tokens, summed over the global views. ``centering="sinkhorn_knopp"`` replaces both centres by
    Sinkhorn-Knopp teacher codes (the paper's choice, the config's option). Not part of the
    method here: layer scale, the larger drop-path, layer-wise lr decay, the weight-decay schedule
    and gradient clipping of the official recipe.

    Options: the four below set DINOv2's defaults; every other option is iBOT's, with iBOT's
    default (e.g. ``cls_loss_weight`` and ``patch_loss_weight`` weigh the DINO and iBOT terms,
    ``centering``, ``mask_ratio``, ``num_global_views``), and the config check lists them all.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = DINOv2(backbone, out_dim=32, hidden_dim=16, bottleneck_dim=8)
        >>> views = [torch.randn(8, 3, 16, 16)] * 2 + [torch.randn(8, 3, 8, 8)] * 2  # 2 global (16 px), 2 local views (8 px)
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> sorted(out.logs)
        ['loss_cls', 'loss_koleo', 'loss_patch', 'mask_fraction', 'teacher_temp']
    """

    card = MethodCard(
        label="DINOv2", year=2023, authors="Oquab et al.",
        title="DINOv2: Learning Robust Visual Features without Supervision", paper="https://arxiv.org/abs/2304.07193",
        code="https://github.com/facebookresearch/dinov2", family="distillation", views="dino", backbones=("vit",),
        summary="DINO + iBOT losses + KoLeo, optional Sinkhorn-Knopp centring",
        small=dict(out_dim=32, hidden_dim=16, bottleneck_dim=8), small_views=dict(local_size=8, num_local=2),
        # cpu: DINOv2 / iBOT run their head on every patch token of the global views, so the head's size, not
        # the ViT's, sets the pace: with hidden 512 / out 1,024 a first run went at 112 images/s (~32 min
        # for 4 epochs; stopped), so the head is cut to hidden 256, bottleneck 128, out 512
        cpu=dict(out_dim=512, hidden_dim=256, bottleneck_dim=128), cpu_views=dict(num_local=4),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        out_dim: int = 65536,
        base_momentum: float = 0.992,
        center_masked_patches_only: bool = True,
        koleo_weight: float = 0.1,
        **options: Any,
    ) -> None:
        """DINOv2's defaults; every other option (``options``) is :class:`~selfsup.methods.ibot.iBOT`'s."""
        super().__init__(backbone, out_dim=out_dim, base_momentum=base_momentum,
                         center_masked_patches_only=center_masked_patches_only, koleo_weight=koleo_weight, **options)

    def sample_masks(self, batch: int, grid_h: int, grid_w: int) -> torch.Tensor:
        """DINOv2's draw: exactly ``int(B * p)`` images masked, ratios stratified, blocks of 4 to N/2."""
        return ibot_masks(batch, grid_h, grid_w, ratio=self.mask_ratio, probability=self.mask_probability,
                          stratified=True, min_num_patches=4, max_block_fraction=0.5, aspect_ratio=self.mask_aspect_ratio)
