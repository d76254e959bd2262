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

    def unregister(self, name: str) -> Callable[..., T]:
        """Remove ``name`` (e.g. a method a test registered) and return its factory.

        Example:
            >>> reg = Registry("thing")
            >>> _ = reg.register("one", "the number one")(lambda: 1)
            >>> reg.unregister("one")(), reg.names()
            (1, [])
        """
        factory = self.factory(name)  # a clear error for unknown names
        del self._factories[name], self._descriptions[name]
        return factory

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


def option_signature(factory: Callable[..., Any]) -> inspect.Signature:
    """The keyword options ``factory`` accepts, with their defaults.

    For a class, those of its ``__init__``; when that ``__init__`` takes ``**options`` and passes
    them on to its parent, the parent's options follow (keyword-only, the subclass's defaults
    first), up the class hierarchy. So a subclass that only adds to a parent (DINOv2 over iBOT,
    DCL over SimCLR) repeats none of its arguments, and a config key is still checked against
    every option with a clear error. The result keeps a ``**`` parameter only when the chain ends
    in one (then any key is accepted).

    Example:
        >>> sig = option_signature(selfsup.methods.METHODS.factory("dinov2"))
        >>> sig.parameters["out_dim"].default, sig.parameters["cls_loss_weight"].default
        (65536, 1.0)
    """
    if not inspect.isclass(factory):
        return inspect.signature(factory)
    params: dict[str, inspect.Parameter] = {}
    var_keyword: inspect.Parameter | None = None
    for cls in factory.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        inherited = bool(params) or var_keyword is not None  # reached through **options: keywords only
        var_keyword = None
        for p in list(inspect.signature(init).parameters.values())[1:]:  # without self
            if p.kind == p.VAR_KEYWORD:
                var_keyword = p
            elif p.kind != p.VAR_POSITIONAL and p.name not in params:
                if inherited and p.kind == p.POSITIONAL_ONLY:
                    continue
                params[p.name] = p.replace(kind=p.KEYWORD_ONLY) if inherited else p
        if var_keyword is None:
            break
    ordered = sorted(params.values(), key=lambda p: p.kind)  # stable: declaration order within a kind
    return inspect.Signature(ordered + ([var_keyword] if var_keyword is not None else []))


def accepted_kwargs(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword parameters ``factory`` accepts (for classes, those of ``__init__`` and of the
    parents it passes ``**options`` to: :func:`option_signature`)."""
    return {
        name: p
        for name, p in option_signature(factory).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def describe_options(factory: Callable[..., Any]) -> str:
    """``"a, b=1, c=None"``: the options of ``factory`` with their defaults, for messages."""
    return ", ".join(
        name if p.default is p.empty else f"{name}={p.default!r}" for name, p in accepted_kwargs(factory).items()
    )


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise :class:`ConfigError` naming any key ``factory`` does not accept, the closest options
    and all options with their defaults."""
    if any(p.kind == p.VAR_KEYWORD for p in option_signature(factory).parameters.values()):
        return
    accepted = accepted_kwargs(factory)
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"{what} has no option {key!r}.{close_matches(key, accepted)} "
                f"Its options (with defaults) are: {describe_options(factory) or '(none)'}."
            )
