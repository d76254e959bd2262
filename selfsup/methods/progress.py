"""Where training stands: the step, its epoch and the fraction of the run, as the engine counts them."""
from __future__ import annotations

import operator
from dataclasses import dataclass

__all__ = ["TrainingProgress"]


@dataclass(frozen=True)
class TrainingProgress:
    """The optimizer step being trained, told to a method by whoever drives the loop.

    The engine (or a hand-written loop, through :meth:`selfsup.methods.Method.begin_step`) makes
    one per step from its global step counter, so a resumed run continues with the right values
    and no method keeps a counter of its own. Schedules read it: teacher momentum (BYOL, MoCo,
    DINO), DINO's teacher-temperature warm-up and last-layer freezing (per epoch), SwAV's
    prototype freezing (per step) and queue start (per epoch), DenseCL's loss-weight warm-up.

    Attributes:
        step: 0-based index of the optimizer step among all steps of the run.
        steps_per_epoch: optimizer steps in one epoch (>= 1).
        total_steps: optimizer steps of the whole run (>= 1).

    ``epoch`` is ``step // steps_per_epoch`` and ``fraction`` is ``step / total_steps``: 0 during
    the first step, ``(K - 1) / K`` during the last, as the ``k / K`` of BYOL's momentum schedule
    (Grill et al. 2020, https://arxiv.org/abs/2006.07733, Sec. 3.2). A step past the planned run
    has fraction 1.

    Example:
        >>> progress = TrainingProgress(step=250, steps_per_epoch=100, total_steps=1000)
        >>> progress.epoch, progress.fraction
        (2, 0.25)
    """

    step: int
    steps_per_epoch: int
    total_steps: int

    def __post_init__(self) -> None:
        for name in ("step", "steps_per_epoch", "total_steps"):
            value = getattr(self, name)
            try:
                if isinstance(value, bool):
                    raise TypeError
                object.__setattr__(self, name, operator.index(value))
            except TypeError:
                raise TypeError(f"TrainingProgress.{name} must be an int, got {value!r}") from None
        if self.step < 0 or self.steps_per_epoch < 1 or self.total_steps < 1:
            raise ValueError(
                f"TrainingProgress needs step >= 0, steps_per_epoch >= 1 and total_steps >= 1; got step={self.step}, "
                f"steps_per_epoch={self.steps_per_epoch}, total_steps={self.total_steps}"
            )

    @property
    def epoch(self) -> int:
        """0-based epoch of the step."""
        return self.step // self.steps_per_epoch

    @property
    def fraction(self) -> float:
        """Fraction of the run done before this step, ``step / total_steps``, at most 1."""
        return min(self.step / self.total_steps, 1.0)
