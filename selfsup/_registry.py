"""A small name -> factory registry shared by methods, backbones, data sets and view recipes.

Modelled on the idea of timm's model registry: users name a thing by a string, discover what
exists with ``names()`` and read one line about each with ``describe()``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from selfsup.errors import ConfigError, UnknownNameError, close_matches

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) with a one-line description each.

    Example:
        >>> reg = Registry("thing")
        >>> @reg.register("one", "the number one")
        ... def one() -> int:
        ...     return 1
        >>> reg.get("one")
        1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers ``factory`` under ``name``."""

        def wrap(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            self._descriptions[name] = description
            return factory

        return wrap

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._factories)

    def describe(self) -> dict[str, str]:
        """Name -> one-line description, sorted by name."""
        return {name: self._descriptions[name] for name in self.names()}

    def factory(self, name: str) -> Callable[..., T]:
        """The class or function registered under ``name``; a clear error for unknown names."""
        if name not in self._factories:
            raise UnknownNameError(
                f"Unknown {self.kind} {name!r}.{close_matches(name, self._factories)} "
                f"Known {self.kind}s: {', '.join(self.names())}."
            )
        return self._factories[name]

    def get(self, name: str, **kwargs: Any) -> T:
        """Build ``name`` with keyword arguments checked against its signature."""
        factory = self.factory(name)
        check_kwargs(factory, kwargs, f"{self.kind} {name!r}")
        return factory(**kwargs)


def accepted_kwargs(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword parameters ``factory`` accepts (for classes, those of ``__init__``)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(target).parameters
    return {
        name: p
        for name, p in params.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise :class:`ConfigError` naming any key ``factory`` does not accept."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    if any(p.kind == p.VAR_KEYWORD for p in inspect.signature(target).parameters.values()):
        return
    accepted = accepted_kwargs(factory)
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{what} has no option {key!r}.{close_matches(key, accepted)} "
                f"Its options are: {', '.join(accepted) or '(none)'}."
            )
