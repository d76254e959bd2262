"""The shape every method has: views in, a loss out; hooks for state; parameter groups.

A method is a plain ``nn.Module``. Devices, precision, distribution, logging and checkpoints live
in :mod:`selfsup.engine`, so a method file holds only its algorithm, and a method also works in a
hand-written PyTorch loop (``loader`` yields uint8 images, labels and indices)::

    method = selfsup.methods.get("byol", backbone=selfsup.backbones.get("resnet18"))
    make_views = selfsup.augment.get(method.default_views, size=32, mean=(0.485, 0.456, 0.406),
                                     std=(0.229, 0.224, 0.225))  # the data's channel statistics
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    method.configure_training(epochs, steps_per_epoch=len(loader))
    for epoch in range(epochs):
        for i, (images, labels, indices) in enumerate(loader):
            progress = method.begin_step(epoch * len(loader) + i)  # step, epoch, fraction
            out = method.training_step(ViewBatch(make_views(images), labels, indices))
            optimizer.zero_grad()
            out.loss.backward()
            method.on_after_backward(progress)  # e.g. DINO's last layer kept frozen early on
            optimizer.step()
            method.end_step()  # EMA teachers, queues, prototypes
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.backbones.vit import POOLS, VisionTransformer
from selfsup.methods.card import BACKBONE_KINDS, MethodCard, backbone_kind
from selfsup.methods.progress import TrainingProgress
from selfsup.nn.momentum import MomentumTeacher


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

    Subclasses declare a :class:`~selfsup.methods.card.MethodCard` (``card = MethodCard(...)``:
    paper, family, default view recipe, accepted backbone kinds, test and benchmark sizes), build
    their heads in ``__init__(backbone, **hyperparameters)`` and implement :meth:`training_step`.
    ``default_views`` is read from the card, and the backbone's kind is checked against
    ``card.backbones`` here, once, with an error naming the accepted kinds. Methods with
    state outside the gradient (queues, prototypes) update it in :meth:`on_step_end`, which runs
    after every optimizer step. Momentum teachers (:class:`~selfsup.nn.MomentumTeacher` attributes)
    need no hook: the base class moves them along their schedules and logs their momentum. Whoever
    drives training (the engine, or a hand-written loop as above) calls, in this order:
    :meth:`configure_training` once, :meth:`on_epoch_start` each epoch, and each step
    :meth:`begin_step`, :meth:`training_step`, :meth:`on_after_backward` and :meth:`end_step`.
    :attr:`progress` (a :class:`~selfsup.methods.progress.TrainingProgress`: step, epoch, fraction
    of the run) is the step being trained, read by schedules in :meth:`training_step` and passed
    to the hooks; methods keep no step counters, so a resumed run continues exactly. A method that
    needs the data set's size (a memory bank per image) takes a ``num_samples`` argument, which the
    engine fills in.

    ``representation`` names the pooled ViT output the method's loss trains: ``"cls"`` (the final
    class token; the default, for methods whose heads read it) or ``"avg"`` (the mean of the final
    patch tokens, for masked-image methods whose loss reaches only the patch tokens). The base
    class sets it on a :class:`~selfsup.backbones.vit.VisionTransformer` backbone
    (``backbone.pool``), so evaluation (k-NN, probes, :meth:`embed`, the engine's monitors) and
    exports read the output that was trained; other backbones keep their own pooling.

    Example:
        >>> method = selfsup.methods.get("byol", backbone=selfsup.backbones.get("resnet_tiny"))
        >>> method.embed(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 64])
    """

    #: what the method is (paper, family, views, backbones, sizes); every registered method declares one
    card: ClassVar[MethodCard | None] = None
    #: name of the view recipe the method was published with (set from ``card.views``)
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
        check_backbone_kind(type(self), backbone)
        use_representation(backbone, self.representation, type(self).__name__)
        self.backbone = backbone
        self.epochs, self.steps_per_epoch = 1, 1
        self._deferred: list[tuple[Tensor, ...]] = []  # see defer()
        #: the step being trained (set by :meth:`begin_step`; step 0 of a one-step run before)
        self.progress = TrainingProgress(0, 1, 1)

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Read ``default_views`` from a card the subclass declares itself."""
        super().__init_subclass__(**kwargs)
        card = cls.__dict__.get("card")
        if isinstance(card, MethodCard):
            cls.default_views = card.views

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

        :meth:`begin_step` turns a step number into :attr:`progress` with these; methods whose
        hyper-parameters are given in epochs (DINO's teacher-temperature warm-up) read
        ``self.progress.epoch``.
        """
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.progress = self._progress_at(0)

    def on_epoch_start(self, epoch: int, train_features: Callable[[], Tensor]) -> None:
        """Called before each training epoch (0-based).

        ``train_features()`` computes, on demand, the backbone's features ``(N, feature_dim)`` of
        the whole training set in index order with the deterministic evaluation transform; methods
        that cluster the data set (DeepCluster, ODC) call it, the others ignore it.
        """

    def begin_step(self, step: int) -> TrainingProgress:
        """Start optimizer step ``step`` (0-based over the whole run, also after a resume).

        Sets :attr:`progress` from ``step`` and :meth:`configure_training`'s lengths and moves
        every momentum teacher's momentum to its scheduled value (the one :meth:`end_step` applies
        and :meth:`state_logs` reports). The engine calls it before :meth:`training_step`.

        Example:
            >>> method = selfsup.methods.get("byol", backbone=selfsup.backbones.get("resnet_tiny", width=4))
            >>> method.configure_training(epochs=10, steps_per_epoch=100)
            >>> method.begin_step(250)
            TrainingProgress(step=250, steps_per_epoch=100, total_steps=1000)
        """
        self.progress = self._progress_at(step)
        for teacher in self.momentum_teachers():
            teacher.set_fraction(self.progress.fraction)
        self._deferred.clear()  # left over from a step that was skipped (non-finite loss)
        return self.progress

    def defer(self, *tensors: Tensor) -> None:
        """Keep this batch's tensors for :meth:`on_step_end` (e.g. keys for a queue or rows for a
        memory bank, written after the optimizer step). With ``micro_batches`` > 1 a step trains on
        several batches, each deferring its own; :meth:`take_deferred` gives them all, in order.

        Example:
            >>> method = selfsup.methods.get("simclr", backbone=selfsup.backbones.get("resnet_tiny", width=4))
            >>> z, indices = torch.randn(8, 16), torch.arange(8)
            >>> method.defer(z.detach(), indices)  # in training_step
            >>> [(z.shape, indices.shape) for z, indices in method.take_deferred()]  # in on_step_end
            [(torch.Size([8, 16]), torch.Size([8]))]
        """
        if self.training:
            self._deferred.append(tensors)

    def take_deferred(self) -> list[tuple[Tensor, ...]]:
        """What :meth:`defer` kept since the step began, one tuple per batch; emptied."""
        taken, self._deferred = self._deferred, []
        return taken

    def _progress_at(self, step: int) -> TrainingProgress:
        steps_per_epoch = max(1, int(self.steps_per_epoch))
        return TrainingProgress(step, steps_per_epoch, max(1, int(self.epochs)) * steps_per_epoch)

    @torch.no_grad()
    def end_step(self) -> None:
        """Finish the step after the optimizer step: every momentum teacher takes its EMA step,
        then :meth:`on_step_end` updates the method's own state. The engine calls it."""
        for teacher in self.momentum_teachers():
            teacher.momentum_update()
        self.on_step_end(self.progress)

    def momentum_teachers(self) -> list[MomentumTeacher]:
        """The :class:`~selfsup.nn.MomentumTeacher` modules of this method (EMA targets)."""
        return [module for module in self.modules() if isinstance(module, MomentumTeacher)]

    def state_logs(self) -> dict[str, float]:
        """Values of the shared state to log with each step: each teacher's ``"momentum"``.

        Example:
            >>> byol = selfsup.methods.get("byol", backbone=selfsup.backbones.get("resnet_tiny", width=4))
            >>> byol.state_logs()
            {'momentum': 0.99}
        """
        logs: dict[str, float] = {}
        for teacher in self.momentum_teachers():
            logs.update(teacher.logs())
        return logs

    def on_after_backward(self, progress: TrainingProgress) -> None:
        """Called after the backward pass, before the optimizer step (e.g. to drop the gradients
        of a layer kept frozen early in training, as DINO and SwAV do)."""

    def on_step_end(self, progress: TrainingProgress) -> None:
        """Update the method's own state after an optimizer step (queues, prototypes, memory).

        ``progress.fraction`` is ``k / K`` for the k-th optimizer step (0-based) of a run of ``K``
        steps, so it is 0 after the first step, as in the schedules of BYOL and DINO. Momentum
        teachers were already updated by :meth:`end_step`.
        """

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups.

        By default biases and normalisation parameters (every parameter with fewer than two
        dimensions) get no weight decay and no LARS adaptation, as in SimCLR, BYOL and most
        official code. Frozen parameters (momentum copies) are left out. A group may set
        ``fixed_lr=True`` to keep its learning rate out of the schedule (SimSiam's predictor).
        """
        return decay_groups(self.named_parameters(), weight_decay)


def check_backbone_kind(method: type[Method], backbone: nn.Module) -> None:
    """Raise a TypeError naming ``method``, the backbone's class and the kinds its card accepts,
    when ``backbone`` is not of one of them (methods without a card accept any backbone).

    Example:
        >>> check_backbone_kind(selfsup.methods.METHODS.factory("mae"), selfsup.backbones.get("resnet_tiny"))
        Traceback (most recent call last):
        TypeError: MAE accepts only these backbone kinds: vit = VisionTransformer (...); ...
    """
    card = method.card
    kind = backbone_kind(backbone)
    if card is None or kind in card.backbones:
        return
    accepted = "; ".join(f"{k} = {BACKBONE_KINDS[k]}" for k in card.backbones)
    name = card.label if card.label == method.__name__ else f"{card.label} ({method.__name__})"
    raise TypeError(
        f"{name} accepts only these backbone kinds: {accepted}. Got "
        f"{type(backbone).__name__} (kind {kind!r}); choose another backbone, e.g. "
        f"{_EXAMPLE_BACKBONE[card.backbones[0]]}."
    )


_EXAMPLE_BACKBONE = {"resnet": "--backbone resnet18", "vit": "--backbone vit_tiny backbone.patch_size=4",
                     "swin": "--backbone swin_tiny", "other": "--backbone timm:convnext_tiny"}


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
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        >>> groups = decay_groups(model.named_parameters(), weight_decay=1e-4)
        >>> [(g["name"], len(g["params"]), g["weight_decay"]) for g in groups]  # the weight; the bias and BatchNorm
        [('decay', 1, 0.0001), ('no_decay', 3, 0.0)]
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
