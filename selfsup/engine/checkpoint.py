"""Checkpoints: ``last.ckpt`` after every epoch (and every N steps), ``epoch_NNNN.ckpt`` every few epochs.

Each file is written to a temporary name and renamed, so a run killed while writing leaves the
previous ``last.ckpt`` intact; a failed write (disk full, folder gone) stops the run with a message
that names the last good checkpoint. Lightning writes the content (model, optimizers, loops, the
module's extra state such as the view generator, callback states such as the data position).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L

from selfsup.errors import SelfSupError


class EpochCheckpoint(L.Callback):
    """Saves ``dirpath/last.ckpt`` each epoch and every ``every_n_steps`` steps, and
    ``dirpath/epoch_NNNN.ckpt`` every ``every`` epochs.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[EpochCheckpoint("runs/demo/checkpoints", every=10)],
        ...                     enable_checkpointing=False)
    """

    def __init__(self, dirpath: str | Path, every: int = 10, every_n_steps: int = 0) -> None:
        self.dirpath, self.every, self.every_n_steps = Path(dirpath), every, every_n_steps

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        last_of_epoch = batch_idx + 1 >= pl_module.steps_per_epoch  # the epoch end saves then
        step = trainer.current_epoch * pl_module.steps_per_epoch + batch_idx + 1
        if self.every_n_steps and step % self.every_n_steps == 0 and not last_of_epoch:
            self.save(trainer, self.last_path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        self.save(trainer, self.last_path)
        if self.every and epoch % self.every == 0:
            self.save(trainer, self.dirpath / f"epoch_{epoch:04d}.ckpt")

    def save(self, trainer: L.Trainer, path: Path) -> None:
        """Write ``path`` atomically (temporary file, then rename)."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:
                os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            kept = self.last_path if self.last_path.exists() else None
            raise SelfSupError(
                f"Could not write checkpoint {path}: {err.strerror or err}. The run stopped; the last good "
                f"checkpoint is {kept or 'none'} (intact). Free space or fix the folder, then resume with --resume."
            ) from err
        trainer.strategy.barrier("selfsup_checkpoint")
