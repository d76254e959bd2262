"""Log the training process's resident memory and open file descriptors every few steps."""
from __future__ import annotations

import os
from typing import Any

import lightning as L


def resident_memory_mb() -> float:
    """Resident set size of this process in MiB (Linux ``/proc``; 0 where unavailable).

    Example:
        >>> resident_memory_mb() > 0
        True
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def open_file_count() -> int:
    """Open file descriptors of this process (Linux ``/proc``; -1 where unavailable)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


class ResourceMonitor(L.Callback):
    """Logs ``resources/rss_mb`` and ``resources/open_files`` every ``every_n_steps`` steps.

    Memory that grows after the first epoch, or file descriptors that pile up, show a leak.

    Example:
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[ResourceMonitor(every_n_steps=100)])
    """

    def __init__(self, every_n_steps: int = 100) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.current_epoch * pl_module.steps_per_epoch + batch_idx + 1
        if self.every_n_steps and step % self.every_n_steps == 0 and trainer.is_global_zero:
            # straight to the loggers: through ``self.log`` Lightning would repeat the reading at
            # later logging steps of the epoch as if it were new
            reading = {"resources/rss_mb": resident_memory_mb(), "resources/open_files": float(open_file_count()),
                       "epoch": float(trainer.current_epoch)}
            for logger in trainer.loggers:
                logger.log_metrics(reading, step=step - 1)
