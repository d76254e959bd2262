"""DINOv2: "Learning Robust Visual Features without Supervision".

Oquab, Darcet, Moutakanni, Vo, Szafraniec, Khalidov, Fernandez, Haziza, Massa, El-Nouby, et al.,
2023. https://arxiv.org/abs/2304.07193
Official code: https://github.com/facebookresearch/dinov2
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.koleo import KoLeoLoss
from selfsup.methods.ibot import iBOT
from selfsup.methods.registry import METHODS
from selfsup.nn.block_mask import ibot_masks


@METHODS.register("dinov2", "DINOv2 (2023): DINO + iBOT losses + KoLeo, optional Sinkhorn-Knopp centring (ViT)")
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

    Example:
        >>> method = DINOv2(selfsup.backbones.get("vit_tiny", image_size=32, patch_size=4), out_dim=1024)
        >>> out = method.training_step(ViewBatch(views=[g0, g1, l0, l1], labels=y, indices=i))
    """

    center_masked_patches_only = True

    def __init__(
        self,
        backbone: Backbone,
        *,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 30,
        center_momentum: float = 0.9,
        base_momentum: float = 0.992,
        final_momentum: float = 1.0,
        freeze_last_layer_epochs: int = 1,
        num_global_views: int = 2,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_probability: float = 0.5,
        dino_loss_weight: float = 1.0,
        ibot_loss_weight: float = 1.0,
        koleo_weight: float = 0.1,
        centering: str = "center",
    ) -> None:
        super().__init__(
            backbone, out_dim=out_dim, patch_out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
            shared_head=True, norm_last_layer=True, student_temp=student_temp, teacher_temp=teacher_temp,
            warmup_teacher_temp=warmup_teacher_temp, teacher_patch_temp=teacher_temp,
            warmup_teacher_patch_temp=warmup_teacher_temp, warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            center_momentum=center_momentum, center_momentum_patch=center_momentum, base_momentum=base_momentum,
            final_momentum=final_momentum, freeze_last_layer_epochs=freeze_last_layer_epochs,
            num_global_views=num_global_views, mask_ratio=mask_ratio, mask_probability=mask_probability,
            mask_aspect_ratio=(0.3, 1 / 0.3), cls_loss_weight=dino_loss_weight, patch_loss_weight=ibot_loss_weight,
            centering=centering,
        )
        self.koleo_weight = koleo_weight
        self.koleo = KoLeoLoss()

    def sample_masks(self, batch: int, grid_h: int, grid_w: int) -> torch.Tensor:
        """DINOv2's draw: exactly ``int(B * p)`` images masked, ratios stratified, blocks of 4 to N/2."""
        return ibot_masks(batch, grid_h, grid_w, ratio=self.mask_ratio, probability=self.mask_probability,
                          stratified=True, min_block=4, max_block_fraction=0.5, aspect_ratio=self.mask_aspect_ratio)

    def extra_losses(self, student_cls: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``koleo_weight * sum over global views of KoLeo(class tokens)``."""
        koleo = sum((self.koleo(view) for view in student_cls), student_cls.new_zeros(()))
        return self.koleo_weight * koleo, {"loss_koleo": float(koleo.detach())}
