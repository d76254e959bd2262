"""Remember how far into its epoch the run is, so a mid-epoch checkpoint resumes the data order."""
from __future__ import annotations

from typing import Any

import lightning as L

from selfsup.data.sampler import EpochShuffleSampler
from selfsup.data.shards import ShardStream


class DataPosition(L.Callback):
    """Saves the number of batches done in the current epoch with every checkpoint; on resume,
    tells the :class:`EpochShuffleSampler` (or :class:`ShardStream`) to start where that checkpoint stopped.

    Must come before the checkpoint callback, so the count it saves includes the current batch.

    Example:
        >>> sampler = selfsup.data.EpochShuffleSampler(1000, seed=0)
        >>> position = DataPosition(sampler, batch_size=256)
        >>> callbacks = [position, selfsup.engine.EpochCheckpoint("ckpts", every_n_steps=100)]  # in this order
        >>> position.load_state_dict({"epoch": 2, "batches_done": 3})  # resuming a mid-epoch checkpoint
        >>> len(list(sampler)), sampler.epoch  # the sampler skips the 3 x 256 images already trained on
        (232, 2)
    """

    def __init__(self, sampler: EpochShuffleSampler | ShardStream, batch_size: int) -> None:
        self.sampler, self.batch_size = sampler, batch_size
        self.epoch, self.batches_done = 0, 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sampler.set_epoch(trainer.current_epoch)  # Lightning does it for a sampler, not for a ShardStream
        if trainer.current_epoch != self.epoch:
            self.epoch, self.batches_done = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.batches_done = batch_idx + 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch, self.batches_done = trainer.current_epoch + 1, 0  # what a resume from here starts with
        self.sampler.resume_at(0)  # a ShardStream's workers read the position at every epoch; it was for this one

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.batches_done = int(state["epoch"]), int(state["batches_done"])
        # Lightning creates the resumed epoch's iterator before it sets the sampler's epoch, and loader
        # workers copy a ShardStream when they start: both must know the epoch now
        self.sampler.set_epoch(self.epoch)
        if self.batches_done:
            self.sampler.resume_at(self.batches_done * self.batch_size)
