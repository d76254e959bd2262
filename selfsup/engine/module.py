"""The LightningModule that trains any :class:`selfsup.methods.Method`.

It owns what is the same for every method: turning the uint8 batch (copied to the device by
Lightning with ``non_blocking=True`` on CUDA, from pinned memory; with ``data.decode_on_device``
a batch of JPEG bytes decoded here) into views on the device,
the optimizer step with the warm-up + cosine schedule, the method's step driving (the global
step, epoch and fraction of training in ``method.begin_step``, EMA teachers, queues and the other
after-step state in ``method.end_step``), the online linear probe on detached features (its own
optimizer), the non-finite loss guard, logging, and saving the view generator's state in
checkpoints so a resumed run draws the same augmentations. It uses manual optimisation so the step
order is explicit: ``method.begin_step(step)`` -> forward -> check -> backward ->
``method.on_after_backward(progress)`` -> step -> ``method.end_step()``.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.augment import MultiView
from selfsup.data.device_decode import EncodedImages
from selfsup.engine.optim import OptimizerConfig, build_optimizer, clip_gradients
from selfsup.engine.sharding import (
    average_replicated_gradients, clip_sharded_gradients, local_tensor, replicated_parameters, reshard,
    shard_method, true_on_every_process,
)
from selfsup.engine.schedule import warmup_cosine
from selfsup.errors import ConfigError, NonFiniteLossError

log = logging.getLogger("selfsup")
from selfsup.methods.base import Method, ViewBatch


class SelfSupervisedModule(L.LightningModule):
    """Wraps a method, its view recipe, the optimizer settings and the online probe.

    Args:
        method: the self-supervised method (owns the backbone).
        views: the view recipe applied to each uint8 batch on the device.
        optimizer: optimizer and schedule settings.
        batch_size: the GLOBAL batch size (for learning-rate scaling).
        steps_per_epoch: optimizer steps in one epoch.
        epochs: total epochs.
        num_classes: classes of the online probe (0: no probe).
        probe_lr: the probe's learning rate (SGD with momentum 0.9, cosine schedule).
        channels_last: convert views to channels-last memory format (faster convolutions).
        train_features: computes the backbone's features of the whole training set (index order)
            for methods that cluster it at each epoch start (see ``Method.on_epoch_start``).
        max_skipped_steps: steps with a non-finite loss or gradient that are skipped (no update)
            before the run stops; 0 stops at the first.
        micro_batches: gradient accumulation: each step's batch is split into this many equal
            micro-batches, each forwarded and backpropagated in turn (activation memory of one),
            then one optimizer step takes their mean gradient. The method's loss sees one
            micro-batch at a time: contrastive negatives and BatchNorm statistics come from it.

    Example:
        >>> from selfsup.engine import OptimizerConfig
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> method = selfsup.methods.get("simclr", backbone=backbone, proj_output_dim=16)
        >>> views = selfsup.augment.get("simclr", size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
        >>> module = SelfSupervisedModule(method, views, OptimizerConfig(), batch_size=256,
        ...                               steps_per_epoch=195, epochs=100, num_classes=10)
        >>> [v.shape for v in module.make_views(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))]
        [torch.Size([4, 3, 16, 16]), torch.Size([4, 3, 16, 16])]
        >>> [type(opt).__name__ for opt in module.configure_optimizers()]  # the method's, the probe's
        ['SGD', 'SGD']

        Then ``L.Trainer(max_epochs=100).fit(module, loader)`` trains it (see :mod:`selfsup.engine`).
    """

    def __init__(
        self,
        method: Method,
        views: MultiView,
        optimizer: OptimizerConfig,
        *,
        batch_size: int,
        steps_per_epoch: int,
        epochs: int,
        num_classes: int = 0,
        probe_lr: float = 0.1,
        channels_last: bool = False,
        train_features: Callable[[], Tensor] | None = None,
        max_skipped_steps: int = 0,
        micro_batches: int = 1,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.method, self.views, self.optimizer_config = method, views, optimizer
        self.batch_size, self.steps_per_epoch, self.epochs = batch_size, steps_per_epoch, epochs
        self.total_steps = max(1, steps_per_epoch * epochs)
        self.warmup_steps = min(self.total_steps, round(optimizer.warmup_epochs * steps_per_epoch))
        self.probe = nn.Linear(method.feature_dim, num_classes) if num_classes > 0 else None
        self.probe_lr, self.channels_last = probe_lr, channels_last
        self.probe_trained = False  # set by the first step that gives the probe features
        self.train_features = train_features
        self.max_skipped_steps, self.skipped_steps = max_skipped_steps, 0
        self.micro_batches = micro_batches
        self.method.configure_training(epochs, steps_per_epoch)
        if channels_last:
            self.method.to(memory_format=torch.channels_last)

    @property
    def eval_autocast_dtype(self) -> torch.dtype | None:
        """bf16 / fp16 when the trainer trains in mixed precision, else None."""
        precision = str(getattr(self.trainer, "precision", "32")) if self._trainer else "32"
        return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)

    @property
    def sharded(self) -> bool:
        """Whether the method's backbones are sharded over the processes (``strategy: fsdp``)."""
        return getattr(self, "_sharded", False)

    def configure_model(self) -> None:
        """Under ``strategy: fsdp`` (Lightning's ``ModelParallelStrategy``), shard the method's Vision
        Transformers over the processes (:mod:`selfsup.engine.sharding`); other strategies: nothing."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if self.sharded or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        if not shard_method(self.method, self.device_mesh["data_parallel"]):
            raise ConfigError("strategy=fsdp shards Vision Transformer backbones; this method has none.")
        self._sharded = True

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """The method's optimizer (its parameter groups, the configured optimizer and learning rate),
        then the online probe's when it trains; the engine steps them itself (manual optimisation)."""
        config = self.optimizer_config
        optimizers = [build_optimizer(self.method.parameter_groups(config.weight_decay), config, self.batch_size)]
        # kept here, not only in the groups: a resumed run restores the groups from its checkpoint,
        # but its learning rate follows the current config
        self.peak_lrs = [group["peak_lr"] for group in optimizers[0].param_groups]
        if self.probe is not None:
            optimizers.append(torch.optim.SGD(self.probe.parameters(), lr=self.probe_lr, momentum=0.9))
        return optimizers

    def set_learning_rates(self, optimizers: list, step: int) -> float:
        """Apply the schedule for ``step`` to ``[main, probe]`` optimizers; returns the multiplier.

        Groups flagged ``fixed_lr`` keep their peak learning rate (SimSiam's predictor).
        """
        config = self.optimizer_config
        factor = warmup_cosine(step, self.total_steps, self.warmup_steps, config.final_lr_fraction)
        for group, peak in zip(optimizers[0].param_groups, self.peak_lrs):
            group["lr"] = peak if group.get("fixed_lr") else peak * factor
        if len(optimizers) > 1:
            probe_factor = warmup_cosine(step, self.total_steps, 0)
            for group in optimizers[1].param_groups:
                group["lr"] = self.probe_lr * probe_factor
        return factor

    def make_views(self, images: Tensor) -> list[Tensor]:
        """uint8 batch -> augmented float views, outside autocast (augmentation stays fp32)."""
        with torch.autocast(images.device.type, enabled=False):
            views = self.views(images)
        if self.channels_last:  # in place: the list keeps the views' geometry (VICRegL reads it)
            for i, view in enumerate(views):
                views[i] = view.contiguous(memory_format=torch.channels_last)
        return views

    def training_step(self, batch: tuple[Tensor | EncodedImages, Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels, indices = batch
        if isinstance(images, EncodedImages):  # data.decode_on_device: JPEG bytes, decoded here (nvjpeg on CUDA)
            images = images.decode(self.device)
        step = self.current_epoch * self.steps_per_epoch + batch_idx  # also right after a resume
        progress = self.method.begin_step(step)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        factor = self.set_learning_rates(optimizers, step)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        parts = self.micro_batches
        losses, logs, probe_trained = [], [], False
        for part, rows in enumerate(micro_batch_rows(len(images), parts)):
            out = self.method.training_step(ViewBatch(self.make_views(images[rows]), labels[rows], indices[rows]))
            loss = out.loss
            if not torch.isfinite(loss.detach()):
                where = f" in micro-batch {part + 1} of {parts}" if parts > 1 else ""
                return self.skip_step(step, f"the loss became {loss.item()}{where}", out.logs, optimizers)
            probe_loss, probe_logs = self.probe_loss(out.features, labels[rows])
            probe_trained = probe_trained or "probe/train_loss" in probe_logs
            # one backward for both: the probe sees detached features, so the two losses share no
            # gradient, and under DDP every parameter takes part in the backward pass; with micro-
            # batches each adds its share of the step's mean gradient
            total = loss if probe_loss is None else loss + probe_loss
            self.manual_backward(total / parts if parts > 1 else total)
            losses.append(loss.detach())
            logs.append({**probe_logs, **{f"train/{k}": v for k, v in out.logs.items()}})
        loss = losses[0] if parts == 1 else torch.stack(losses).mean()
        if self.sharded:  # FSDP averaged the shards' gradients; the whole parameters' here
            average_replicated_gradients(replicated_parameters([self]))
        bad = self.non_finite_gradients()
        if bad:
            return self.skip_step(step, f"the gradient of {bad} is not finite (loss {loss.item():.6g})",
                                  out.logs, optimizers)
        self.method.on_after_backward(progress)
        logs = mean_logs(logs)
        if self.optimizer_config.clip_grad_norm > 0:
            clip = clip_sharded_gradients if self.sharded else clip_gradients
            logs["train/grad_norm"] = clip(self.method.parameters(), self.optimizer_config.clip_grad_norm)
        optimizers[0].step()
        if probe_trained:
            optimizers[1].step()
        if self.sharded:
            reshard(self.method)
        self.method.end_step()

        logs.update({"train/loss": loss, "train/lr_factor": factor})
        for key, value in self.method.state_logs().items():  # a method's own log of the same name wins
            logs.setdefault(f"train/{key}", value)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=len(images))
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=len(images), sync_dist=True)
        return loss

    def non_finite_gradients(self) -> str:
        """Names of the first parameters whose gradient holds NaN or infinity ('' when all are finite)."""
        named = [(n, local_tensor(p.grad)) for n, p in self.method.named_parameters() if p.grad is not None]
        if not named:
            return ""
        norms = torch._foreach_norm([g for _, g in named])
        finite = torch.isfinite(torch.stack(norms))
        if self.sharded:  # each process sees its shards: every process must take the same decision
            finite = true_on_every_process(finite)
        if bool(finite.all()):
            return ""
        bad = [name for (name, _), ok in zip(named, finite.tolist()) if not ok]
        return ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")

    def skip_step(self, step: int, what: str, terms: dict[str, Any], optimizers: list) -> Tensor:
        """Skip this step (no update) or, past ``max_skipped_steps``, stop the run with a report."""
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        report = ", ".join(f"{k}={float(v):.6g}" for k, v in terms.items())
        where = f"at optimizer step {step} (epoch {self.current_epoch})" + (f"; loss terms: {report}" if report else "")
        if self.skipped_steps > self.max_skipped_steps:
            limit = (f" This was the {self.skipped_steps}th such step, more than max_skipped_steps="
                     f"{self.max_skipped_steps}." if self.max_skipped_steps else "")
            raise NonFiniteLossError(
                f"Training stopped: {what} {where}; no weight was changed by this step.{limit}"
            )
        log.warning("Skipped a step: %s %s (%d of at most %d).", what, where, self.skipped_steps,
                    self.max_skipped_steps)
        self.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
        return torch.zeros((), device=self.device)

    def on_train_epoch_start(self) -> None:
        # (Lightning does not call this again for an epoch resumed in its middle: the method's
        # epoch-start state, e.g. DeepCluster's pseudo-labels, comes back with the checkpoint)
        def unavailable() -> Tensor:
            raise RuntimeError("train_features was not given to SelfSupervisedModule")

        self.method.on_epoch_start(self.current_epoch, self.train_features or unavailable)

    def probe_loss(self, features: Tensor | None, labels: Tensor) -> tuple[Tensor | None, dict[str, Any]]:
        """Cross-entropy of the online linear probe on detached features of the labelled samples.

        Without labelled samples (or features) in the batch the loss is a zero that still touches
        the probe's parameters, as DDP expects every parameter in each backward pass.
        """
        if self.probe is None:
            return None, {}
        known = labels >= 0
        if features is None or not known.any():
            return sum(p.sum() for p in self.probe.parameters()) * 0.0, {}
        self.probe_trained = True  # the monitor scores the probe only once it has trained
        with torch.autocast(features.device.type, enabled=False):
            logits = self.probe(features.detach()[known].float())
            loss = F.cross_entropy(logits, labels[known])
        top1 = (logits.argmax(1) == labels[known]).float().mean() * 100
        return loss, {"probe/train_loss": loss.detach(), "probe/train_top1": top1.detach()}

    def setup(self, stage: str) -> None:
        """Give each process its own augmentation stream (seed + global rank)."""
        if not getattr(self, "_views_seeded", False):
            self.views.seed += self.global_rank
            self._views_seeded = True

    def _random_state(self) -> dict[str, Any]:
        """This process's random streams: its view generator and the global generators."""
        state: dict[str, Any] = {"views": self.views.state_dict(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save every process's random streams (gathered from all ranks: Lightning calls this hook on
        each of them and writes rank 0's dictionary), so each rank resumes its own views and draws."""
        own = self._random_state()
        ranks = [own]
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, own)
        # views and the global generator (methods draw from it, e.g. patch jitter), per rank
        checkpoint["selfsup_ranks"] = ranks
        checkpoint["selfsup_skipped_steps"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore each rank's view generator and global generators, so a resumed run draws the
        same views and random numbers as the uninterrupted one, with one process or several.

        A checkpoint written by another number of processes (or by a selfsup that kept rank 0's
        streams only) cannot give every rank its own: each rank then starts a fresh stream seeded
        by its rank and the checkpoint's step, so no stream repeats, with a warning.
        """
        self.skipped_steps = int(checkpoint.get("selfsup_skipped_steps", 0))
        ranks = checkpoint.get("selfsup_ranks")
        world = self.trainer.world_size
        if ranks is None and "selfsup_views" in checkpoint:  # written by a selfsup that kept rank 0's streams only
            ranks = [{"views": checkpoint["selfsup_views"], **checkpoint.get("selfsup_rng", {})}]
        if ranks is None:
            return
        if len(ranks) == world:
            own = ranks[self.global_rank]
            if "torch" in own:
                torch.set_rng_state(own["torch"])
            if "cuda" in own and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(own["cuda"])
            self.views.load_state_dict(own["views"])
            return
        log.warning("The checkpoint holds the random streams of %d process(es) and this run has %d: each "
                    "process starts fresh views, so the resumed run does not repeat the original's draws.",
                    len(ranks), world)
        state = ranks[0]["views"]
        seed = state["seed"] + self.global_rank + 100_003 * int(checkpoint.get("global_step", 0))
        self.views.load_state_dict({**state, "seed": seed, "generator": None})


def micro_batch_rows(size: int, parts: int) -> list[slice]:
    """The rows of each of ``parts`` equal micro-batches of a batch of ``size``.

    Example:
        >>> micro_batch_rows(6, 3)
        [slice(0, 2, None), slice(2, 4, None), slice(4, 6, None)]
    """
    if size % parts:
        raise ValueError(f"a batch of {size} does not split into {parts} equal micro-batches")
    step = size // parts
    return [slice(i * step, (i + 1) * step) for i in range(parts)]


def mean_logs(logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each logged value averaged over the micro-batches that logged it.

    Example:
        >>> mean_logs([{"a": 1.0}, {"a": 3.0, "b": 2.0}])
        {'a': 2.0, 'b': 2.0}
    """
    if len(logs) == 1:
        return dict(logs[0])
    keys = dict.fromkeys(k for entry in logs for k in entry)
    return {k: sum(entry[k] for entry in logs if k in entry) / sum(k in entry for entry in logs) for k in keys}
