"""Training precisions: the values ``precision`` may take, declared once, and what ``auto`` picks.

The names are Lightning's (``Trainer(precision=...)``); the config's validation
(:func:`selfsup.config.validate`) reads :data:`PRECISIONS` and :data:`PRECISION_ALIASES`.

Example:
    >>> resolve_precision("32", "cpu")
    '32-true'
"""
from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "PRECISION_ALIASES", "resolve_precision"]

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true")
"""Accepted values of ``precision``: ``auto`` (see :func:`resolve_precision`) or a Lightning precision."""

PRECISION_ALIASES = {"32": "32-true"}
"""Other spellings accepted for a precision, and the precision they mean."""


def resolve_precision(precision: str, accelerator: str) -> str:
    """The Lightning precision to train with.

    ``auto``: bf16 autocast where the hardware has it (CUDA with bf16, else fp16 on CUDA; CPUs with
    AMX / AVX512-BF16), else full fp32. Aliases (:data:`PRECISION_ALIASES`) become their precision.

    Example:
        >>> resolve_precision("bf16-mixed", "cpu")
        'bf16-mixed'
    """
    if precision != "auto":
        return PRECISION_ALIASES.get(precision, precision)
    use_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if use_cuda:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if torch.backends.mkldnn.is_available() and _cpu_has_bf16() else "32-true"


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
