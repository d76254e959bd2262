"""Distillation from a frozen pretrained teacher into any backbone.

LightlyTrain's distillation (v2): https://github.com/lightly-ai/lightly-train
(``_methods/distillationv2``), after Beyer et al. 2022, "Knowledge distillation: A good teacher is
patient and consistent", https://arxiv.org/abs/2106.05237.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from selfsup.backbones.base import Backbone
from selfsup.losses.distillation import FeatureMapMSELoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import MethodCard
from selfsup.methods.registry import METHODS


def build_teacher(teacher: str | None, teacher_backbone: Mapping[str, Any] | None,
                  teacher_weights: str | None, in_channels: int | None = None) -> Backbone:
    """The frozen teacher: a selfsup run, checkpoint or export (``teacher``), or a backbone built from
    ``teacher_backbone`` (``{"name": ..., **options}``; ``in_channels`` as the student's unless
    given) and started from ``teacher_weights`` (a torchvision, timm or selfsup state dict; see
    :func:`selfsup.backbones.pretrained.load_weights`).

    Example:
        >>> import tempfile
        >>> path = selfsup.backbones.export_backbone(selfsup.backbones.get("resnet_tiny", width=4),
        ...                                          tempfile.mkdtemp() + "/backbone.safetensors")
        >>> net = build_teacher(str(path), None, None)  # or a run folder, e.g. "runs/simclr"
        >>> net.name, net.training, any(p.requires_grad for p in net.parameters())
        ('resnet_tiny', False, False)
    """
    from selfsup import backbones
    from selfsup.backbones.pretrained import load_weights
    from selfsup.checkpoints import load_backbone

    if (teacher is None) == (teacher_backbone is None):
        raise ValueError("Distillation needs exactly one of method.teacher (a selfsup run folder, .ckpt or "
                         ".safetensors export) and method.teacher_backbone (e.g. {name: resnet50}, with "
                         f"method.teacher_weights); got teacher={teacher!r}, teacher_backbone={teacher_backbone!r}")
    if teacher is not None:
        if teacher_weights is not None:
            raise ValueError("method.teacher_weights goes with method.teacher_backbone; method.teacher already "
                             f"names its weights ({teacher!r})")
        with warnings.catch_warnings():  # the config check builds on the meta device: loading is a no-op there
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
            net, _ = load_backbone(teacher)
    else:
        if not isinstance(teacher_backbone, Mapping) or "name" not in teacher_backbone:
            raise ValueError(f"method.teacher_backbone must be a mapping with a 'name', got {teacher_backbone!r}")
        options = {k: v for k, v in teacher_backbone.items() if k != "name"}
        if in_channels is not None and not str(teacher_backbone["name"]).startswith("timm:"):
            options.setdefault("in_channels", in_channels)
        net = backbones.get(str(teacher_backbone["name"]), **options)
        if teacher_weights is None:
            warnings.warn("Distillation: the teacher has no weights (method.teacher_weights unset): the student "
                          "learns to copy a randomly initialised network", stacklevel=2)
        elif not Path(teacher_weights).is_file():
            raise ValueError(f"method.teacher_weights: no such file {teacher_weights!r}")
        elif not any(p.device.type == "meta" for p in net.parameters()):
            load_weights(net, teacher_weights)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


@METHODS.register("distillation")
class Distillation(Method):
    """The student's feature map, projected per position to the teacher's width, regresses the frozen
    teacher's feature map of the same (mixed-up) image.

    LightlyTrain's distillation v2: one strongly augmented view goes to both networks ("consistent"
    teaching, Beyer et al. 2022); with ``mixup`` the batch is first mixed with a random permutation of
    itself (``x <- l x + (1 - l) x[perm]``, ``l ~ U(0, 1)``, one ``l`` per batch); the student map
    ``(B, C, h, w)`` goes through a per-position linear layer to the teacher's width (weights
    truncated-normal with std 0.02) and :class:`~selfsup.losses.FeatureMapMSELoss` compares it, resized
    to the teacher's grid, with the teacher's map. LightlyTrain concatenates the patch tokens of the
    teacher's last two blocks; here the teacher's ``feature_map`` (its last block) is the target, so
    any selfsup backbone can teach. The teacher stays in evaluation mode and out of the optimizer.
    A ViT student is evaluated and exported on its mean patch token (``representation = "avg"``),
    the output the loss trains. The online probe reads the student's pooled map without ``mixup``
    (its labels are the unmixed images'); with it, the k-NN monitor alone follows the run.

    Example:
        >>> import tempfile
        >>> teacher = selfsup.backbones.export_backbone(selfsup.backbones.get("resnet_tiny", width=8),
        ...                                             tempfile.mkdtemp() + "/backbone.safetensors")  # e.g. "runs/dino"
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = Distillation(backbone, teacher=str(teacher))
        >>> views = [torch.randn(8, 3, 16, 16)]
        >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
        >>> method.training_step(batch).loss.shape
        torch.Size([])
    """

    card = MethodCard(
        label="Distillation", year=2022, authors="Beyer et al.",
        title="Knowledge distillation: A good teacher is patient and consistent",
        paper="https://arxiv.org/abs/2106.05237", code="https://github.com/lightly-ai/lightly-train",
        family="distillation", views="distillation", backbones=("resnet", "vit", "swin"),
        summary="regress a frozen pretrained teacher's feature map (LightlyTrain's distillation v2)",
        small=dict(teacher_backbone={"name": "resnet_tiny", "width": 4}, teacher_weights=None),
    )
    representation = "avg"  # a ViT student: the loss trains the patch tokens (its feature map), not the class token

    def __init__(
        self,
        backbone: Backbone,
        *,
        teacher: str | None = None,
        teacher_backbone: dict | None = None,
        teacher_weights: str | None = None,
        mixup: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(backbone)
        self.teacher = build_teacher(teacher, teacher_backbone, teacher_weights, backbone.config.get("in_channels"))
        self.head = nn.Conv2d(self.feature_dim, self.teacher.feature_dim, kernel_size=1)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.criterion = FeatureMapMSELoss()
        self.mixup, self.seed = mixup, seed

    def train(self, mode: bool = True) -> "Distillation":
        """Train mode for the student and head; the teacher always evaluates (frozen BatchNorm statistics)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def mix(self, images: torch.Tensor) -> torch.Tensor:
        """The batch mixed with a permutation of itself, drawn from a generator seeded by the step."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.progress.step)
        weight = float(torch.rand((), generator=generator))
        order = torch.randperm(len(images), generator=generator).to(images.device)
        return weight * images + (1.0 - weight) * images[order]

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """The distillation loss of the first view.

        Example:
            >>> import tempfile
            >>> teacher = selfsup.backbones.export_backbone(selfsup.backbones.get("resnet_tiny", width=8),
            ...                                             tempfile.mkdtemp() + "/backbone.safetensors")
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = Distillation(backbone, teacher=str(teacher))
            >>> views = [torch.randn(8, 3, 16, 16)]
            >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
            >>> method.training_step(batch).loss.backward()
        """
        x = batch.views[0]
        if self.mixup:
            x = self.mix(x)
        with torch.no_grad():
            target = self.teacher.feature_map(x)
        student_map = self.backbone.feature_map(x)
        loss = self.criterion(self.head(student_map), target)
        # the probe's labels belong to the unmixed images, so it only reads unmixed features
        features = None if self.mixup else student_map.mean(dim=(2, 3))
        return StepOutput(loss=loss, features=features)
