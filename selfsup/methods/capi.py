"""CAPI: "Cluster and Predict Latent Patches for Improved Masked Image Modeling".

Darcet, Baldassarre, Oquab, Mairal, Bojanowski, 2025. https://arxiv.org/abs/2502.08769
Official code: https://github.com/facebookresearch/capi
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.capi import OnlineClustering, capi_prediction_loss
from selfsup.methods.base import Method, StepOutput, ViewBatch, decay_groups
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.capi_predictor import CAPIPredictor, L2NormLinear, inverse_block_masks
from selfsup.nn.momentum import MomentumTeacher


@METHODS.register("capi")
class CAPI(Method):
    """Predict, for masked patches, the clusters an online clustering gives the EMA teacher's tokens.

    Darcet et al. 2025, "Cluster and Predict Latent Patches for Improved Masked Image Modeling",
    arXiv 2502.08769 (https://arxiv.org/abs/2502.08769), Sec. 3; official code
    https://github.com/facebookresearch/capi (``train_capi.py``, ``model.py``, ``data.py``,
    ``default_pretrain_config.yaml``). Per step:

    1. :func:`~selfsup.nn.capi_predictor.inverse_block_masks`: 65% of the patches are masked, the
       visible ones forming one (cyclically rolled) block; 5% of the masked ones are predicted.
    2. Teacher: the EMA copy of the encoder reads the whole image; the
       :class:`~selfsup.losses.capi.OnlineClustering` head turns its patch tokens into cluster
       assignments, balanced over the batch at each position by Sinkhorn-Knopp (target
       temperature 0.06), and learns from its own assignments (``clustering_loss``, temperature
       0.12). Only the clustering head gets this gradient.
    3. Student: the encoder (the backbone) reads only the visible patches; the
       :class:`~selfsup.nn.capi_predictor.CAPIPredictor` (mask tokens cross-attending to the
       encoder's tokens) produces a token at each predicted position, the
       :class:`~selfsup.nn.capi_predictor.L2NormLinear` head turns it into cluster logits, and
       :func:`~selfsup.losses.capi.capi_prediction_loss` (temperature 0.12) is the cross-entropy
       against the teacher's assignments there.

    The step's loss is the sum of the two; they share no parameter, so one optimizer with a group
    of its own for the clustering head (learning rate ``clustering_lr_scale`` = 0.5 times the
    main one: the official 5e-4 against 1e-3; weight decay 0.01, torch AdamW's default the
    official clustering optimizer keeps) stands for the official two optimizers. The patch
    embedding learns at 0.2 times the rate (official ``patch_embed_lr_mult``).

    Departures from the official code, all from selfsup's ViT: absolute sine-cosine positions in
    the predictor instead of RoPE, LayerNorm instead of RMSNorm, a class token (which the
    predictor does not read; registers, when the ViT has them, it reads as the official decoder
    does); the teacher's momentum follows a
    cosine from ``base_momentum`` (0.999) to 1 without the official warm-up from 1; the student's
    EMA copy that the official code evaluates at the end is not kept (the engine evaluates and
    exports the student encoder). The online probe is not run: the encoder never sees a whole
    image during training.

    Representation (``representation = "avg"``): the predictor reads the encoder's patch tokens,
    and the paper evaluates frozen patch features (attentive probe, segmentation); evaluation and
    exports use the mean patch token of the whole image.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = CAPI(backbone, num_clusters=16, predictor_dim=32, predictor_depth=1, predictor_heads=2)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> sorted(out.logs)
        ['capi_loss', 'clustering_loss', 'target_entropy']
    """

    card = MethodCard(
        label="CAPI", year=2025, authors="Darcet et al.",
        title="Cluster and Predict Latent Patches for Improved Masked Image Modeling",
        paper="https://arxiv.org/abs/2502.08769", code="https://github.com/facebookresearch/capi",
        family="masked image modelling", views="simmim", backbones=("vit",),
        summary="predict the online cluster assignments of an EMA teacher's masked patch tokens",
        small=dict(num_clusters=16, predictor_dim=32, predictor_depth=1, predictor_heads=2, prediction_share=0.5),
        cpu=dict(num_clusters=512, predictor_depth=2, prediction_share=0.25),
    )
    representation = "avg"

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_clusters: int = 16384,
        predictor_dim: int | None = None,
        predictor_depth: int = 12,
        predictor_heads: int | None = None,
        mask_ratio: float = 0.65,
        prediction_share: float = 0.05,
        student_temp: float = 0.12,
        target_temp: float = 0.06,
        clustering_temp: float = 0.12,
        sinkhorn_iterations: int = 3,
        base_momentum: float = 0.999,
        final_momentum: float = 1.0,
        clustering_lr_scale: float = 0.5,
        clustering_weight_decay: float = 0.01,
        patch_embed_lr_scale: float = 0.2,
    ) -> None:
        super().__init__(backbone)
        if not 0.0 < mask_ratio < 1.0 or not 0.0 < prediction_share <= 1.0 or student_temp <= 0:
            raise ValueError(f"CAPI needs mask_ratio in (0, 1), prediction_share in (0, 1] and student_temp > 0, got "
                             f"{mask_ratio}, {prediction_share}, {student_temp}")
        if clustering_lr_scale <= 0 or patch_embed_lr_scale < 0 or clustering_weight_decay < 0:
            raise ValueError(f"CAPI needs clustering_lr_scale > 0, patch_embed_lr_scale >= 0 and clustering_weight_decay "
                             f">= 0, got {clustering_lr_scale}, {patch_embed_lr_scale}, {clustering_weight_decay}")
        width = self.feature_dim
        dim = predictor_dim or width
        heads = predictor_heads or backbone.blocks[0].heads
        self.predictor = CAPIPredictor(width, dim, predictor_depth, heads)
        self.head = L2NormLinear(dim, num_clusters)
        self.clustering = OnlineClustering(width, num_clusters, target_temp=target_temp, pred_temp=clustering_temp,
                                           iterations=sinkhorn_iterations)
        self.teacher = MomentumTeacher({"backbone": self.backbone}, base_momentum=base_momentum,
                                       final_momentum=final_momentum, owner="CAPI")
        self.mask_ratio, self.prediction_share, self.student_temp = mask_ratio, prediction_share, student_temp
        self.clustering_lr_scale, self.clustering_weight_decay = clustering_lr_scale, clustering_weight_decay
        self.patch_embed_lr_scale = patch_embed_lr_scale

    def training_step(self, batch: ViewBatch) -> StepOutput:
        images = batch.views[0]
        p = self.backbone.patch_size
        gh, gw = images.shape[-2] // p, images.shape[-1] // p
        visible, predict = (i.to(images.device) for i in inverse_block_masks(
            len(images), gh, gw, mask_ratio=self.mask_ratio, prediction_share=self.prediction_share))
        prefix = self.backbone.num_prefix
        with torch.no_grad():
            teacher_tokens = self.teacher["backbone"].forward_tokens(images)[:, prefix:]
        assignments, clustering_loss = self.clustering(teacher_tokens)
        targets = torch.gather(assignments, 1, predict.unsqueeze(-1).expand(-1, -1, assignments.shape[-1]))
        # the predictor reads the registers and the visible patches, as the official decoder reads
        # its encoder's registers and patches; selfsup's class token is left out (the official ViT
        # has none), so the loss trains the patch tokens that evaluation averages
        tokens = self.backbone.forward_tokens(images, keep=visible)[:, 1:]
        logits = self.head(self.predictor(tokens, visible, predict, gh, gw, prefix - 1))
        prediction_loss = capi_prediction_loss(logits, targets, self.student_temp)
        entropy = -torch.xlogy(targets, targets).sum(-1).mean()
        logs = {"capi_loss": float(prediction_loss.detach()), "clustering_loss": float(clustering_loss.detach()),
                "target_entropy": float(entropy)}
        return StepOutput(loss=prediction_loss + clustering_loss, features=None, logs=logs)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Decay / no-decay groups, the patch embedding's at ``patch_embed_lr_scale`` times the
        learning rate, and the clustering head's own group (see the class docstring)."""
        clustering = {id(p) for p in self.clustering.parameters()}
        patch = {id(p) for p in self.backbone.patch_embed.parameters()}
        named = [(n, p) for n, p in self.named_parameters() if id(p) not in clustering | patch]
        groups = decay_groups(named, weight_decay)
        groups += decay_groups(self.backbone.patch_embed.named_parameters(), weight_decay, prefix="patch_embed_",
                               lr_scale=self.patch_embed_lr_scale)
        groups.append({"name": "clustering", "params": [p for p in self.clustering.parameters() if p.requires_grad],
                       "weight_decay": self.clustering_weight_decay, "lr_scale": self.clustering_lr_scale,
                       "own_weight_decay": True, "lars_exclude": True})
        return groups
