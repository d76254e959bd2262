"""Training curves of a run as a PNG: loss, online probe, k-NN and collapse monitors from ``metrics.jsonl``."""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

from selfsup.errors import DataError
from selfsup.eval._figures import figure, save

__all__ = ["curve_panels", "training_curves"]

# (title, which keys, y label); each key is drawn in the first panel that takes it
_PANELS: tuple[tuple[str, Callable[[str], bool], str], ...] = (
    ("training loss", lambda k: k in ("train/loss", "train/loss_epoch"), "loss"),
    ("training speed", lambda k: k in ("train/images_per_s", "train/views_per_s"), "per second"),
    ("momentum of the EMA teacher", lambda k: k == "train/momentum", "momentum"),
    ("loss terms", lambda k: k.startswith("train/") and k not in ("train/lr_factor", "train/skipped_steps"), ""),
    ("online probe", lambda k: k.startswith("probe/") and "top" in k, "accuracy (%)"),
    ("online probe loss", lambda k: k.startswith("probe/"), "loss"),
    ("k-NN monitor", lambda k: k.startswith("knn/"), "accuracy (%)"),
    ("collapse: std of L2-normalised embeddings", lambda k: k in ("collapse/std", "collapse/std_ideal"), "std"),
    ("collapse: effective rank (RankMe)", lambda k: k == "collapse/rankme", "rank"),
    ("learning-rate factor", lambda k: k == "train/lr_factor", ""),
)


def _read_series(path: Path) -> dict[str, dict[float, float]]:
    """key -> {step: value}; a step logged twice (a resumed run) keeps its last value."""
    if not path.is_file():
        raise DataError(f"No metrics file {path}: training curves need the metrics.jsonl that `selfsup train` "
                        "writes in its run folder.")
    series: dict[str, dict[float, float]] = {}
    records = 0
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {number} is not JSON ({err.msg}); expected one JSON object per "
                                "line, as `selfsup train` writes.") from err
            if not isinstance(record, dict):
                raise DataError(f"{path} line {number} is not a JSON object.")
            records += 1
            step = record.get("step", records)
            for key, value in record.items():
                if key in ("step", "time", "epoch") or isinstance(value, bool):
                    continue
                try:
                    series.setdefault(key, {})[float(step)] = float(value)  # "nan" / "inf" strings too
                except (TypeError, ValueError):
                    continue
    if not records:
        raise DataError(f"{path} is empty: the run has logged no metrics yet.")
    return series


def curve_panels(keys: Iterable[str]) -> list[tuple[str, str, list[str]]]:
    """``(title, y label, keys)`` of each panel the logged ``keys`` fill, in drawing order; each key
    in the first panel that takes it (speeds and momentum have panels of their own, so they do not
    share an axis with the losses)."""
    keys = set(keys)
    panels, taken = [], set()
    for title, wanted, unit in _PANELS:
        chosen = sorted(k for k in keys if wanted(k) and k not in taken)
        taken.update(chosen)
        if chosen:
            panels.append((title, unit, chosen))
    return panels


def training_curves(metrics_jsonl_path: str | Path, path: str | Path) -> Path:
    """Panels of the training curves in a run's ``metrics.jsonl`` against the optimizer step.

    Panels, each only when its keys were logged: the loss (``train/loss``, ``train/loss_epoch``),
    the training speed (``train/images_per_s``, ``train/views_per_s``), an EMA teacher's momentum,
    the method's other loss terms, the online probe's accuracies and its loss, the k-NN monitor,
    the collapse monitors (``collapse/std`` with ``collapse/std_ideal`` dashed, ``collapse/rankme``;
    see :mod:`selfsup.eval.collapse`) and the learning-rate factor. A step logged twice (a
    resumed run) keeps its last value.

    Raises:
        DataError: the file is missing, empty, not JSON lines, or holds none of these keys.

    Example:
        >>> import tempfile; from pathlib import Path
        >>> run = Path(tempfile.mkdtemp())  # a run folder with the metrics.jsonl that training writes
        >>> logger = selfsup.engine.JsonlLogger(run / "metrics.jsonl")
        >>> for step in range(10): logger.log_metrics({"train/loss": 4 / (step + 1)}, step=step)
        >>> training_curves(run / "metrics.jsonl", run / "eval/pictures/training_curves.png").relative_to(run)
        PosixPath('eval/pictures/training_curves.png')
    """
    source = Path(metrics_jsonl_path)
    series = _read_series(source)
    panels = curve_panels(series)
    if not panels:
        raise DataError(f"{source} holds none of the training curves (train/*, probe/*, knn/*, collapse/*); "
                        f"its keys are: {', '.join(sorted(series)) or 'none'}.")
    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    fig = figure(6.0 * cols, 3.2 * rows)  # raises the install hint when matplotlib is missing
    from matplotlib.ticker import MaxNLocator

    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, unit, keys) in zip(axes, panels):
        for key in keys:
            steps = sorted(series[key])
            values = [series[key][s] for s in steps]
            if key == "collapse/std_ideal" and len(set(values)) == 1:  # 1/sqrt(D): one number for the run
                ax.axhline(values[0], linestyle="--", color="black", linewidth=1, label=key)
            elif key == "collapse/std_ideal":
                ax.plot(steps, values, linestyle="--", color="black", linewidth=1, label=key)
            else:
                sparse = len(steps) <= 50
                ax.plot(steps, values, marker="o" if sparse else None, markersize=3, linewidth=1.5 if sparse else 1,
                        label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no fractional steps on short series
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"Training curves of {source.parent.name or source}", fontsize=11)
    return save(fig, path)
