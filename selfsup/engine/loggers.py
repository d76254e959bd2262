"""The loggers a run writes to: ``metrics.jsonl`` always, plus the ones ``loggers`` in the config names.

``metrics.jsonl`` (:class:`~selfsup.engine.logger.JsonlLogger`) is what selfsup's own tools read
(training curves, benchmarks, the test of every run); the others are Lightning's loggers, for the
tools users already watch runs with: ``csv`` (``metrics.csv``, no extra package), ``tensorboard``
(``tensorboard/`` event files; ``pip install tensorboard``), ``wandb`` (``pip install wandb``;
project ``selfsup``, the run named as the run folder) and ``mlflow`` (``pip install mlflow``;
a local ``mlruns/`` store unless ``MLFLOW_TRACKING_URI`` says otherwise). Each receives the same
metrics at the same steps as ``metrics.jsonl``, and the resolved config as hyper-parameters.

Example:
    >>> import tempfile; from pathlib import Path
    >>> loggers = build_loggers(["csv"], Path(tempfile.mkdtemp()), {"epochs": 1})  # a run folder, its config
    >>> [type(lg).__name__ for lg in loggers]
    ['JsonlLogger', 'CSVLogger']
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger

from selfsup.engine.logger import JsonlLogger
from selfsup.errors import ConfigError


def _csv(run_dir: Path) -> Logger:
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(str(run_dir), name="", version="csv")  # runs/<name>/csv/metrics.csv


def _tensorboard(run_dir: Path) -> Logger:
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(str(run_dir), name="", version="tensorboard", default_hp_metric=False)


def _wandb(run_dir: Path) -> Logger:
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(project="selfsup", name=run_dir.name, save_dir=str(run_dir))


def _mlflow(run_dir: Path) -> Logger:
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(experiment_name="selfsup", run_name=run_dir.name)


# name -> (the package it needs, factory)
LOGGERS: dict[str, tuple[str | None, Callable[[Path], Logger]]] = {
    "csv": (None, _csv),
    "tensorboard": ("tensorboard", _tensorboard),
    "wandb": ("wandb", _wandb),
    "mlflow": ("mlflow", _mlflow),
}


def check_loggers(names: Sequence[str]) -> None:
    """Raise a :class:`ConfigError` naming an unknown logger, a repeated one, or a missing package."""
    for name in names:
        if name not in LOGGERS:
            known = ", ".join(LOGGERS)
            hint = " (metrics.jsonl is always written)" if name == "jsonl" else ""
            raise ConfigError(f"Config key 'loggers' names {name!r}{hint}; expected some of: {known}.")
        package = LOGGERS[name][0]
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"loggers: {name!r} needs the {package} package: pip install {package}.")
    if len(set(names)) != len(names):
        raise ConfigError(f"Config key 'loggers' repeats a logger: {list(names)}.")


def build_loggers(names: Sequence[str], run_dir: Path, hyperparams: dict[str, Any]) -> list[Logger]:
    """``metrics.jsonl`` first (``trainer.logger``), then each named logger, given ``hyperparams``."""
    check_loggers(names)
    loggers: list[Logger] = [JsonlLogger(run_dir / "metrics.jsonl")]
    for name in names:
        logger = LOGGERS[name][1](run_dir)
        logger.log_hyperparams(hyperparams)
        loggers.append(logger)
    return loggers
