"""Preemption: on SIGTERM or SIGUSR1, checkpoint at the next step boundary and stop.

Cluster schedulers send SIGTERM (or SIGUSR1, e.g. SLURM's ``--signal``) before they end a job.
The run then saves ``last.ckpt`` after the step in progress and exits with
:data:`PREEMPTED_EXIT_CODE`, so a wrapper script can requeue it with ``--resume``.

The handler is chained, not replaced: a handler installed before (under SLURM, Lightning's
auto-requeue, which saves its own checkpoint and runs ``scontrol requeue``; or a user's) is called
after ``last.ckpt`` is written, and only then does the run stop. A job SLURM requeued
(``SLURM_RESTART_COUNT`` >= 1) resumes without ``--resume`` (:func:`requeued_by_slurm`).
"""
from __future__ import annotations

import os
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
        >>> from selfsup.engine import EpochCheckpoint
        >>> checkpoint = EpochCheckpoint("ckpts")
        >>> callbacks = [checkpoint, PreemptionHandler(checkpoint)]  # after DataPosition, if any
        >>> [s.name for s in PreemptionHandler.signals]
        ['SIGTERM', 'SIGUSR1']
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
        previous = self._previous.get(self.received)
        passed_on = ""
        if callable(previous):  # not SIG_DFL / SIG_IGN / None: e.g. Lightning's SLURM requeue
            previous(self.received, None)
            passed_on = f" and passed {name} on to the handler installed before ({_describe(previous)})"
        raise Preempted(
            f"Received {name}: saved {self.checkpoint.last_path} after step {step}{passed_on}, and stopped. "
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


def _describe(handler: Any) -> str:
    owner = getattr(handler, "__self__", None)
    name = getattr(handler, "__qualname__", repr(handler))
    return f"{type(owner).__module__}.{name}" if owner is not None else f"{getattr(handler, '__module__', '')}.{name}"


def requeued_by_slurm() -> bool:
    """Whether this process is a SLURM job that was requeued (``SLURM_RESTART_COUNT`` >= 1), so its
    command should resume the run rather than start one."""
    count = os.environ.get("SLURM_RESTART_COUNT", "")
    return bool(os.environ.get("SLURM_JOB_ID")) and count.isdigit() and int(count) >= 1
