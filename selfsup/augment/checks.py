"""Value checks shared by :class:`~selfsup.augment.ViewSpec` and the augmentation ops.

Each check raises :class:`~selfsup.errors.ConfigError` naming the owner and the field, the value
given and what was expected, e.g. ``random_resized_crop.scale = (0.8, 0.5) is invalid: expected
(lo, hi) with 0 < lo <= hi <= 1.``
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

from selfsup.errors import ConfigError


def invalid(owner: str, name: str, value: Any, expected: str) -> NoReturn:
    """Raise the error for ``owner.name = value``.

    Example:
        >>> invalid("solarize", "p", 2, "a probability in [0, 1]")
        Traceback (most recent call last):
        ...
        selfsup.errors.ConfigError: solarize.p = 2 is invalid: expected a probability in [0, 1].
    """
    raise ConfigError(f"{owner}.{name} = {value!r} is invalid: expected {expected}.")


def is_number(value: Any) -> bool:
    """True for ints and floats, False for bools and everything else."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def floats(owner: str, name: str, value: Any, length: int | None = None) -> tuple[float, ...]:
    """``value`` as a tuple of floats (lists from config files welcome): ``length`` of them, or
    one or more when ``length`` is None.

    Example:
        >>> floats("random_resized_crop", "scale", [0.2, 1])
        (0.2, 1.0)
    """
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) == 0
        or (length is not None and len(value) != length)
        or not all(is_number(v) for v in value)
    ):
        invalid(owner, name, value, f"a sequence of {length or 'one or more'} numbers")
    return tuple(float(v) for v in value)


def probability(owner: str, name: str, value: Any) -> float:
    """``value`` as a float in [0, 1].

    Example:
        >>> probability("horizontal_flip", "p", 1)
        1.0
    """
    if not is_number(value) or not 0 <= value <= 1:
        invalid(owner, name, value, "a probability in [0, 1]")
    return float(value)


def interval(owner: str, name: str, value: Any, low: float = 0.0, high: float | None = None) -> tuple[float, float]:
    """``value`` as ``(lo, hi)`` with ``low < lo <= hi`` (and ``hi <= high`` when given).

    Example:
        >>> interval("gaussian_blur", "sigma", [0.1, 2])
        (0.1, 2.0)
    """
    lo, hi = floats(owner, name, value, 2)
    if not low < lo <= hi or (high is not None and hi > high):
        bound = f" <= {high:g}" if high is not None else ""
        invalid(owner, name, value, f"(lo, hi) with {low:g} < lo <= hi{bound}")
    return lo, hi


def positive_int(owner: str, name: str, value: Any) -> int:
    """``value`` as an integer >= 1 (bools and floats refused).

    Example:
        >>> positive_int("random_resized_crop", "size", 32)
        32
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        invalid(owner, name, value, "an integer >= 1")
    return value
