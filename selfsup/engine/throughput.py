"""Training throughput: images and views per second, measured over the training steps only.

The clock runs from the start to the end of each epoch's batches (data loading, view making,
forward, backward and the optimizer step), so time spent in the k-NN monitor or writing
checkpoints between epochs is not counted. Logged every ``every_n_steps`` steps as
``train/images_per_s`` and ``train/views_per_s``; the run's totals are kept for ``summary.json``.
"""
from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning as L
import torch


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (and peak CUDA memory allocated when on a GPU), in MiB.

    On Linux the peak is ``VmHWM`` of ``/proc/self/status``: the high-water mark of this program's
    own address space. ``getrusage``'s ``ru_maxrss`` is not used there because Linux carries it
    over ``exec``: a process started by ``subprocess`` from a parent holding 3 GB reports at least
    3 GB, whatever it uses itself. Elsewhere ``ru_maxrss`` is the only reading (KiB, bytes on macOS).

    Example:
        >>> peak_memory_mb()["cpu_rss_mb"] > 0
        True
    """
    peak = {"cpu_rss_mb": _peak_rss_mb()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


class Throughput(L.Callback):
    """Counts images and views per second of training steps (one process's share under DDP).

    Example:
        >>> meter = Throughput(views_per_image=2, every_n_steps=50)
        >>> import lightning as L
        >>> trainer = L.Trainer(callbacks=[meter], logger=False)
        >>> meter.images_per_s  # nothing trained yet; trainer.fit(...) counts every step's images
        0.0
    """

    def __init__(self, views_per_image: int, every_n_steps: int = 50) -> None:
        self.views_per_image, self.every_n_steps = views_per_image, every_n_steps
        self.images, self.seconds = 0, 0.0
        self._window_images, self._window_start = 0, 0.0
        self._last = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = self._window_start = time.perf_counter()
        self._window_images = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        count = len(batch[0])
        self.images += count
        self.seconds += now - self._last
        self._last = now
        self._window_images += count
        step = trainer.current_epoch * pl_module.steps_per_epoch + batch_idx + 1
        if self.every_n_steps and step % self.every_n_steps == 0 and trainer.is_global_zero:
            rate = self._window_images / max(now - self._window_start, 1e-9)
            reading = {"train/images_per_s": rate, "train/views_per_s": rate * self.views_per_image,
                       "epoch": float(trainer.current_epoch)}
            for logger in trainer.loggers:  # straight to the loggers, as ResourceMonitor does
                logger.log_metrics(reading, step=step - 1)
            self._window_images, self._window_start = 0, now
