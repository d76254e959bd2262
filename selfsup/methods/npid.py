"""NPID: "Unsupervised Feature Learning via Non-Parametric Instance Discrimination".

Wu, Xiong, Yu, Lin, 2018. https://arxiv.org/abs/1805.01978
Official code: https://github.com/zhirongw/lemniscate.pytorch
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.backbones.base import Backbone
from selfsup.losses.npid import NPIDLoss
from selfsup.methods.base import Method, StepOutput, TrainingProgress, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS

MEMORY_INITS = ("features", "random")


@torch.no_grad()
def features_with_calibrated_batch_norm(backbone: nn.Module, compute: Callable[[], Tensor]) -> Tensor:
    """``compute()`` run with the backbone's BatchNorm running estimates set from the data, then restored.

    At initialisation a BatchNorm layer's running estimates are mean 0, variance 1, so an eval-mode
    pass (the evaluation features of ``train_features()``) computes a different function from the
    training forward, which normalises by batch statistics. ``compute()`` (a pass over the data
    through ``backbone``, which is put in eval mode for it) is therefore run twice: first with
    every BatchNorm layer normalising by its input batch's statistics while their average over the
    batches (PyTorch's ``momentum=None`` estimate: batch means, unbiased batch variances) is taken;
    then with those averages as the running estimates, so that an image's features do not depend on
    the other images of its batch. The layers' own estimates and the backbone's mode are restored
    afterwards, so the network is unchanged. Without BatchNorm layers (a ViT) ``compute()`` runs once.

    Example:
        >>> backbone, images = selfsup.backbones.get("resnet_tiny", width=4), torch.randn(32, 3, 16, 16)
        >>> def train_features(): return torch.cat([backbone(x) for x in images.split(8)])  # in index order
        >>> features = features_with_calibrated_batch_norm(backbone, train_features)
        >>> features.shape, backbone.training  # its mode (and BatchNorm estimates) are restored
        (torch.Size([32, 32]), True)
    """
    layers = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and m.running_mean is not None and m.running_var is not None]
    was_training = backbone.training
    backbone.eval()
    try:
        return compute() if not layers else _calibrated(layers, compute)
    finally:
        backbone.train(was_training)


def _calibrated(layers: list[nn.Module], compute: Callable[[], Tensor]) -> Tensor:
    """The two passes of :func:`features_with_calibrated_batch_norm` (the backbone is in eval mode)."""
    totals: dict[nn.Module, list[Any]] = {bn: [0.0, 0.0, 0] for bn in layers}

    def accumulate(bn: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        x = inputs[0].detach().float()
        dims = [d for d in range(x.dim()) if d != 1]
        if x.numel() // x.shape[1] > 1:
            totals[bn][0] += x.mean(dims)
            totals[bn][1] += x.var(dims, correction=1)
            totals[bn][2] += 1

    estimates = [(bn.running_mean, bn.running_var) for bn in layers]
    hooks = [bn.register_forward_pre_hook(accumulate) for bn in layers]
    try:  # in eval mode a BatchNorm layer without running estimates normalises by batch statistics
        for bn in layers:
            bn.running_mean, bn.running_var = None, None
        compute()
    finally:
        for hook in hooks:
            hook.remove()
        for bn, (mean, var) in zip(layers, estimates):
            bn.running_mean, bn.running_var = mean, var
    saved = [(mean.clone(), var.clone()) for mean, var in estimates]
    try:
        for bn, (mean_sum, var_sum, batches) in totals.items():
            if batches:
                bn.running_mean.copy_(mean_sum / batches)
                bn.running_var.copy_(var_sum / batches)
        return compute()
    finally:
        for (mean, var), (mean0, var0) in zip(estimates, saved):
            mean.copy_(mean0)
            var.copy_(var0)


@METHODS.register("npid")
class NPID(Method):
    """Instance discrimination against a memory bank of one 128-d vector per training image.

    One augmented view per image; the backbone's pooled features go through a linear layer to
    ``proj_output_dim`` (128) and are L2-normalised (the official ``low_dim`` head), then
    :class:`~selfsup.losses.npid.NPIDLoss` scores them against the memory bank with NCE
    (``num_negatives`` 4096, temperature 0.07, the paper's ImageNet values) or the exact softmax
    (``num_negatives=0``). After every optimizer step (:meth:`on_step_end`) the memory rows of the
    batch's ``indices`` become ``normalise(m v + (1 - m) f)`` with ``m = memory_momentum`` (0.5)
    and ``f`` the features the loss used. ``num_samples`` (the training-set size) is filled in by
    the engine.

    **Memory start** (``memory_init``). ``"random"`` is the official code's: uniform random rows
    (``NCEAverage`` / ``LinearAverage``; the paper, Sec. 3.1: "unit random vectors"). But the paper
    defines ``v_i`` as the network's own earlier feature of image ``i`` (Sec. 3.1), the positive
    that ``f_i`` is pulled towards (Eq. 2; the proximal term of Sec. 3.3 keeps ``f_i`` near it), so
    with a random start the network is trained to send each image to a random direction until its
    row has been rewritten a few times (once per epoch; ``m = 0.5`` halves the random part at each
    visit): washed out over the official 200 epochs, harmful at short budgets. ``"features"`` (the
    default) therefore fills every row once, before the first step, with ``normalise(projector(h_i))``
    of the initial network, which is what the paper's definitions assume from step 0. ``h_i`` are
    the backbone features of ``train_features()``: the un-augmented image (the evaluation
    transform), whose embedding is as close to an augmented view's as two augmented views are to
    each other (cosine 0.89 vs 0.88 at initialisation, Fashion-MNIST, ``resnet_small``), and from
    which the official code's own evaluation (``test.py``, ``recompute_memory``) also refills the
    bank. The pass runs with BatchNorm estimates calibrated on the data
    (:func:`features_with_calibrated_batch_norm`): with the initial estimates (mean 0, variance 1)
    the eval-mode embedding of an image had cosine 0.61 to its training-mode one. NCE's ``Z`` is
    then estimated on the first batch against the filled bank, as the paper prescribes (Sec. 3.2);
    the initial embeddings lie close together, so it is about 6,200 n here against 1.5 n for a
    random bank, and the noise samples push less once the embedding spreads (keeping the random
    bank's value instead pushed the tight initial embedding apart: worse over the first 100 steps).
    The exact softmax (``num_negatives=0``) has no such constant. Measured (``fashion_mnist/npid``
    with NCE, ``resnet_small`` width 16, batch 256, 2 epochs, validation k-NN; the initial network
    74.4): random start 48.0 after one epoch and 53.0 after two; features 76.8 and 76.9; features
    with the exact softmax 77.6 and 78.6. Whether the larger ``Z`` changes the official 200-epoch
    NCE results was not measured. A resumed run does not refill (the loss's ``memory_filled`` buffer is in the
    checkpoint). In a hand-written loop call :meth:`fill_memory` (or ``on_epoch_start(0, ...)``)
    once before training; :meth:`training_step` refuses to start from an unfilled memory.

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = NPID(backbone, num_samples=32, proj_output_dim=16, num_negatives=8)
        >>> method.fill_memory(torch.randn(32, 32))  # (32, 32): backbone features of the 32 training images
        >>> views = [torch.randn(8, 3, 16, 16)]
        >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
        >>> method.training_step(batch).loss.shape
        torch.Size([])
    """

    card = MethodCard(
        label="NPID", year=2018, authors="Wu et al.",
        title="Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
        paper="https://arxiv.org/abs/1805.01978", code="https://github.com/zhirongw/lemniscate.pytorch",
        family="contrastive", views="npid", backbones=ANY_BACKBONE,
        summary="one memory vector per image, non-parametric softmax by NCE",
        small=dict(proj_output_dim=16, num_negatives=8),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_samples: int,
        proj_output_dim: int = 128,
        temperature: float = 0.07,
        num_negatives: int = 4096,
        memory_momentum: float = 0.5,
        memory_init: str = "features",
        seed: int = 0,
    ) -> None:
        super().__init__(backbone)
        if memory_init not in MEMORY_INITS:
            raise ValueError(f"NPID memory_init must be one of {MEMORY_INITS}, got {memory_init!r}")
        self.memory_init = memory_init
        self.projector = nn.Linear(self.feature_dim, proj_output_dim)
        self.criterion = NPIDLoss(
            num_samples=num_samples, dim=proj_output_dim, temperature=temperature,
            num_negatives=num_negatives, momentum=memory_momentum, seed=seed,
        )
        self._memory_checked = False

    @torch.no_grad()
    def fill_memory(self, features: Tensor | Iterable[Tensor], chunk_size: int = 65536) -> None:
        """Set memory row ``i`` to ``normalise(projector(features[i]))``, for every training image.

        ``features`` are backbone features ``(num_samples, feature_dim)`` of the training set in
        index order (the order of ``ViewBatch.indices``), as one tensor or as an iterable of
        ``(b, feature_dim)`` chunks in that order (e.g. a loop over a non-shuffled loader). They
        are projected ``chunk_size`` rows at a time on the projector's device. With several
        processes every rank must call this; all keep rank 0's bank. For an initial network with
        BatchNorm, compute them as :meth:`on_epoch_start` does, through
        :func:`features_with_calibrated_batch_norm` (eval-mode features with the initial running
        estimates are not what the training forward computes).

        Raises:
            ValueError: the chunks do not add up to ``num_samples`` rows of width ``feature_dim``.

        Example:
            >>> train_set = selfsup.data.get("digits", split="train")
            >>> eval_transform = selfsup.augment.EvalTransform(8, train_set.mean, train_set.std)
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4, in_channels=1)
            >>> method = NPID(backbone, num_samples=len(train_set), proj_output_dim=16, num_negatives=8)
            >>> loader = torch.utils.data.DataLoader(train_set, batch_size=512, shuffle=False)
            >>> def features(): return torch.cat([method.embed(eval_transform(x)) for x, _, _ in loader])
            >>> method.fill_memory(features_with_calibrated_batch_norm(method.backbone, features))
        """
        chunks = features.split(chunk_size) if isinstance(features, Tensor) else features
        weight = self.projector.weight
        projected = []
        for chunk in chunks:
            if chunk.dim() != 2 or chunk.shape[1] != self.feature_dim:
                raise ValueError(f"NPID.fill_memory expects backbone features (n, {self.feature_dim}), got a "
                                 f"chunk of shape {tuple(chunk.shape)}")
            projected.append(self.projector(chunk.to(weight.device, weight.dtype)).float())
        rows = sum(len(p) for p in projected)
        if rows != self.criterion.num_samples:
            raise ValueError(f"NPID.fill_memory got features of {rows} images, but the memory has "
                             f"num_samples={self.criterion.num_samples} rows (one per training image)")
        self.criterion.fill_memory(torch.cat(projected))

    def on_epoch_start(self, epoch: int, train_features: Callable[[], Tensor]) -> None:
        """With ``memory_init="features"``, fill the memory once (not again on later epochs or a resume).

        ``train_features()`` runs twice: once to calibrate the BatchNorm estimates for the pass (see
        :func:`features_with_calibrated_batch_norm`), once for the features.
        """
        if self.memory_init == "features" and not bool(self.criterion.memory_filled):
            self.fill_memory(features_with_calibrated_batch_norm(self.backbone, train_features))

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """NCE loss of the normalised 128-d features of ``views[0]``; the memory update is deferred."""
        if not self._memory_checked:
            if self.memory_init == "features" and not bool(self.criterion.memory_filled):
                raise RuntimeError(
                    "NPID.training_step before its memory was filled (memory_init='features'): call "
                    "method.fill_memory(backbone features of the training set, in index order) or "
                    "method.on_epoch_start(0, train_features) once before training (the engine does), "
                    "or build NPID with memory_init='random' for the official code's random start."
                )
            self._memory_checked = True
        features = self.backbone(batch.views[0])
        z = F.normalize(self.projector(features), dim=1)
        loss = self.criterion(z, batch.indices)
        self.defer(z.detach(), batch.indices.detach())  # the memory update waits for on_step_end
        return StepOutput(loss=loss, features=features, logs={"npid_z": float(self.criterion.z)})

    @torch.no_grad()
    def on_step_end(self, progress: TrainingProgress) -> None:
        """Write ``normalise(m v + (1 - m) f)`` into the memory rows of the step's batches."""
        for z, indices in self.take_deferred():
            self.criterion.update_memory(z, indices)
