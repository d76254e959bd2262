"""I-JEPA: "Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture".

Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas, 2023. https://arxiv.org/abs/2301.08243
Official code: https://github.com/facebookresearch/ijepa
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.backbones.base import Backbone
from selfsup.losses.ijepa import JEPALoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.jepa_blocks import jepa_masks
from selfsup.nn.jepa_predictor import JEPAPredictor
from selfsup.nn.momentum import MomentumTeacher


@METHODS.register("ijepa")
class IJEPA(Method):
    """A context encoder and a predictor regress an EMA target encoder's patch representations.

    Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
    Architecture", arXiv 2301.08243 (https://arxiv.org/abs/2301.08243), Sec. 3 and Appendix A/C;
    official code https://github.com/facebookresearch/ijepa (``src/train.py``). Per batch
    :func:`~selfsup.nn.jepa_blocks.jepa_masks` draws ``num_targets`` (4) target blocks (scale
    0.15-0.2, aspect 0.75-1.5) and one context block (scale 0.85-1) minus the targets. The context
    encoder (the backbone) sees only the context patches (``forward_tokens(keep=...)``, the others
    never enter it); the EMA target encoder sees the whole image and its patch outputs are
    layer-normalised again (no affine); the :class:`~selfsup.nn.jepa_predictor.JEPAPredictor`
    (paper: depth 12, width 384; heads as the encoder's) predicts the target blocks' patches from
    the context patch tokens (class and register tokens are dropped), loss
    :class:`~selfsup.losses.ijepa.JEPALoss` (mean squared error; ``loss="smooth_l1"`` as the
    official code). Target-encoder momentum rises linearly from 0.996 to 1. The online probe is
    not run (the encoder never sees a whole image during training). The official weight-decay
    schedule (0.04 -> 0.4) is not part of the method.

    Representation (``representation = "avg"``): the predictor reads only the context patch
    tokens, so this library's class token gets no gradient; evaluation and exports use the mean
    of the final patch tokens of the whole image. The official ViT (``src/models/vision_transformer.py``)
    has no class token at all and returns the normalised patch tokens; the paper (Appendix, linear
    evaluation) average-pools the output for a global representation (also the authors' answer in
    facebookresearch/ijepa issue #36). Departure: the paper evaluates the EMA target encoder; the
    engine evaluates and exports the backbone, i.e. the context encoder.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = IJEPA(backbone, predictor_depth=1, predictor_dim=32, predictor_heads=2, min_keep=2)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> sorted(out.logs)  # how many of the 4 x 4 patches the context and the targets hold
        ['context_patches', 'target_patches']
    """

    card = MethodCard(
        label="I-JEPA", year=2023, authors="Assran et al.",
        title="Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture",
        paper="https://arxiv.org/abs/2301.08243", code="https://github.com/facebookresearch/ijepa",
        family="masked image modelling", views="ijepa", backbones=("vit",),
        summary="predict EMA-encoder features of target blocks from a context block",
        small=dict(predictor_dim=32, predictor_depth=1, predictor_heads=2, min_keep=2),
        cpu=dict(predictor_dim=96, predictor_depth=2),
    )
    representation = "avg"

    def __init__(
        self,
        backbone: Backbone,
        *,
        predictor_dim: int = 384,
        predictor_depth: int = 12,
        predictor_heads: int | None = None,
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect_ratio: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_keep: int = 10,
        allow_overlap: bool = False,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        loss: str = "mse",
    ) -> None:
        super().__init__(backbone)
        if num_targets < 1:
            raise ValueError(f"IJEPA needs num_targets >= 1, got {num_targets}")
        heads = predictor_heads or backbone.blocks[0].heads
        self.predictor = JEPAPredictor(self.feature_dim, predictor_dim, predictor_depth, heads)
        self.target_encoder = MomentumTeacher({"backbone": self.backbone}, base_momentum=base_momentum,
                                              final_momentum=final_momentum, schedule="linear", owner="IJEPA")
        self.criterion = JEPALoss(loss)
        self.mask_options = dict(
            num_targets=num_targets, target_scale=tuple(target_scale), target_aspect_ratio=tuple(target_aspect_ratio),
            context_scale=tuple(context_scale), min_keep=min_keep, allow_overlap=allow_overlap,
        )

    def training_step(self, batch: ViewBatch) -> StepOutput:
        images = batch.views[0]
        p = self.backbone.patch_size
        gh, gw = images.shape[-2] // p, images.shape[-1] // p
        context_idx, target_idx = jepa_masks(len(images), gh, gw, **self.mask_options)
        context_idx, target_idx = context_idx.to(images.device), target_idx.to(images.device)
        b, m, t = target_idx.shape
        with torch.no_grad():
            full = self.target_encoder["backbone"].forward_tokens(images)[:, self.backbone.num_prefix:]
            full = F.layer_norm(full, full.shape[-1:])
            target = torch.gather(full, 1, target_idx.reshape(b, m * t, 1).expand(-1, -1, full.shape[-1]))
        context = self.backbone.forward_tokens(images, keep=context_idx)[:, self.backbone.num_prefix:]
        prediction = self.predictor(context, context_idx, target_idx, gh, gw)
        loss = self.criterion(prediction, target.reshape(b, m, t, -1))
        logs = {"context_patches": float(context_idx.shape[1]), "target_patches": float(m * t)}
        return StepOutput(loss=loss, features=None, logs=logs)
