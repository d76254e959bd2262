"""Learning-rate scaling with batch size and the warm-up + cosine schedule.

Linear scaling ``lr = base_lr * batch_size / 256`` is Goyal et al. 2017 ("Accurate, Large
Minibatch SGD", arXiv 1706.02677) as used by SimCLR, BYOL, MoCo and SimSiam; square-root scaling
``base_lr * sqrt(batch_size)`` is SimCLR's alternative for small batches (Appendix B.1) — note its
``base_lr`` is per image, e.g. 0.075. The cosine decay without restarts is Loshchilov & Hutter 2017
("SGDR", arXiv 1608.03983).
"""
from __future__ import annotations

import math

from selfsup.errors import ConfigError

SCALING_RULES = ("linear", "sqrt", "none")


def scaled_lr(base_lr: float, batch_size: int, rule: str = "linear") -> float:
    """The learning rate for a global ``batch_size`` under a scaling ``rule``.

    Example:
        >>> scaled_lr(0.3, 4096, "linear")  # 4.8, SimCLR's ImageNet value
        4.8
    """
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    if rule == "none":
        return base_lr
    raise ConfigError(f"optimizer.lr_scaling must be one of {', '.join(SCALING_RULES)}; got {rule!r}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_fraction: float = 0.0) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based).

    Rises linearly from ``1 / warmup_steps`` to 1 over the warm-up, then follows a half cosine
    down to ``final_fraction`` at ``total_steps``.

    Example:
        >>> warmup_cosine(0, total_steps=100, warmup_steps=10)
        0.1
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
