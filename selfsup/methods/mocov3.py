"""MoCo v3: "An Empirical Study of Training Self-Supervised Vision Transformers".

Chen, Xie, He, 2021. https://arxiv.org/abs/2104.02057
Official code: https://github.com/facebookresearch/moco-v3
"""
from __future__ import annotations

from selfsup.backbones.base import Backbone
from selfsup.backbones.vit import VisionTransformer
from selfsup.losses.mocov3 import MoCoV3Loss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP, MomentumTeacher


@METHODS.register("mocov3")
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
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = MoCoV3(backbone, temperature=0.2, proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="MoCo v3", year=2021, authors="Chen et al.",
        title="An Empirical Study of Training Self-Supervised Vision Transformers",
        paper="https://arxiv.org/abs/2104.02057", code="https://github.com/facebookresearch/moco-v3",
        family="contrastive", views="byol", backbones=ANY_BACKBONE,
        summary="momentum encoder, predictor, in-batch keys, no queue",
        small=dict(proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32),
    )

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
        if proj_num_layers < 1:
            raise ValueError(f"MoCo v3 proj_num_layers must be >= 1, got {proj_num_layers}")
        proj_dims = [self.feature_dim] + [proj_hidden_dim] * (proj_num_layers - 1) + [proj_output_dim]
        self.projector = MLP(proj_dims, last_batch_norm=True, last_bn_affine=False, bias=False)
        self.predictor = MLP(
            [proj_output_dim, pred_hidden_dim, proj_output_dim],
            last_batch_norm=pred_last_batch_norm, last_bn_affine=False, bias=False,
        )
        self.target = MomentumTeacher({"backbone": self.backbone, "projector": self.projector},
                                      base_momentum=base_momentum, final_momentum=final_momentum, owner="MoCo v3")
        self.criterion = MoCoV3Loss(temperature=temperature, gather_distributed=True)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """``ctr(q0, k1) + ctr(q1, k0)`` (MoCo v3 Algorithm 1).

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = MoCoV3(backbone, proj_hidden_dim=32, proj_output_dim=16, pred_hidden_dim=32)
            >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
            >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
            >>> out.loss.backward()
        """
        x0, x1 = batch.views[0], batch.views[1]
        features = self.backbone(x0)
        q0 = self.predictor(self.projector(features))
        q1 = self.predictor(self.projector(self.backbone(x1)))
        loss = self.criterion(q0, self.target(x1)) + self.criterion(q1, self.target(x0))
        return StepOutput(loss=loss, features=features)
