"""Per-epoch hyper-parameter schedules shared by several methods (teacher-temperature warm-up)."""
from __future__ import annotations

__all__ = ["warmup_temperature"]


def warmup_temperature(epoch: int, start: float, end: float, warmup_epochs: int) -> float:
    """``linspace(start, end, warmup_epochs)[epoch]`` during the warm-up, then ``end``.

    The teacher-temperature warm-up of DINO (Caron et al. 2021, https://arxiv.org/abs/2104.14294,
    Sec. 3 / Appendix: 0.04 -> 0.07 over 30 epochs; official ``main_dino.py``'s
    ``np.linspace`` per epoch), also used by iBOT and DINOv2 for both class and patch tokens.

    Args:
        epoch: 0-based epoch.
        start: temperature of epoch 0.
        end: temperature from epoch ``warmup_epochs - 1`` on.
        warmup_epochs: length of the warm-up (0: ``end`` from the start).

    Raises:
        ValueError: ``epoch`` or ``warmup_epochs`` is negative.

    Example:
        >>> warmup_temperature(0, 0.04, 0.07, 30), warmup_temperature(30, 0.04, 0.07, 30)
        (0.04, 0.07)
    """
    if epoch < 0 or warmup_epochs < 0:
        raise ValueError(f"warmup_temperature needs epoch >= 0 and warmup_epochs >= 0, got {epoch} and {warmup_epochs}")
    if epoch >= warmup_epochs:
        return end
    return start if warmup_epochs == 1 else start + (end - start) * epoch / (warmup_epochs - 1)
