"""The shape every method has: views in, a loss out; hooks for state; parameter groups.

A method is a plain ``nn.Module``. Devices, precision, distribution, logging and checkpoints live
in :mod:`selfsup.engine`, so a method file holds only its algorithm, and a method also works in a
hand-written PyTorch loop::

    method = selfsup.methods.get("simclr", backbone=selfsup.backbones.get("resnet18"))
    make_views = selfsup.augment.get(method.default_views, size=32)
    for step, (images, labels, indices) in enumerate(loader):
        out = method.training_step(ViewBatch(make_views(images), labels, indices))
        out.loss.backward(); optimizer.step(); optimizer.zero_grad()
        method.on_step_end(progress=step / total_steps)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.backbones.vit import POOLS, VisionTransformer


@dataclass
class ViewBatch:
    """One training batch after augmentation.

    Attributes:
        views: augmented, normalised float views, each (B, C, H, W); the order is the recipe's
            (two-view recipes: view 0 and view 1; multi-crop: global views first).
        labels: (B,) class labels, -1 where unknown.
        indices: (B,) positions of the samples in the data set (for memory banks).
    """

    views: list[Tensor]
    labels: Tensor
    indices: Tensor


@dataclass
class StepOutput:
    """What a method's training step returns.

    Attributes:
        loss: the scalar to minimise.
        features: backbone features of ``views[0]`` (B, feature_dim) if the method computed
            them anyway, pooled as the backbone's forward pools them (for a ViT, the method's
            :attr:`Method.representation`); the engine trains the online linear probe on them
            (detached). When None the engine does not run the probe for this step.
        logs: extra named values to log (tensors or floats), e.g. the momentum in use.
    """

    loss: Tensor
    features: Tensor | None = None
    logs: dict[str, Tensor | float] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of all self-supervised methods.

    Subclasses set ``default_views`` (a recipe in :mod:`selfsup.augment`), build their heads in
    ``__init__(backbone, **hyperparameters)`` and implement :meth:`training_step`. Methods with
    state outside the gradient (EMA teachers, queues, prototypes) update it in :meth:`on_step_end`,
    which the engine calls after every optimizer step with the training progress in [0, 1]. The
    other hooks, in the order the engine calls them: :meth:`configure_training` once,
    :meth:`on_epoch_start` each epoch, :meth:`on_after_backward` each step. A method that needs the
    data set's size (a memory bank per image) takes a ``num_samples`` argument, which the engine
    fills in.

    ``representation`` names the pooled ViT output the method's loss trains: ``"cls"`` (the final
    class token; the default, for methods whose heads read it) or ``"avg"`` (the mean of the final
    patch tokens, for masked-image methods whose loss reaches only the patch tokens). The base
    class sets it on a :class:`~selfsup.backbones.vit.VisionTransformer` backbone
    (``backbone.pool``), so evaluation (k-NN, probes, :meth:`embed`, the engine's monitors) and
    exports read the output that was trained; other backbones keep their own pooling.

    Example:
        >>> method = selfsup.methods.get("byol", backbone=selfsup.backbones.get("resnet_tiny"))
        >>> method.embed(torch.zeros(2, 3, 32, 32)).shape  # torch.Size([2, 64])
    """

    #: name of the view recipe the method was published with
    default_views: ClassVar[str] = "simclr"
    #: the pooled ViT output the loss trains, which evaluation and exports read: "cls" or "avg"
    representation: ClassVar[str] = "cls"

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        if not hasattr(backbone, "feature_dim"):
            raise TypeError(
                f"{type(self).__name__} needs a backbone with a `feature_dim` attribute (the size "
                f"of its pooled output); got {type(backbone).__name__}. Wrap your encoder or use "
                "selfsup.backbones.get(...)."
            )
        use_representation(backbone, self.representation, type(self).__name__)
        self.backbone = backbone
        self.epochs, self.steps_per_epoch = 1, 1

    @property
    def feature_dim(self) -> int:
        """Size of the representation returned by :meth:`embed`."""
        return int(self.backbone.feature_dim)

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """The representation used for evaluation: pooled backbone features (no gradient)."""
        return self.backbone(images)

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """Turn a batch of views into the method's loss."""
        raise NotImplementedError

    def forward(self, batch: ViewBatch) -> StepOutput:
        return self.training_step(batch)

    def configure_training(self, epochs: int, steps_per_epoch: int) -> None:
        """Told once by the engine (or a hand-written loop) how long training runs.

        Methods whose hyper-parameters are given in epochs (DINO's teacher-temperature warm-up,
        SwAV's prototype freezing) convert them with ``self.epochs`` and ``self.steps_per_epoch``.
        """
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch

    def on_epoch_start(self, epoch: int, train_features: Callable[[], Tensor]) -> None:
        """Called before each training epoch (0-based).

        ``train_features()`` computes, on demand, the backbone's features ``(N, feature_dim)`` of
        the whole training set in index order with the deterministic evaluation transform; methods
        that cluster the data set (DeepCluster, ODC) call it, the others ignore it.
        """

    def on_after_backward(self, progress: float) -> None:
        """Called after the backward pass, before the optimizer step (e.g. to zero the gradients
        of a layer kept frozen early in training, as DINO and SwAV do)."""

    def on_step_end(self, progress: float) -> None:
        """Update state after an optimizer step.

        ``progress`` is ``k / K`` for the k-th optimizer step (0-based) of a run of ``K`` steps,
        so it is 0 after the first step, as in the schedules of BYOL and DINO.
        """

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups.

        By default biases and normalisation parameters (every parameter with fewer than two
        dimensions) get no weight decay and no LARS adaptation, as in SimCLR, BYOL and most
        official code. Frozen parameters (momentum copies) are left out. A group may set
        ``fixed_lr=True`` to keep its learning rate out of the schedule (SimSiam's predictor).
        """
        return decay_groups(self.named_parameters(), weight_decay)


def use_representation(backbone: nn.Module, representation: str, method: str) -> None:
    """Make a ViT ``backbone`` pool as ``representation`` (``"cls"`` / ``"avg"``); other backbones
    are left alone. A pooling the caller chose explicitly (``backbone.pool=...``) must agree.

    Used by :class:`Method` at construction and by :func:`selfsup.checkpoints.load_backbone` when
    it rebuilds a run's backbone from its config.

    Example:
        >>> vit = selfsup.backbones.get("vit_tiny", image_size=32, patch_size=4)
        >>> use_representation(vit, "avg", "SimMIM"); vit.pool
        'avg'
    """
    if representation not in POOLS:
        raise ValueError(f"{method}.representation must be one of {sorted(POOLS)}; got {representation!r}")
    if not isinstance(backbone, VisionTransformer):
        return
    if backbone.pool_requested and backbone.pool != representation:
        raise ValueError(
            f"{method} trains the ViT's {POOLS[representation]} (representation {representation!r}), and evaluation "
            f"and exports read that output; backbone.pool={backbone.pool!r} asks for the {POOLS[backbone.pool]} "
            f"instead. Remove backbone.pool (the method sets it) or set backbone.pool={representation}."
        )
    backbone.set_pool(representation)


def decay_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]], weight_decay: float, prefix: str = "",
    **options: object,
) -> list[dict]:
    """Split trainable parameters into a weight-decay group and a no-decay, no-LARS group.

    Parameters with fewer than two dimensions (biases, normalisation scales and shifts) go to the
    second group. ``options`` (e.g. ``fixed_lr=True``) are added to both groups.

    Example:
        >>> groups = decay_groups(model.named_parameters(), weight_decay=1e-4)
        >>> [g["name"] for g in groups]  # ['decay', 'no_decay']
    """
    decay, no_decay = [], []
    for _, param in named_parameters:
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return [
        {"name": f"{prefix}decay", "params": decay, "weight_decay": weight_decay, **options},
        {"name": f"{prefix}no_decay", "params": no_decay, "weight_decay": 0.0,
         "lars_exclude": True, **options},
    ]
