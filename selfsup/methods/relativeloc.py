"""Relative patch location: "Unsupervised Visual Representation Learning by Context Prediction".

Doersch, Gupta, Efros, 2015. https://arxiv.org/abs/1505.05192
Official code: https://github.com/cdoersch/deepcontext
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.backbones.base import Backbone
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.mlp import MLP
from selfsup.nn.patch_grid import NEIGHBOURS, crop_patches, paper_patch_layout, sample_patch_grid
from selfsup.nn.precision import at_least_fp32


@METHODS.register("relativeloc")
class RelativeLocation(Method):
    """Predict which of the 8 neighbouring positions a patch was taken from, given the centre patch.

    From each view a 3x3 grid of square patches separated by a gap, each moved by a random jitter,
    is cut on the device (:func:`selfsup.nn.patch_grid.sample_patch_grid`, batched indexing, no
    per-sample loop). All 9 patches go through the backbone; the pooled features of the centre
    patch and of each neighbour are concatenated and an MLP classifies the neighbour's position
    (8 classes, row-major, see :data:`selfsup.nn.patch_grid.NEIGHBOURS`); the loss is the mean
    cross-entropy over the 8 pairs of every view. The paper uses 96 px patches, a 48 px gap and up
    to 7 px jitter; ``patch_size``, ``gap`` and ``jitter`` default (None) to these proportions
    scaled to the view size (:func:`selfsup.nn.patch_grid.paper_patch_layout`, 7 / 3 / 1 px at
    32 px). The pair head is mmselfsup's (``Linear(2 d, 4096)``, BatchNorm, ReLU,
    ``Linear(4096, 8)``), matching the paper's fc7 width of 4096. Not implemented: the paper's
    remedies for chromatic aberration (colour dropping / projection) and random downsampling of
    patches. The online probe gets the backbone features of the whole ``views[0]``, computed
    without gradient.

    Args:
        backbone: Encoder with ``feature_dim``.
        patch_size: Side of a patch in pixels; None for the paper's proportions.
        gap: Pixels between neighbouring patches before jitter; None for half a patch.
        jitter: Largest random shift of a patch along each axis; None for 7/96 of a patch
            (at least 1 px).
        hidden_dim: Width of the pair classifier's hidden layer.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = RelativeLocation(backbone, patch_size=4, gap=1, hidden_dim=32)
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> 0 <= float(out.logs["position_acc"]) <= 1
        True
    """

    card = MethodCard(
        label="Context prediction", year=2015, authors="Doersch et al.",
        title="Unsupervised Visual Representation Learning by Context Prediction",
        paper="https://arxiv.org/abs/1505.05192", code="https://github.com/cdoersch/deepcontext",
        family="pretext task", views="crop_flip", backbones=ANY_BACKBONE,
        summary="classify where a patch sits relative to the centre",
        small=dict(hidden_dim=32, patch_size=4, gap=1, jitter=1),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        patch_size: int | None = None,
        gap: int | None = None,
        jitter: int | None = None,
        hidden_dim: int = 4096,
    ) -> None:
        super().__init__(backbone)
        self.patch_size, self.gap, self.jitter = patch_size, gap, jitter
        self.head = MLP([2 * self.feature_dim, hidden_dim, len(NEIGHBOURS)])

    def layout(self, size: int) -> tuple[int, int, int]:
        """``(patch_size, gap, jitter)`` for ``size`` px views: the options, or the paper's ratios.

        Example:
            >>> RelativeLocation(selfsup.backbones.get("resnet_tiny", width=4)).layout(32)
            (7, 3, 1)
        """
        patch, gap, jitter = paper_patch_layout(size)
        if self.patch_size is not None:  # explicit patch: the paper's gap and jitter ratios
            patch = self.patch_size
            gap, jitter = patch // 2, max(1, round(7 * patch / 96))
        return (
            patch,
            gap if self.gap is None else self.gap,
            jitter if self.jitter is None else self.jitter,
        )

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """Cut patch grids, pair the centre with each neighbour and classify the neighbour's place.

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = RelativeLocation(backbone, patch_size=4, gap=1, hidden_dim=32)
            >>> views = [torch.randn(8, 3, 16, 16)]
            >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
            >>> 0 <= float(out.logs["position_acc"]) <= 1  # share of positions predicted right
            True
        """
        images = torch.cat(batch.views, dim=0)
        n, _, height, width = images.shape
        patch, gap, jitter = self.layout(min(height, width))
        corners = sample_patch_grid(n, height, width, patch, gap, jitter, device=images.device)
        patches = crop_patches(images, corners, patch)  # (n, 9, C, p, p)
        features = self.backbone(patches.flatten(0, 1)).view(n, 9, -1)
        neighbours = features[:, list(NEIGHBOURS)]  # (n, 8, d)
        centre = features[:, 4:5].expand_as(neighbours)
        logits = self.head(torch.cat([centre, neighbours], dim=2).flatten(0, 1))  # (8 n, 8)
        labels = torch.arange(len(NEIGHBOURS), device=images.device).repeat(n)
        with torch.autocast(logits.device.type, enabled=False):
            loss = F.cross_entropy(at_least_fp32(logits), labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        with torch.no_grad():
            probe_features = self.backbone(batch.views[0])
        return StepOutput(loss=loss, features=probe_features, logs={"position_acc": accuracy})
