"""SimCLR: "A Simple Framework for Contrastive Learning of Visual Representations".

Chen, Kornblith, Norouzi, Hinton, 2020. https://arxiv.org/abs/2002.05709
Official code: https://github.com/google-research/simclr
"""
from __future__ import annotations

from selfsup.backbones.base import Backbone
from selfsup.losses import NTXentLoss
from selfsup.methods._projected_pair import ProjectedPair
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("simclr")
class SimCLR(ProjectedPair):
    """Two augmented views, a 2-layer MLP projector and the NT-Xent loss over the whole batch.

    Defaults are the paper's: projector hidden width = backbone width, 128-d output, temperature
    0.1 (ImageNet; the paper's CIFAR-10 recipe uses 0.5, see ``configs/cifar10/simclr.yaml``).
    Both views go through the backbone in one call, so BatchNorm sees the global batch as in the
    official code. With several processes the loss gathers embeddings from all of them.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = SimCLR(backbone, temperature=0.5, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = MethodCard(
        label="SimCLR", year=2020, authors="Chen et al.",
        title="A Simple Framework for Contrastive Learning of Visual Representations",
        paper="https://arxiv.org/abs/2002.05709", code="https://github.com/google-research/simclr",
        family="contrastive", views="simclr", backbones=ANY_BACKBONE,
        summary="two views, MLP projector, NT-Xent over the batch",
        small=dict(proj_output_dim=16),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 128,
        temperature: float = 0.1,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        hidden = proj_hidden_dim or self.feature_dim
        self.projector = MLP([self.feature_dim, hidden, proj_output_dim])
        self.temperature, self.gather_distributed = temperature, gather_distributed  # read by DCL / DCLW
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)
