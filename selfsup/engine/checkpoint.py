"""Checkpoints: ``last.ckpt`` after every epoch and ``epoch_NNNN.ckpt`` every few epochs.

Each file is written to a temporary name and renamed, so a run killed while writing leaves the
previous ``last.ckpt`` intact. Lightning writes the content (model, optimizers, loops, and the
module's extra state such as the view generator).
"""
from __future__ import annotations

import os
from pathlib import Path

import lightning as L


class EpochCheckpoint(L.Callback):
    """Saves ``dirpath/last.ckpt`` each epoch and ``dirpath/epoch_NNNN.ckpt`` every ``every`` epochs.

    Example:
        >>> trainer = L.Trainer(callbacks=[EpochCheckpoint("runs/demo/checkpoints", every=10)],
        ...                     enable_checkpointing=False)
    """

    def __init__(self, dirpath: str | Path, every: int = 10) -> None:
        self.dirpath, self.every = Path(dirpath), every

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        self.save(trainer, self.last_path)
        if self.every and epoch % self.every == 0:
            self.save(trainer, self.dirpath / f"epoch_{epoch:04d}.ckpt")

    def save(self, trainer: L.Trainer, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("selfsup_checkpoint")
