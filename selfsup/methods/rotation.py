"""RotNet: "Unsupervised Representation Learning by Predicting Image Rotations".

Gidaris, Singh, Komodakis, 2018. https://arxiv.org/abs/1803.07728
Official code: https://github.com/gidariss/FeatureLearningRotNet
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from selfsup.backbones.base import Backbone
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn.mlp import MLP
from selfsup.nn.precision import at_least_fp32
from selfsup.nn.rotation import rotate_batch


@METHODS.register("rotation")
class RotationPrediction(Method):
    """Classify the rotation (0, 90, 180 or 270 degrees) applied to an image.

    Every view enters the batch in all four orientations (RotNet, Sec. 2.2: "feeding all four
    rotated copies of an image simultaneously"), built on the device with
    :func:`selfsup.nn.rotation.rotate_batch`; a head on the pooled backbone features predicts the
    4-way rotation label and the loss is the mean cross-entropy over the ``4 * views * B`` images.
    The default head is linear, as the rotation head of mmselfsup's ResNet-50 RotNet
    (``RotationPredHead``); ``head_hidden_dims`` adds hidden layers (Linear, BatchNorm, ReLU),
    like the paper's fully connected classifier on top of AlexNet (Sec. 3.2). Views: crop and
    flip only (the paper's CIFAR-10 training uses random crops and horizontal flips).

    Args:
        backbone: Encoder with ``feature_dim``.
        head_hidden_dims: Widths of the head's hidden layers; empty for a linear head.

    Example:
        >>> method = RotationPrediction(selfsup.backbones.get("resnet_tiny", width=4))
        >>> views = [torch.randn(8, 3, 16, 16)]  # one augmented view of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> 0 <= float(out.logs["rotation_acc"]) <= 1
        True
    """

    card = MethodCard(
        label="RotNet", year=2018, authors="Gidaris et al.",
        title="Unsupervised Representation Learning by Predicting Image Rotations",
        paper="https://arxiv.org/abs/1803.07728", code="https://github.com/gidariss/FeatureLearningRotNet",
        family="pretext task", views="crop_flip", backbones=ANY_BACKBONE,
        summary="predict which of 4 rotations (0/90/180/270) was applied",
        small={},
    )

    def __init__(self, backbone: Backbone, *, head_hidden_dims: Sequence[int] = ()) -> None:
        super().__init__(backbone)
        self.head = MLP([self.feature_dim, *head_hidden_dims, 4])

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """Rotate every view four ways and return the rotation cross-entropy.

        Args:
            batch: Views ``(B, C, H, H)``; the features returned are those of ``views[0]``
                unrotated (the first ``B`` rows of the rotated batch).

        Example:
            >>> method = RotationPrediction(selfsup.backbones.get("resnet_tiny", width=4))
            >>> views = [torch.randn(8, 3, 16, 16)]  # each image is trained in its 4 rotations
            >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
            >>> 0 <= float(out.logs["rotation_acc"]) <= 1  # share of rotations predicted right
            True
        """
        images = torch.cat(batch.views, dim=0)
        rotated, labels = rotate_batch(images)
        features = self.backbone(rotated)
        logits = self.head(features)
        with torch.autocast(logits.device.type, enabled=False):
            loss = F.cross_entropy(at_least_fp32(logits), labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        n = batch.views[0].shape[0]
        return StepOutput(loss=loss, features=features[:n], logs={"rotation_acc": accuracy})
