"""LeJEPA: "LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics".

Balestriero and LeCun, 2025. https://arxiv.org/abs/2511.08544
Official code: https://github.com/rbalestr-lab/lejepa
"""
from __future__ import annotations

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.lejepa import LeJEPALoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP
from selfsup.nn.multicrop import forward_by_resolution


@METHODS.register("lejepa")
class LeJEPA(Method):
    """One encoder and projector; every view is pulled to the centre of the global views, and
    SIGReg keeps each view's projections an isotropic Gaussian. No teacher, no stop-gradient.

    Defaults are the official minimal example's (``MINIMAL.md``: ViT-S/8 on Imagenette): projector
    ``2048-2048-16`` with BatchNorm and ReLU between the layers, ``lambda_ = 0.02``, 256 random
    directions per step, 4 identically drawn views which are all "global" (``num_global_views``
    None: the centre is the mean of every view). For the paper's multi-crop setting, give the
    ``multicrop`` views and ``num_global_views=2``; smaller local crops only enter as views to be
    pulled to the centre and as samples of SIGReg. The directions of each step come from a
    generator seeded with ``seed`` and the step, so a resumed run and every process draw the same.
    The minimal example probes the output of a 512-d linear head on the class token; here k-NN,
    probes and exports read the backbone's pooled output, before the projector.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = LeJEPA(backbone, proj_hidden_dim=32, proj_output_dim=8, num_slices=16)
        >>> views = [torch.randn(8, 3, 16, 16) for _ in range(4)]  # 4 augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> sorted(out.logs)
        ['invariance', 'sigreg']
    """

    card = MethodCard(
        label="LeJEPA", year=2025, authors="Balestriero and LeCun",
        title="LeJEPA: Provable and Scalable Self-Supervised Learning Without the Heuristics",
        paper="https://arxiv.org/abs/2511.08544", code="https://github.com/rbalestr-lab/lejepa",
        family="redundancy reduction", views="lejepa", backbones=ANY_BACKBONE,
        summary="views pulled to their centre, SIGReg keeps embeddings isotropic Gaussian; no teacher",
        small=dict(proj_hidden_dim=32, proj_output_dim=8, num_slices=16), small_views=dict(num_views=3),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 2048,
        proj_output_dim: int = 16,
        proj_layers: int = 3,
        lambda_: float = 0.02,
        num_global_views: int | None = None,
        num_slices: int = 256,
        knots: int = 17,
        t_max: float = 3.0,
        seed: int = 0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        if proj_layers < 1:
            raise ValueError(f"LeJEPA needs proj_layers >= 1, got {proj_layers}")
        self.projector = MLP([self.feature_dim] + [proj_hidden_dim] * (proj_layers - 1) + [proj_output_dim])
        self.criterion = LeJEPALoss(lambda_=lambda_, num_global_views=num_global_views, num_slices=num_slices,
                                    knots=knots, t_max=t_max, gather_distributed=gather_distributed)
        self.seed = seed

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """LeJEPA's loss over all the batch's views (global views first).

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = LeJEPA(backbone, proj_hidden_dim=32, proj_output_dim=8, num_slices=16)
            >>> views = [torch.randn(8, 3, 16, 16) for _ in range(4)]
            >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
            >>> method.training_step(batch).loss.backward()
        """
        views = batch.views
        if len(views) < 2:
            raise ValueError(f"LeJEPA needs at least 2 views, got {len(views)}")
        n = len(views[0])
        features = forward_by_resolution(self.backbone, views)
        z = self.projector(features).reshape(len(views), n, -1)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.progress.step)
        sigreg, invariance = self.criterion.terms(z, generator)
        loss = self.criterion.combine(sigreg, invariance)
        return StepOutput(loss=loss, features=features[:n],
                          logs={"sigreg": sigreg.detach(), "invariance": invariance.detach()})
