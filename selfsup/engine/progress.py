"""One progress bar for the whole run (steps over all epochs), with the latest loss and k-NN."""
from __future__ import annotations

import sys
from typing import Any

import lightning as L
from tqdm.auto import tqdm


class RunProgressBar(L.Callback):
    """A single tqdm bar over every optimizer step of the run, on global rank 0.

    Lightning's default draws one bar per epoch, which scrolls a screenful for runs of many short
    epochs; this one shows the epoch, the loss and the latest k-NN accuracy in one line.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[RunProgressBar()], enable_progress_bar=False)
    """

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        total = pl_module.steps_per_epoch * trainer.max_epochs
        done = pl_module.steps_per_epoch * trainer.current_epoch
        self.bar = tqdm(total=total, initial=done, unit="step", dynamic_ncols=True,
                        mininterval=0.2 if sys.stderr.isatty() else 5.0, desc="training")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.bar is None:
            return
        metrics = trainer.callback_metrics
        postfix = {"epoch": f"{trainer.current_epoch + 1}/{trainer.max_epochs}"}
        if "train/loss" in metrics:
            postfix["loss"] = f"{float(metrics['train/loss']):.3f}"
        if "knn/top1" in metrics:
            postfix["knn"] = f"{float(metrics['knn/top1']):.1f}%"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)
