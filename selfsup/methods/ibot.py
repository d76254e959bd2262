"""iBOT: "Image BERT Pre-Training with Online Tokenizer".

Zhou, Wei, Wang, Shen, Xie, Yuille, Kong, 2021. https://arxiv.org/abs/2111.07832
Official code: https://github.com/bytedance/ibot
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.dino import DINOLoss
from selfsup.losses.gram import GramAnchoringLoss
from selfsup.losses.ibot import SinkhornDistillationLoss, iBOTPatchLoss
from selfsup.losses.koleo import KoLeoLoss
from selfsup.methods.base import Method, StepOutput, TrainingProgress, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.block_masking import ibot_masks
from selfsup.nn.ibot_head import iBOTHead
from selfsup.nn.momentum import MomentumTeacher, copy_frozen
from selfsup.nn.multicrop import forward_by_resolution
from selfsup.nn.schedules import warmup_temperature


@METHODS.register("ibot")
class iBOT(Method):  # noqa: N801 - the paper's spelling
    """DINO's class-token self-distillation plus masked image modelling with an online tokenizer.

    Zhou et al. 2021, "iBOT: Image BERT Pre-Training with Online Tokenizer", arXiv 2111.07832
    (https://arxiv.org/abs/2111.07832), Sec. 3 and Appendix; official code
    https://github.com/bytedance/ibot (``main_ibot.py``, the ViT-S/16 command of its README). The
    student sees the global views with block-wise masks (:func:`~selfsup.nn.block_masking.ibot_masks`:
    each image masked with probability 0.5, ratio uniform in [0.1, 0.5], aspect 0.3-3.3; masked
    patches become the backbone's mask token) and the local views unmasked; the EMA teacher sees
    the global views unmasked. Loss = ``lambda_cls * L_[CLS] + lambda_mim * L_MIM``: the DINO loss
    (:class:`~selfsup.losses.dino.DINOLoss`) between the teacher's class outputs of one global
    view and the student's of every other view, and :class:`~selfsup.losses.ibot.iBOTPatchLoss`
    between the teacher's and the student's patch outputs of the same global view over the
    student's masked patches, each with its own centre (momentum 0.9). Defaults: head 2048-256 with
    8192 outputs shared by class and patch tokens, student temperature 0.1, teacher temperatures
    0.04 -> 0.07 over 30 epochs for both, teacher momentum 0.996 -> 1 (cosine), last layer frozen
    for the first epoch, both loss weights 1. The online probe gets view 0's class token as the
    student saw it (masked for about half the images).

    Two options exist for :class:`~selfsup.methods.dinov2.DINOv2`, which is iBOT with other
    defaults and mask draw, and are off here: ``center_masked_patches_only`` (the patch centre
    follows the masked patches only) and ``koleo_weight`` (that weight times the KoLeo loss,
    :class:`~selfsup.losses.koleo.KoLeoLoss`, of the student's backbone class tokens, summed over
    the global views). The patch-token temperatures and centre momentum default to the class
    token's (None).

    DINOv3's Gram anchoring (Simeoni et al. 2025, arXiv 2508.10104, Sec. 4.2) is an option of both,
    off by default (``gram_weight = 0``): from ``gram_start`` (a fraction of the run) on, the loss
    adds ``gram_weight`` times :class:`~selfsup.losses.gram.GramAnchoringLoss` between the student's
    patch tokens of the global views and those of a "Gram teacher", a frozen snapshot of the EMA
    teacher's backbone taken at ``gram_start`` and refreshed every ``gram_every`` steps, at most
    ``gram_max_updates`` times (None: no limit). The official 7B run's values: weight 2, first
    snapshot at iteration 1,010,000 of 1,200,000 (0.84), refreshed every 10,000 iterations, 3 times.
    Here the Gram teacher sees the same (unmasked) global crops as the EMA teacher; the official
    code gives it its own crops at twice the resolution, resized to the student's grid.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = iBOT(backbone, out_dim=32, patch_out_dim=32, hidden_dim=16, bottleneck_dim=8)
        >>> views = [torch.randn(8, 3, 16, 16)] * 2 + [torch.randn(8, 3, 8, 8)] * 2  # 2 global (16 px), 2 local views (8 px)
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> sorted(out.logs)
        ['loss_cls', 'loss_patch', 'mask_fraction', 'teacher_temp']
    """

    card = MethodCard(
        label="iBOT", year=2021, authors="Zhou et al.",
        title="iBOT: Image BERT Pre-Training with Online Tokenizer", paper="https://arxiv.org/abs/2111.07832",
        code="https://github.com/bytedance/ibot", family="distillation", views="dino", backbones=("vit",),
        summary="DINO + masked patch-token self-distillation to an EMA teacher",
        small=dict(out_dim=32, patch_out_dim=32, hidden_dim=16, bottleneck_dim=8),
        small_views=dict(local_size=8, num_local=2),
        # cpu: DINOv2 / iBOT run their head on every patch token of the global views, so the head's size, not
        # the ViT's, sets the pace: with hidden 512 / out 1,024 a first run went at 112 images/s (~32 min
        # for 4 epochs; stopped), so the head is cut to hidden 256, bottleneck 128, out 512
        cpu=dict(out_dim=512, patch_out_dim=512, hidden_dim=256, bottleneck_dim=128), cpu_views=dict(num_local=4),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        out_dim: int = 8192,
        patch_out_dim: int = 8192,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        shared_head: bool = True,
        norm_last_layer: bool = True,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        teacher_patch_temp: float | None = None,
        warmup_teacher_patch_temp: float | None = None,
        warmup_teacher_temp_epochs: int = 30,
        center_momentum: float = 0.9,
        center_momentum_patch: float | None = None,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        freeze_last_layer_epochs: int = 1,
        num_global_views: int = 2,
        mask_ratio: tuple[float, float] = (0.1, 0.5),
        mask_probability: float = 0.5,
        mask_aspect_ratio: tuple[float, float] = (0.3, 1 / 0.3),
        cls_loss_weight: float = 1.0,
        patch_loss_weight: float = 1.0,
        centering: str = "center",
        center_masked_patches_only: bool = False,
        koleo_weight: float = 0.0,
        gram_weight: float = 0.0,
        gram_start: float = 0.84,
        gram_every: int = 10000,
        gram_max_updates: int | None = 3,
    ) -> None:
        super().__init__(backbone)
        if gram_weight < 0 or not 0.0 <= gram_start <= 1.0 or gram_every < 1 or (
                gram_max_updates is not None and gram_max_updates < 1):
            raise ValueError(f"{type(self).__name__} needs gram_weight >= 0, gram_start in [0, 1], gram_every >= 1 "
                             f"and gram_max_updates >= 1 (or None), got {gram_weight}, {gram_start}, {gram_every}, "
                             f"{gram_max_updates}")
        if num_global_views < 1 or warmup_teacher_temp_epochs < 0 or freeze_last_layer_epochs < 0 or koleo_weight < 0:
            raise ValueError(f"{type(self).__name__} needs num_global_views >= 1, non-negative epoch counts and "
                             f"koleo_weight >= 0, got num_global_views={num_global_views}, warmup_teacher_temp_epochs="
                             f"{warmup_teacher_temp_epochs}, freeze_last_layer_epochs={freeze_last_layer_epochs}, "
                             f"koleo_weight={koleo_weight}")
        if not 0.0 <= mask_ratio[0] <= mask_ratio[1] < 1.0 or not 0.0 <= mask_probability <= 1.0:
            raise ValueError(f"{type(self).__name__} needs 0 <= mask_ratio[0] <= mask_ratio[1] < 1 and "
                             f"mask_probability in [0, 1], got {mask_ratio}, {mask_probability}")
        self.head = iBOTHead(self.feature_dim, out_dim, out_dim if shared_head else patch_out_dim, hidden_dim,
                             bottleneck_dim, shared_head=shared_head, norm_last_layer=norm_last_layer)
        self.teacher = MomentumTeacher({"backbone": self.backbone, "head": self.head}, base_momentum=base_momentum,
                                       final_momentum=final_momentum, owner=type(self).__name__)
        patch_dim = out_dim if shared_head else patch_out_dim
        if centering == "center":
            self.criterion: torch.nn.Module = DINOLoss(out_dim, student_temp, center_momentum)
        elif centering == "sinkhorn_knopp":
            self.criterion = SinkhornDistillationLoss(student_temp)
        else:
            raise ValueError(f"centering must be 'center' or 'sinkhorn_knopp', got {centering!r}")
        self.patch_criterion = iBOTPatchLoss(
            patch_dim, student_temp, center_momentum if center_momentum_patch is None else center_momentum_patch,
            centering, center_masked_only=center_masked_patches_only,
        )
        self.temps = (warmup_teacher_temp, teacher_temp,
                      warmup_teacher_temp if warmup_teacher_patch_temp is None else warmup_teacher_patch_temp,
                      teacher_temp if teacher_patch_temp is None else teacher_patch_temp)
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.freeze_last_layer_epochs, self.num_global_views = freeze_last_layer_epochs, num_global_views
        self.mask_ratio, self.mask_probability = tuple(mask_ratio), mask_probability
        self.mask_aspect_ratio = tuple(mask_aspect_ratio)
        self.cls_loss_weight, self.patch_loss_weight = cls_loss_weight, patch_loss_weight
        self.koleo_weight = koleo_weight
        self.koleo = KoLeoLoss() if koleo_weight else None
        self.gram_weight, self.gram_start, self.gram_every = gram_weight, gram_start, gram_every
        self.gram_max_updates = gram_max_updates
        self.gram_teacher = copy_frozen(self.backbone) if gram_weight else None
        self.gram_criterion = GramAnchoringLoss() if gram_weight else None

    def teacher_temperatures(self, epoch: int) -> tuple[float, float]:
        """Class-token and patch-token teacher temperatures of ``epoch`` (linear warm-ups)."""
        w, t, wp, tp = self.temps
        e = self.warmup_teacher_temp_epochs
        return warmup_temperature(epoch, w, t, e), warmup_temperature(epoch, wp, tp, e)

    def sample_masks(self, batch: int, grid_h: int, grid_w: int) -> torch.Tensor:
        """``(B, N)`` bool masks of one global view (iBOT's per-image draw)."""
        return ibot_masks(batch, grid_h, grid_w, ratio=self.mask_ratio, probability=self.mask_probability,
                          aspect_ratio=self.mask_aspect_ratio)

    def koleo_loss(self, student_cls: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``koleo_weight`` times the KoLeo loss of the student's global class tokens ``(G, B, D)``,
        summed over the global views (DINOv2), and its log; zero without ``koleo_weight``."""
        if self.koleo is None:
            return student_cls.new_zeros(()), {}
        koleo = sum((self.koleo(view) for view in student_cls), student_cls.new_zeros(()))
        return self.koleo_weight * koleo, {"loss_koleo": float(koleo.detach())}

    def gram_start_step(self, total_steps: int) -> int:
        """The first step trained with Gram anchoring."""
        return round(self.gram_start * total_steps)

    def refreshes_gram_teacher(self, step: int, total_steps: int) -> bool:
        """Whether the Gram teacher is a new snapshot of the EMA teacher for ``step`` (taken after step - 1)."""
        start = self.gram_start_step(total_steps)
        k, offset = divmod(step - start, self.gram_every)
        return step >= start and offset == 0 and (self.gram_max_updates is None or k < self.gram_max_updates)

    def gram_loss(self, student_patch: torch.Tensor, globals_: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``gram_weight`` times the Gram anchoring loss once anchoring has started, else zero."""
        progress = self.progress
        if self.gram_teacher is None or progress.step < self.gram_start_step(progress.total_steps):
            return student_patch.new_zeros(()), {}
        with torch.no_grad():
            target = self.gram_teacher.forward_tokens(globals_)[:, self.backbone.num_prefix:]
        gram = self.gram_criterion(student_patch, target)
        return self.gram_weight * gram, {"loss_gram": gram.detach()}

    def on_step_end(self, progress: TrainingProgress) -> None:
        """Snapshot the EMA teacher's backbone into the Gram teacher when the next step starts anew."""
        if self.gram_teacher is not None and self.refreshes_gram_teacher(progress.step + 1, progress.total_steps):
            self.gram_teacher.load_state_dict(self.teacher["backbone"].state_dict())

    def training_step(self, batch: ViewBatch) -> StepOutput:
        views, g = batch.views, self.num_global_views
        if len(views) < max(2, g) or any(v.shape != views[0].shape for v in views[:g]):
            raise ValueError(f"{type(self).__name__} needs at least {max(2, g)} views with the {g} equally sized "
                             f"global views first, got {[tuple(v.shape) for v in views]}")
        n, p = len(views[0]), self.backbone.patch_size
        gh, gw = views[0].shape[-2] // p, views[0].shape[-1] // p
        masks = torch.stack([self.sample_masks(n, gh, gw) for _ in range(g)]).to(views[0].device)  # (G, B, N)
        globals_ = torch.cat(views[:g])
        tokens = self.backbone.forward_tokens(globals_, mask=masks.reshape(g * n, -1))
        prefix = self.backbone.num_prefix
        student_cls, student_patch = self.head(tokens[:, 0], tokens[:, prefix:])
        if len(views) > g:
            local_cls = self.head.cls_head(forward_by_resolution(self.backbone, views[g:]))
            student_cls = torch.cat([student_cls, local_cls])
        with torch.no_grad():
            t_tokens = self.teacher["backbone"].forward_tokens(globals_)
            teacher_cls, teacher_patch = self.teacher["head"](t_tokens[:, 0], t_tokens[:, prefix:])
        temp_cls, temp_patch = self.teacher_temperatures(self.progress.epoch)
        loss_cls = self.criterion(student_cls.reshape(len(views), n, -1), teacher_cls.reshape(g, n, -1), temp_cls)
        loss_patch = self.patch_criterion(student_patch.reshape(g, n, gh * gw, -1),
                                          teacher_patch.reshape(g, n, gh * gw, -1), masks, temp_patch)
        extra, extra_logs = self.koleo_loss(tokens[:, 0].reshape(g, n, -1))
        gram, gram_logs = self.gram_loss(tokens[:, prefix:], globals_)
        extra_logs.update(gram_logs)
        loss = self.cls_loss_weight * loss_cls + self.patch_loss_weight * loss_patch + extra + gram
        logs = {"loss_cls": loss_cls.detach(), "loss_patch": loss_patch.detach(), "teacher_temp": temp_cls,
                "mask_fraction": masks.float().mean(), **extra_logs}
        return StepOutput(loss=loss, features=tokens[:n, 0].detach(), logs=logs)

    def on_after_backward(self, progress: TrainingProgress) -> None:
        """Drop the last layers' gradients during the first ``freeze_last_layer_epochs`` epochs."""
        if progress.epoch < self.freeze_last_layer_epochs:
            for layer in self.head.last_layers:
                for param in layer.parameters():
                    param.grad = None
