"""selfsup: self-supervised visual representation learning on PyTorch.

Layers (imports only go downwards): ``nn`` -> ``losses`` -> ``backbones`` -> ``augment`` ->
``methods`` -> ``data`` -> ``eval`` -> ``engine`` -> ``config`` / ``training`` / ``cli``. Each
layer can be used alone; ``import selfsup`` loads a layer the first time it is used, e.g.
``selfsup.losses.NTXentLoss``.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAYERS = ("nn", "losses", "backbones", "augment", "methods", "data", "eval", "engine", "config", "training")


def __getattr__(name: str) -> Any:
    if name in _LAYERS:
        return importlib.import_module(f"selfsup.{name}")
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAYERS])
