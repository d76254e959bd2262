"""A Lightning logger that appends metrics to ``metrics.jsonl``, one JSON object per line.

Appending (never rewriting) means a resumed run adds to the same file and nothing already
written is lost; each line holds ``step``, ``epoch`` when known, a wall-clock ``time`` and the
metrics logged at that step.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from selfsup.errors import SelfSupError


class JsonlLogger(Logger):
    """Writes ``{"step": ..., "time": ..., "<metric>": value}`` lines to ``path``.

    Example:
        >>> import json, tempfile
        >>> logger = JsonlLogger(tempfile.mkdtemp() + "/metrics.jsonl")  # L.Trainer(logger=logger) calls it
        >>> logger.log_metrics({"train/loss": 1.5}, step=0); logger.log_metrics({"train/loss": 1.25}, step=1)
        >>> [(line["step"], line["train/loss"]) for line in map(json.loads, open(logger.path))]
        [(0, 1.5), (1, 1.25)]
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> None:  # no "v_num" in the progress bar: the run folder is the version
        return None

    @property
    def log_dir(self) -> str:
        return str(self.path.parent)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyper-parameters live in the run's ``config.yaml``; nothing to do here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        record: dict[str, Any] = {"step": step, "time": round(time.time(), 3)}
        for key, value in metrics.items():
            value = float(value)
            record[key] = value if math.isfinite(value) else str(value)
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:
            raise SelfSupError(
                f"Could not append to {self.path}: {err.strerror or err}. The run stopped; its checkpoints "
                "are intact. Free space or fix the folder, then resume with --resume."
            ) from err


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file."""
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]
