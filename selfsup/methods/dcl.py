"""DCL and DCLW: "Decoupled Contrastive Learning".

Yeh, Hong, Hsu, Liu, Chen, LeCun, 2021. https://arxiv.org/abs/2110.06848
Reference implementation: https://github.com/raminnakhli/Decoupled-Contrastive-Learning
"""
from __future__ import annotations

from selfsup.backbones.base import Backbone
from selfsup.losses.dcl import DCLLoss, DCLWLoss
from selfsup.methods.registry import METHODS
from selfsup.methods.simclr import SimCLR


@METHODS.register("dcl", "DCL (2021): SimCLR with the positive pair removed from the denominator")
class DCL(SimCLR):
    """SimCLR's views, backbone and projector trained with the decoupled contrastive loss.

    Only the criterion differs from :class:`~selfsup.methods.simclr.SimCLR`:
    :class:`~selfsup.losses.dcl.DCLLoss` (negatives of the whole, gathered batch; temperature 0.1,
    the reference implementation's default).

    Example:
        >>> method = DCL(selfsup.backbones.get("resnet18", cifar_stem=True), temperature=0.1)
        >>> out = method.training_step(ViewBatch(views=[x0, x1], labels=y, indices=i))
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 128,
        temperature: float = 0.1,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone, proj_hidden_dim=proj_hidden_dim, proj_output_dim=proj_output_dim,
                         temperature=temperature, gather_distributed=gather_distributed)
        self.criterion = DCLLoss(temperature=temperature, gather_distributed=gather_distributed)


@METHODS.register("dclw", "DCLW (2021): DCL with a von Mises-Fisher weight (sigma 0.5) on the positive")
class DCLW(SimCLR):
    """SimCLR's views, backbone and projector trained with DCLW (:class:`~selfsup.losses.dcl.DCLWLoss`).

    Yeh et al. 2021 (arXiv 2110.06848): the positive term of DCL weighted by
    ``2 - exp(s_i / sigma) / E[exp(s / sigma)]`` with ``sigma = 0.5``; temperature 0.1.

    Example:
        >>> method = DCLW(selfsup.backbones.get("resnet18", cifar_stem=True), sigma=0.5)
        >>> out = method.training_step(ViewBatch(views=[x0, x1], labels=y, indices=i))
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int | None = None,
        proj_output_dim: int = 128,
        temperature: float = 0.1,
        sigma: float = 0.5,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone, proj_hidden_dim=proj_hidden_dim, proj_output_dim=proj_output_dim,
                         temperature=temperature, gather_distributed=gather_distributed)
        self.criterion = DCLWLoss(temperature=temperature, sigma=sigma, gather_distributed=gather_distributed)
