"""VICRegL: "VICRegL: Self-Supervised Learning of Local Visual Features".

Bardes, Ponce, LeCun, NeurIPS 2022. https://arxiv.org/abs/2210.01571
Official code: https://github.com/facebookresearch/VICRegL
"""
from __future__ import annotations

from collections.abc import Sequence

from selfsup.augment.geometry import cell_centres
from selfsup.backbones.base import Backbone
from selfsup.losses.vicregl import VICRegLLoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP


@METHODS.register("vicregl")
class VICRegL(Method):
    """VICReg on the pooled features plus VICReg between feature-map cells matched across views.

    Each view goes through the backbone on its own; its last feature map ``(B, C, h, w)`` is
    average-pooled into the representation, which an expander (``8192-8192-8192``, as VICReg's)
    embeds for the global loss, and each of its cells goes through a local projector
    (``512-512-512``, BatchNorm over the batch's cells) for the local loss. Cells are matched across
    views by feature distance and by source position: the position of each cell's centre in the
    original image, from the crop and flips the view drew (the
    :class:`~selfsup.augment.geometry.Views` the recipe returns; the engine passes them on).
    :class:`~selfsup.losses.VICRegLLoss` weighs the two parts ``alpha`` and ``1 - alpha``.

    Defaults are the official ResNet-50 setting (``README``, ``main_vicregl.py``): ``alpha =
    0.75``, 25 / 25 / 1 weights, ``num_matches = (20, 4)``, every feature match kept, BYOL's two
    asymmetric 224 px views with crop scale 0.08-1. Two choices differ from the official code and
    are said here: the location grids follow the horizontal flip of their view (the official
    default ``--no-flip-grid 1`` keeps a flipped view's grid unflipped, which pairs mirrored
    cells); and the official ``--maps-lr-ratio`` is not offered, since its parameter group
    (``maps_classifier``) matches no parameter of the official model, so it changes nothing there.
    With a ViT the patch-token map plays the feature map's part and the mean patch token is the
    representation (``representation = "avg"``).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = VICRegL(backbone, proj_hidden_dim=32, proj_output_dim=32, maps_hidden_dim=16, maps_output_dim=16)
        >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> views = selfsup.augment.get("byol", size=16, mean=(0.5,) * 3, std=(0.25,) * 3)(images)  # + geometry
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape
        torch.Size([])
    """

    card = MethodCard(
        label="VICRegL", year=2022, authors="Bardes et al.",
        title="VICRegL: Self-Supervised Learning of Local Visual Features",
        paper="https://arxiv.org/abs/2210.01571", code="https://github.com/facebookresearch/VICRegL",
        family="redundancy reduction", views="byol", backbones=("resnet", "vit"),
        summary="VICReg on pooled features and between feature-map cells matched by position and by feature",
        small=dict(proj_hidden_dim=32, proj_output_dim=32, maps_hidden_dim=16, maps_output_dim=16),
    )
    representation = "avg"  # with a ViT: the global branch pools the patch-token map

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 8192,
        proj_output_dim: int = 8192,
        maps_hidden_dim: int = 512,
        maps_output_dim: int = 512,
        alpha: float = 0.75,
        num_matches: Sequence[int] = (20, 4),
        l2_all_matches: bool = True,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_hidden_dim, proj_output_dim])
        self.maps_projector = MLP([self.feature_dim, maps_hidden_dim, maps_hidden_dim, maps_output_dim])
        self.criterion = VICRegLLoss(alpha, sim_weight, var_weight, cov_weight, num_matches, l2_all_matches,
                                     gather_distributed=gather_distributed)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """The global and local VICReg terms over all views; view 0's pooled features feed the probe.

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = VICRegL(backbone, proj_hidden_dim=32, proj_output_dim=32, maps_hidden_dim=16, maps_output_dim=16)
            >>> images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
            >>> views = selfsup.augment.get("byol", size=16, mean=(0.5,) * 3, std=(0.25,) * 3)(images)
            >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
            >>> sorted(out.logs)
            ['global_cov', 'global_inv', 'global_var', 'local_cov', 'local_inv', 'local_var']
        """
        views = batch.views
        if not callable(getattr(views, "geometry", None)):
            raise ValueError(
                "VICRegL matches feature-map cells by their position in the image, so it needs the views "
                "as a view recipe returns them (selfsup.augment.get(...)(images), a Views list that knows "
                f"each view's crop and flips); got a plain {type(views).__name__} of tensors.")
        embeddings, maps, locations, pooled_first = [], [], [], None
        for index, x in enumerate(views):
            feature_map = self.backbone.feature_map(x)  # (B, C, h, w)
            b, c, h, w = feature_map.shape
            pooled = feature_map.mean(dim=(2, 3))
            pooled_first = pooled if pooled_first is None else pooled_first
            embeddings.append(self.projector(pooled))
            cells = feature_map.flatten(2).transpose(1, 2).reshape(b * h * w, c)
            maps.append(self.maps_projector(cells).view(b, h * w, -1))
            locations.append(cell_centres(views.geometry(index), h, w))
        loss, terms = self.criterion(embeddings, maps, locations)
        return StepOutput(loss=loss, features=pooled_first, logs={k: v.detach() for k, v in terms.items()})
