"""W-MSE: "Whitening for Self-Supervised Representation Learning".

Ermolov, Siarohin, Sangineto, Sebe, 2021 (ICML). https://arxiv.org/abs/2007.06346
Official code: https://github.com/htdt/self-supervised
"""
from __future__ import annotations

import logging
import math
from collections import deque

import torch

from selfsup.backbones.base import Backbone
from selfsup.losses.wmse import WMSELoss
from selfsup.methods.base import Method, StepOutput, ViewBatch
from selfsup.methods.card import ANY_BACKBONE, MethodCard
from selfsup.methods.registry import METHODS
from selfsup.nn import MLP
from selfsup.nn.whitening import WhiteningCollapseError

log = logging.getLogger(__name__)


@METHODS.register("wmse")
class WMSE(Method):
    """All views through one backbone and head, then the W-MSE loss over every pair of views.

    Defaults are the official code's CIFAR settings: head ``1024-64`` (Linear, BatchNorm, ReLU,
    Linear), whitening sub-batches of 128, one whitening iteration, no covariance shrinkage. The
    number of views is whatever the view recipe yields (W-MSE 2 with the default two-view recipe;
    the paper's W-MSE 4 needs a four-view recipe). The (global) batch must be a multiple of
    ``w_size``.

    The projection head runs in float32 even under bf16 / fp16 autocast (the backbone does not):
    the whitening scales each direction of the embeddings to unit variance, so it also scales up
    their rounding error, by up to the square root of the covariance's condition number, and a
    bf16 head's error (relative 2^-9) is of the size of the weakest directions once that number
    passes ~1e5. In Fashion-MNIST runs (``resnet_small``, bf16 autocast on the CPU, bf16 head) the
    condition number grew by about a decade every 50-100 steps after the warm-up until the run
    collapsed (3 of 4 runs of an 8-epoch schedule by step 450, channels-last or not); from one
    collapsed run's
    step-211 checkpoint, float32 training kept it at 1e3.6-1e4.2 to step 419 (no collapse), and
    with the float32 head two new seeds stayed at 1e3.2-1e4.4 (see
    ``selfsup/configs/fashion_mnist/wmse.yaml``).

    Collapse check. W-MSE's loss cannot see the scale or shape of the embeddings' covariance (the
    whitening removes both), so nothing keeps that covariance well conditioned; when its condition
    number passes what the whitening's precision resolves (``1 / eps``, 8.4e6 in float32) the
    weakest whitened directions are rounding noise, and soon it is not positive definite at all,
    which stops the official code with a Cholesky error. (In a Fashion-MNIST run of the
    ``resnet_small`` recipe before it was changed, the condition number grew from 1e4 at step 211
    to 1e6 at step 423 and 10^7.7 at step 449, while the online probe fell from 58% to 14%.)
    Such a sub-batch, singular to the whitening's precision
    (:func:`selfsup.nn.whitening.singular_to_precision`), is still whitened (with a little extra
    shrinkage when needed) and counted: ``whiten_shrunk`` logs the share of such sub-batches in
    each step, ``whiten_shrunk_window`` their share over the last ``collapse_window`` steps and
    ``whiten_log10_cond`` the step's largest log10 condition number. When the share over a full
    window reaches ``collapse_share``, the step raises
    :class:`~selfsup.nn.whitening.WhiteningCollapseError` (a :class:`~selfsup.errors.SelfSupError`,
    which the command line prints as one paragraph) naming the step and what to change, before
    any weight is updated; an isolated singular sub-batch does not stop the run.
    ``collapse_window=0`` turns the check off. The condition number counted is that of the
    embeddings' own covariance, before ``w_eps``, so shrinkage does not hide a collapse; nor did
    it prevent one: resumed from the same step-211 checkpoint, ``w_eps=0.1`` and a shrinkage
    towards the mean variance (1%) both drove that number past 1e6 within 50 steps (a shrunk
    whitening lets the loss fall as directions die). With ``w_size`` not above
    ``proj_output_dim`` (possible with ``w_eps > 0``) nothing is counted. The window is not saved
    in checkpoints: a resumed run starts it afresh.

    Args:
        backbone: The encoder.
        proj_hidden_dim: Hidden width of the projection head.
        proj_output_dim: Width of the whitened embeddings; must be below ``w_size`` unless
            ``w_eps > 0``.
        w_size: Whitening sub-batch size.
        w_iter: Random sub-batch partitions averaged per step.
        w_eps: Shrinkage of each covariance towards the identity (the official ``w_eps``).
        gather_distributed: Whiten the global batch across processes.
        collapse_window: Steps over which singular sub-batches are counted (0: never stop).
        collapse_share: Share of singular sub-batches over a full window, in ``(0, 1]``, that
            stops the run (default: half of them over 20 steps).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = WMSE(backbone, w_size=8, proj_hidden_dim=32, proj_output_dim=4)
        >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]  # two augmented views of 8 images
        >>> out = method.training_step(selfsup.methods.ViewBatch(views, torch.full((8,), -1), torch.arange(8)))
        >>> out.loss.shape  # whitening batches of w_size=8 samples: the batch must be a multiple of it
        torch.Size([])
    """

    card = MethodCard(
        label="W-MSE", year=2021, authors="Ermolov et al.",
        title="Whitening for Self-Supervised Representation Learning", paper="https://arxiv.org/abs/2007.06346",
        code="https://github.com/htdt/self-supervised", family="redundancy reduction", views="mocov2",
        backbones=ANY_BACKBONE,
        summary="MSE between positives after Cholesky whitening of sub-batches",
        small=dict(proj_hidden_dim=32, proj_output_dim=8, w_size=16),
    )

    def __init__(
        self,
        backbone: Backbone,
        *,
        proj_hidden_dim: int = 1024,
        proj_output_dim: int = 64,
        w_size: int = 128,
        w_iter: int = 1,
        w_eps: float = 0.0,
        gather_distributed: bool = True,
        collapse_window: int = 20,
        collapse_share: float = 0.5,
    ) -> None:
        super().__init__(backbone)
        if collapse_window < 0 or not 0.0 < collapse_share <= 1.0:
            raise ValueError(
                f"WMSE needs collapse_window >= 0 (0 turns the collapse check off) and 0 < collapse_share <= 1, "
                f"got collapse_window={collapse_window}, collapse_share={collapse_share}"
            )
        if w_size <= proj_output_dim and w_eps == 0.0:
            raise ValueError(
                f"WMSE: w_size={w_size} samples cannot have a non-singular covariance in proj_output_dim="
                f"{proj_output_dim} dimensions; make method.w_size larger than method.proj_output_dim (the paper "
                "uses 128 for 64 and 256 for 128), or set method.w_eps > 0"
            )
        self.projector = MLP([self.feature_dim, proj_hidden_dim, proj_output_dim])
        self.criterion = WMSELoss(w_size=w_size, w_iter=w_iter, eps=w_eps, gather_distributed=gather_distributed)
        self.collapse_window, self.collapse_share = int(collapse_window), float(collapse_share)
        # (singular, whitened) sub-batch counts of the last collapse_window steps
        self.recent: deque[tuple[int, int]] = deque(maxlen=max(1, self.collapse_window))
        self.singular_total = 0  # singular sub-batches since the start (or resume) of the run

    def training_step(self, batch: ViewBatch) -> StepOutput:
        """W-MSE over all pairs of the batch's views.

        Raises:
            WhiteningCollapseError: The share of singular sub-batches over the last
                ``collapse_window`` steps reached ``collapse_share``.

        Example:
            >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
            >>> method = WMSE(backbone, w_size=8, proj_hidden_dim=32, proj_output_dim=4)
            >>> views = [torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)]
            >>> batch = selfsup.methods.ViewBatch(views, labels=torch.full((8,), -1), indices=torch.arange(8))
            >>> method.training_step(batch).loss.backward()
        """
        n = len(batch.views[0])
        features = self.backbone(torch.cat(batch.views))
        with torch.autocast(features.device.type, enabled=False):  # the head in fp32: see the class docstring
            embeddings = self.projector(features.float()).split(n)
        try:
            loss = self.criterion(list(embeddings))
        except WhiteningCollapseError as err:
            raise WhiteningCollapseError(f"W-MSE collapsed {self.where()}: {err} {self.advice()}") from None
        share = self.count_singular()
        logs = {"whiten_shrunk": self.criterion.shrunk_fraction, "whiten_shrunk_window": share,
                "whiten_log10_cond": math.log10(self.criterion.max_condition)}
        return StepOutput(loss=loss, features=features[:n], logs=logs)

    def count_singular(self) -> float:
        """Record this step's singular sub-batches; raise once they reach ``collapse_share`` of a
        full window. Returns their share over the (possibly not yet full) window."""
        singular, total = self.criterion.shrunk_count, self.criterion.whitening_count
        self.recent.append((singular, total))
        share = sum(s for s, _ in self.recent) / max(1, sum(t for _, t in self.recent))
        if singular and not self.singular_total:
            log.warning("W-MSE: %d of %d whitening sub-batches had a covariance singular to the whitening's "
                        "precision %s; training goes on, and stops if their share over %d steps reaches %g (logged as "
                        "train/whiten_shrunk and train/whiten_shrunk_window).", singular, total, self.where(),
                        self.collapse_window, self.collapse_share)
        self.singular_total += singular
        if self.collapse_window and len(self.recent) == self.collapse_window and share >= self.collapse_share:
            singular_window = sum(s for s, _ in self.recent)
            total_window = sum(t for _, t in self.recent)
            raise WhiteningCollapseError(
                f"W-MSE collapsed {self.where()}: {singular_window} of the {total_window} whitening sub-batches of the "
                f"last {self.collapse_window} steps ({share:.0%}, at least method.collapse_share="
                f"{self.collapse_share:g}) had a covariance singular to the whitening's precision (not positive "
                f"definite, or a condition number above 1/eps of its dtype, 8.4e6 in float32; largest now "
                f"{self.criterion.max_condition:.2g}): the "
                f"{self.criterion.w_size} embeddings of a sub-batch no longer span their {self.projector.out_dim} "
                f"dimensions; this step changed no weight. {self.advice()}"
            )
        return share

    def where(self) -> str:
        """'at optimizer step s (epoch e)' for messages (``self.progress``, the step being trained)."""
        return f"at optimizer step {self.progress.step} (epoch {self.progress.epoch})"

    def advice(self) -> str:
        """What to change after a collapse."""
        return (f"To avoid it: lower optimizer.lr (half of it kept a collapsing Fashion-MNIST run stable) or "
                f"lengthen optimizer.warmup_epochs, train in float32 (precision=32-true) if the backbone ran in "
                f"bf16, lower method.proj_output_dim (now {self.projector.out_dim}, for {self.feature_dim}-d "
                f"backbone features) or raise method.w_size (now {self.criterion.w_size}; more samples per "
                "covariance); method.w_eps > 0 did not prevent the collapse there. "
                "method.collapse_window=0 turns this check off.")
