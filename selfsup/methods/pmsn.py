"""PMSN: MSN with a power-law cluster prior, from "The Hidden Uniform Cluster Prior in
Self-Supervised Learning".

Assran, Balestriero, Duval, Bordes, Misra, Bojanowski, Vincent, Rabbat, Ballas, 2022.
https://arxiv.org/abs/2210.07277 -- official code: https://github.com/facebookresearch/msn
"""
from __future__ import annotations

from selfsup.backbones.base import Backbone
from selfsup.methods.msn import MSN
from selfsup.methods.registry import METHODS


@METHODS.register("pmsn", "PMSN (2022): MSN whose mean prediction is matched to a power-law prior over prototypes")
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
        >>> method = PMSN(selfsup.backbones.get("vit_tiny", image_size=32, patch_size=4), num_prototypes=256)
        >>> out = method.training_step(ViewBatch(views=[target, anchor, *focal], labels=y, indices=i))
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_prototypes: int = 1024,
        hidden_dim: int = 2048,
        output_dim: int = 256,
        use_bn: bool = True,
        temperature: float = 0.1,
        sharpen_temperature: float = 0.25,
        sinkhorn_iterations: int = 0,
        regularization_weight: float = 1.0,
        mask_ratio: float = 0.15,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        momentum_horizon: float = 1.25,
        power_law_exponent: float = 0.25,
    ) -> None:
        super().__init__(
            backbone, num_prototypes=num_prototypes, hidden_dim=hidden_dim, output_dim=output_dim, use_bn=use_bn,
            temperature=temperature, sharpen_temperature=sharpen_temperature,
            sinkhorn_iterations=sinkhorn_iterations, regularization_weight=regularization_weight,
            mask_ratio=mask_ratio, base_momentum=base_momentum, final_momentum=final_momentum,
            momentum_horizon=momentum_horizon, prior="power_law", power_law_exponent=power_law_exponent,
        )
