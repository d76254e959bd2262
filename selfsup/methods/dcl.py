"""DCL and DCLW: "Decoupled Contrastive Learning".

Yeh, Hong, Hsu, Liu, Chen, LeCun, 2021. https://arxiv.org/abs/2110.06848
Reference implementation: https://github.com/raminnakhli/Decoupled-Contrastive-Learning
"""
from __future__ import annotations

from typing import Any

from selfsup.backbones.base import Backbone
from selfsup.losses.dcl import DCLLoss, DCLWLoss
from selfsup.methods.registry import METHODS
from selfsup.methods.simclr import SimCLR


@METHODS.register("dcl")
class DCL(SimCLR):
    """SimCLR's views, backbone and projector trained with the decoupled contrastive loss.

    Only the criterion differs from :class:`~selfsup.methods.simclr.SimCLR`:
    :class:`~selfsup.losses.dcl.DCLLoss` (negatives of the whole, gathered batch; temperature 0.1,
    the reference implementation's default and SimCLR's). The options are SimCLR's.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = DCL(backbone, temperature=0.1, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = SimCLR.card.variant(
        label="DCL", year=2021, authors="Yeh et al.", title="Decoupled Contrastive Learning",
        paper="https://arxiv.org/abs/2110.06848", code=None,
        summary="SimCLR with the positive pair removed from the denominator",
    )

    def __init__(self, backbone: Backbone, **options: Any) -> None:
        """``options`` are :class:`~selfsup.methods.simclr.SimCLR`'s."""
        super().__init__(backbone, **options)
        self.criterion = DCLLoss(temperature=self.temperature, gather_distributed=self.gather_distributed)


@METHODS.register("dclw")
class DCLW(SimCLR):
    """SimCLR's views, backbone and projector trained with DCLW (:class:`~selfsup.losses.dcl.DCLWLoss`).

    Yeh et al. 2021 (arXiv 2110.06848): the positive term of DCL weighted by
    ``2 - exp(s_i / sigma) / E[exp(s / sigma)]`` with ``sigma = 0.5``; temperature 0.1. The
    options are SimCLR's plus ``sigma``.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = DCLW(backbone, sigma=0.5, proj_output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape, out.features.shape  # the loss; view 0's features, for the online probe
        (torch.Size([]), torch.Size([8, 32]))
    """

    card = DCL.card.variant(label="DCLW", summary="DCL with a von Mises-Fisher weight (sigma 0.5) on the positive")

    def __init__(self, backbone: Backbone, *, sigma: float = 0.5, **options: Any) -> None:
        """``sigma`` is DCLW's; ``options`` are :class:`~selfsup.methods.simclr.SimCLR`'s."""
        super().__init__(backbone, **options)
        self.criterion = DCLWLoss(temperature=self.temperature, sigma=sigma, gather_distributed=self.gather_distributed)
