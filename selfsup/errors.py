"""Exceptions raised by selfsup.

Every error a user can cause (a bad name, a missing folder, a corrupt image, a wrong config value)
is a :class:`SelfSupError` with a message that names the thing and says what was expected, so the
command line can print it as one paragraph instead of a traceback.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class SelfSupError(Exception):
    """Base class of the errors selfsup raises for bad input."""


class ConfigError(SelfSupError, ValueError):
    """A config key, type or value is not valid."""


class UnknownNameError(SelfSupError, KeyError):
    """A name (method, backbone, data set, recipe, key) is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class DataError(SelfSupError):
    """A data root, folder or image cannot be used."""


class NonFiniteLossError(SelfSupError, FloatingPointError):
    """The training loss became NaN or infinite."""


def close_matches(name: str, options: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest options, or '' when none is close.

    Example:
        >>> close_matches("simclrr", ["simclr", "byol"])
        ' Did you mean: simclr?'
    """
    found = difflib.get_close_matches(name, list(options), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(found)}?" if found else ""


def user_message(err: BaseException) -> str:
    """The message of ``err`` without a DataLoader worker's traceback.

    Exceptions raised in a worker process come back re-created with the worker's whole traceback
    in their message; the user needs only the last line, our own message.

    Example:
        >>> user_message(DataError("Cannot read image a.png"))
        'Cannot read image a.png'
    """
    text = str(err)
    if "Original Traceback" in text:
        marker = f"{type(err).__module__}.{type(err).__name__}: "
        if marker in text:
            return text.rsplit(marker, 1)[1].strip()
    return text
