"""MoCo v3: "An Empirical Study of Training Self-Supervised Vision Transformers".

Chen, Xie, He, 2021. https://arxiv.org/abs/2104.02057
Official code: https://github.com/facebookresearch/moco-v3
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.backbones.vit import VisionTransformer
from selfsup.losses.mocov3 import MoCoV3Loss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP, MomentumTeacher, cosine_momentum


@METHODS.register("mocov3", "MoCo v3 (2021): momentum encoder, predictor, in-batch keys, no queue")
class MoCoV3(Method):
    """Query encoder (backbone, projector, predictor) contrasted with momentum keys of the batch.

    For each view order, ``2 tau * CE(q k^T / tau)`` with the queries ``q`` (predictor outputs of
    one view) and the keys ``k`` (momentum backbone + projector on the other view) of the whole
    global batch, the positive being the same image (:class:`~selfsup.losses.mocov3.MoCoV3Loss`);
    the two orders are summed, as in the official code. No queue. The momentum encoder follows
    the online backbone + projector with a rate rising from ``base_momentum`` (0.99) to
    ``final_momentum`` (1.0) along a half cosine (``--moco-m-cos`` of the official code), updated
    after every optimizer step. Each view goes through the networks in its own call, as in the
    official code (BatchNorm statistics per view).

    Heads (paper, Sec. 4 / Appendix: hidden layers 4096-d with BatchNorm and ReLU, outputs 256-d):
    the defaults are the official code's ResNet configuration (``MoCo_ResNet``): a 2-layer
    projector ending in a BatchNorm without affine parameters, a 2-layer predictor without output
    BatchNorm, and ``temperature`` 1.0. The official ViT configuration is ``proj_num_layers=3``,
    ``pred_last_batch_norm=True`` and ``temperature=0.2``. Nothing here assumes a ResNet: any backbone with ``feature_dim`` works.

    ViT settings (paper Sec. 4-5 and the official ``vits.py`` / ``main_moco.py``): heads
    ``proj_num_layers=3``, ``pred_last_batch_norm=True``, ``temperature=0.2``, and
    ``freeze_patch_embed=True``, the paper's stability trick of a fixed random patch projection
    (Sec. 4.2): the ViT's ``patch_embed`` keeps its random initialisation and gets no gradient
    (so it is left out of the optimizer; its momentum copy stays equal to it).

    Example:
        >>> method = MoCoV3(selfsup.backbones.get("resnet18", cifar_stem=True), temperature=0.2)
        >>> out = method.training_step(ViewBatch(views=[x0, x1], labels=y, indices=i))
    """

    default_views = "byol"

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 4096,
        proj_output_dim: int = 256,
        proj_num_layers: int = 2,
        pred_hidden_dim: int = 4096,
        pred_last_batch_norm: bool = False,
        temperature: float = 1.0,
        base_momentum: float = 0.99,
        final_momentum: float = 1.0,
        freeze_patch_embed: bool = False,
    ) -> None:
        super().__init__(backbone)
        if freeze_patch_embed:
            if not isinstance(backbone, VisionTransformer):
                raise TypeError(
                    "MoCo v3 freeze_patch_embed=True needs a VisionTransformer backbone (it freezes the patch "
                    f"projection); got {type(backbone).__name__}"
                )
            backbone.patch_embed.requires_grad_(False)
        if not 0.0 <= base_momentum <= final_momentum <= 1.0:
            raise ValueError(
                "MoCo v3 needs 0 <= base_momentum <= final_momentum <= 1, got "
                f"base_momentum={base_momentum}, final_momentum={final_momentum}"
            )
        if proj_num_layers < 1:
            raise ValueError(f"MoCo v3 proj_num_layers must be >= 1, got {proj_num_layers}")
        proj_dims = [self.feature_dim] + [proj_hidden_dim] * (proj_num_layers - 1) + [proj_output_dim]
        self.projector = MLP(proj_dims, last_batch_norm=True, last_bn_affine=False, bias=False)
        self.predictor = MLP(
            [proj_output_dim, pred_hidden_dim, proj_output_dim],
            last_batch_norm=pred_last_batch_norm, last_bn_affine=False, bias=False,
        )
        self.target = MomentumTeacher({"backbone": self.backbone, "projector": self.projector})
        self.base_momentum, self.final_momentum = base_momentum, final_momentum
        self.momentum = base_momentum
        self.criterion = MoCoV3Loss(temperature=temperature, gather_distributed=True)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """``ctr(q0, k1) + ctr(q1, k0)`` (MoCo v3 Algorithm 1).

        Example:
            >>> out = method.training_step(ViewBatch(views=[x0, x1], labels=y, indices=i))
            >>> out.loss.backward()
        """
        x0, x1 = batch.views[0], batch.views[1]
        features = self.backbone(x0)
        q0 = self.predictor(self.projector(features))
        q1 = self.predictor(self.projector(self.backbone(x1)))
        loss = self.criterion(q0, self.target(x1)) + self.criterion(q1, self.target(x0))
        return StepOutput(loss=loss, features=features, logs={"momentum": self.momentum})

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        """Set the cosine momentum for ``progress`` and update the momentum encoder.

        Example:
            >>> optimizer.step()
            >>> method.on_step_end(progress=step / total_steps)
        """
        self.momentum = cosine_momentum(progress, self.base_momentum, self.final_momentum)
        self.target.momentum_update(self.momentum)
