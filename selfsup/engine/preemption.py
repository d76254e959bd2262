"""Preemption: on SIGTERM or SIGUSR1, checkpoint at the next step boundary and stop.

Cluster schedulers send SIGTERM (or SIGUSR1, e.g. SLURM's ``--signal``) before they end a job.
The run then saves ``last.ckpt`` after the step in progress and exits with
:data:`PREEMPTED_EXIT_CODE`, so a wrapper script can requeue it with ``--resume``.
"""
from __future__ import annotations

import signal
from typing import Any

import lightning as L

from selfsup.engine.checkpoint import EpochCheckpoint
from selfsup.errors import SelfSupError

#: exit status of a preempted run (EX_TEMPFAIL: "try again later")
PREEMPTED_EXIT_CODE = 75


class Preempted(SelfSupError):
    """The run was asked to stop by a signal and saved a checkpoint first."""

    exit_code = PREEMPTED_EXIT_CODE


class PreemptionHandler(L.Callback):
    """Catches SIGTERM / SIGUSR1 during training; after the current step, saves and stops.

    Must come after the checkpoint callback (and the data-position callback) in the list, so the
    step's state is complete when it saves.

    Example:
        >>> callbacks = [..., checkpoint, PreemptionHandler(checkpoint)]
    """

    signals = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, checkpoint: EpochCheckpoint) -> None:
        self.checkpoint = checkpoint
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # installed after Lightning's own handlers, so the signal reaches us first
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.received is None:
            return
        step = trainer.current_epoch * pl_module.steps_per_epoch + batch_idx + 1
        self.checkpoint.save(trainer, self.checkpoint.last_path)
        name = signal.Signals(self.received).name
        raise Preempted(
            f"Received {name}: saved {self.checkpoint.last_path} after step {step} and stopped. "
            f"Continue with the same command and --resume."
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
