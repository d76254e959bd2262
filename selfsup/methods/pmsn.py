"""PMSN: MSN with a power-law cluster prior, from "The Hidden Uniform Cluster Prior in
Self-Supervised Learning".

Assran, Balestriero, Duval, Bordes, Misra, Bojanowski, Vincent, Rabbat, Ballas, 2022.
https://arxiv.org/abs/2210.07277 -- official code: https://github.com/facebookresearch/msn
"""
from __future__ import annotations

from typing import Any

from selfsup.backbones.base import Backbone
from selfsup.methods.msn import MSN
from selfsup.methods.registry import METHODS


@METHODS.register("pmsn")
class PMSN(MSN):
    """Prior Matching for Siamese Networks: :class:`~selfsup.methods.msn.MSN` with the
    mean-entropy regulariser ``KL(p_bar || uniform)`` replaced by ``KL(p_bar || pi)``, where
    ``pi_k`` is proportional to ``k^(-power_law_exponent)`` (0.25, the paper's power law).
    Assran et al. 2022, "The Hidden Uniform Cluster Prior in Self-Supervised Learning", arXiv
    2210.07277 (https://arxiv.org/abs/2210.07277), Sec. 6; official code
    https://github.com/facebookresearch/msn.

    Everything else (views, masking, projector, prototypes, EMA target, temperatures) is MSN's.
    Sinkhorn-Knopp balancing of the targets is off by default (``sinkhorn_iterations=0``): it
    pushes every prototype to receive the same share of the batch, the very uniform prior PMSN
    replaces. The paper's exact setting for it could not be checked here; set
    ``sinkhorn_iterations=3`` for MSN's targets.

    Example:
        >>> backbone = selfsup.backbones.get("vit_nano", image_size=16, patch_size=4, depth=2)
        >>> method = PMSN(backbone, num_prototypes=64, hidden_dim=32, output_dim=16)
        >>> views = [torch.randn(8, 3, 16, 16)] * 2 + [torch.randn(8, 3, 8, 8)] * 2  # target, anchor, 2 focal views (8 px)
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> sorted(out.logs)
        ['cross_entropy', 'regularizer']
    """

    card = MSN.card.variant(
        label="PMSN", title="The Hidden Uniform Cluster Prior in Self-Supervised Learning",
        paper="https://arxiv.org/abs/2210.07277",
        summary="MSN whose mean prediction is matched to a power-law prior over prototypes",
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        sinkhorn_iterations: int = 0,
        prior: str = "power_law",
        **options: Any,
    ) -> None:
        """PMSN's defaults; every other option (``options``) is :class:`~selfsup.methods.msn.MSN`'s."""
        super().__init__(backbone, sinkhorn_iterations=sinkhorn_iterations, prior=prior, **options)
