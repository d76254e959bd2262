"""Measurements taken while training: the k-NN monitor and the online probe's held-out accuracy.

Every ``knn_every`` epochs (and after the last one) the backbone embeds a held-out split and a
seeded subset of the training split with the deterministic evaluation transform; the weighted
k-NN classifier of InstDisc (Wu et al. 2018, arXiv 1805.01978) gives ``knn/top1`` and
``knn/top5``, and the online linear probe, applied to the same held-out features, gives
``probe/val_top1`` (only once the probe has trained: methods whose steps give it no features, AIM,
CAE, CAPI, I-JEPA, MaskFeat and distillation with mixup, log none rather than a chance-level score). The held-out features also give the collapse monitors of
:mod:`selfsup.eval.collapse` (``collapse/std``, ``collapse/std_ideal``, ``collapse/rankme``).
It runs on global rank 0 only; other ranks wait at the next collective.
"""
from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch.utils.data import Dataset

from selfsup.engine.sharding import unsharded_copy
from selfsup.eval.collapse import collapse_metrics
from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy


@dataclass
class MonitorConfig:
    """What is measured while training.

    Attributes:
        knn_every: run the k-NN monitor every this many epochs (0: never; always at the end).
        knn_k: neighbours of the weighted k-NN (InstDisc: 200).
        knn_temperature: temperature of its vote weights (InstDisc: 0.1).
        knn_max_train: at most this many training images (seeded choice) form the k-NN memory.
        probe: train an online linear probe on detached features when labels exist.
        probe_lr: its learning rate (SGD, momentum 0.9, cosine schedule).
        resources_every: log resident memory and open files every this many steps (0: never).
        test_at_end: when the held-out split is a validation part of the training split
            (``data.val_fraction > 0``), also measure k-NN on the test split once after training.
    """

    knn_every: int = 1
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_max_train: int = 20000
    probe: bool = True
    probe_lr: float = 0.1
    resources_every: int = 100
    test_at_end: bool = False


class EvaluationMonitor(L.Callback):
    """Logs k-NN accuracy, the online probe's held-out accuracy and collapse monitors during training.

    Example:
        >>> train_set, test_set = selfsup.data.get("digits", split="train"), selfsup.data.get("digits", split="test")
        >>> transform = selfsup.augment.EvalTransform(8, train_set.mean, train_set.std)
        >>> monitor = EvaluationMonitor(MonitorConfig(knn_every=5, knn_max_train=500), train_set, test_set, transform)
        >>> monitor.num_classes, len(monitor.train_indices)  # a seeded 500 of the training images: the k-NN memory
        (10, 500)
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[monitor], logger=False)  # measures every 5 epochs and at the end
    """

    def __init__(
        self, config: MonitorConfig, train_set: Dataset, eval_set: Dataset, transform, *,
        batch_size: int = 256, seed: int = 0,
    ) -> None:
        self.config, self.train_set, self.eval_set, self.transform = config, train_set, eval_set, transform
        self.batch_size = batch_size
        labels = torch.as_tensor(train_set.labels)
        labelled = torch.nonzero(labels >= 0).flatten()
        if len(labelled) > config.knn_max_train:
            order = torch.randperm(len(labelled), generator=torch.Generator().manual_seed(seed))
            labelled = labelled[order[: config.knn_max_train]].sort().values
        self.train_indices = labelled
        self.num_classes = int(labels.max()) + 1 if len(labelled) else 0
        self.last: dict[str, float] = {}

    def due(self, trainer: L.Trainer) -> bool:
        last_epoch = trainer.current_epoch + 1 >= trainer.max_epochs
        every = self.config.knn_every
        return last_epoch or (every > 0 and (trainer.current_epoch + 1) % every == 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.due(trainer) or self.num_classes == 0:
            return
        backbone = unsharded_copy(pl_module.method.backbone)  # strategy fsdp: every process gathers
        metrics = self.measure(pl_module, backbone) if trainer.is_global_zero else {}
        for key, value in metrics.items():
            pl_module.log(key, value, rank_zero_only=True, prog_bar=key == "knn/top1")
        self.last = metrics

    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule, backbone: torch.nn.Module | None = None) -> dict[str, float]:
        backbone = pl_module.method.backbone if backbone is None else backbone
        options = dict(batch_size=self.batch_size, device=pl_module.device,
                       autocast_dtype=pl_module.eval_autocast_dtype, channels_last=pl_module.channels_last)
        train_x, train_y = extract_features(backbone, self.train_set, self.transform, indices=self.train_indices, **options)
        test_x, test_y = extract_features(backbone, self.eval_set, self.transform, **options)
        keep = test_y >= 0
        scores = knn_accuracy(train_x, train_y, test_x[keep], test_y[keep], num_classes=self.num_classes,
                              k=self.config.knn_k, temperature=self.config.knn_temperature)
        metrics = {f"knn/{name}": value for name, value in scores.items()}
        if pl_module.probe is not None and pl_module.probe_trained and keep.any():  # none for AIM, CAE, I-JEPA, ...
            logits = pl_module.probe(test_x[keep].to(pl_module.device)).float().cpu()
            metrics["probe/val_top1"] = 100.0 * (logits.argmax(1) == test_y[keep]).float().mean().item()
        metrics.update(collapse_metrics(test_x))  # every held-out image, labelled or not
        return metrics
