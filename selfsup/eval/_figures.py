"""Shared pieces of the picture writers: a matplotlib Figure without pyplot, atomic PNG saving, image cells."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selfsup.errors import ConfigError, SelfSupError

RIGHT, WRONG, QUERY, UNKNOWN = "#2ca02c", "#d62728", "#1f77b4", "#7f7f7f"


def figure(width: float, height: float, *, constrained: bool = True) -> Any:
    """A matplotlib ``Figure`` (Agg when saved; no pyplot global state, nothing to close).

    ``constrained``: matplotlib's constrained layout; image grids place their axes themselves,
    which is much quicker with dozens of cells.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise SelfSupError("Pictures need matplotlib: pip install 'matplotlib>=3.7'.") from err
    return Figure(figsize=(width, height), dpi=100, layout="constrained" if constrained else None)


def save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path``: a temporary file in the same folder, then a rename."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"Pictures are PNG files; {path} should end in .png.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def label_text(label: int, class_names: Sequence[str] | None) -> str:
    """A label as shown under an image: its class name when known, "unlabelled" for -1."""
    if label < 0:
        return "unlabelled"
    return str(class_names[label]) if class_names is not None and label < len(class_names) else str(label)


def show(ax: Any, image: Tensor | np.ndarray, frame: str | None = None) -> None:
    """Draw a (C, H, W) uint8 or [0, 1] float image on ``ax`` without ticks, framed in colour ``frame``."""
    img = torch.as_tensor(image).detach().cpu()
    img = img.float() / 255.0 if img.dtype == torch.uint8 else img.float().clamp(0, 1)
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ConfigError(f"Images must be (C, H, W) with C = 1 or 3, got {tuple(img.shape)}.")
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(3)
