"""The method registry: ``selfsup.methods.get("byol", backbone=...)``.

A method is registered with its name only; its one-line description comes from its card::

    @METHODS.register("simclr")
    class SimCLR(Method):
        card = MethodCard(label="SimCLR", ...)
"""
from __future__ import annotations

from collections.abc import Callable

from selfsup._registry import Registry
from selfsup.methods.base import Method
from selfsup.methods.card import MethodCard, MethodCardError, check_card


class MethodRegistry(Registry[Method]):
    """A :class:`~selfsup._registry.Registry` of :class:`Method` classes that checks each class's
    card when it is registered and reads the description from it.

    Example:
        >>> METHODS.card("dino").family
        'distillation'
    """

    def register(self, name: str, description: str | None = None) -> Callable[[type[Method]], type[Method]]:
        """Decorator that registers a method class whose card passes :func:`check_card`.

        ``description`` is the old call form; when given it must equal the card's line (the card
        is the one place the description lives).
        """
        register = super().register

        def wrap(cls: type[Method]) -> type[Method]:
            card = check_card(name, cls)
            if description is not None and description != card.line():
                raise MethodCardError(
                    f"method {name!r}: the description given to METHODS.register ({description!r}) differs "
                    f"from its card's line ({card.line()!r}); drop it, the card is read instead")
            return register(name, card.line())(cls)

        return wrap

    def card(self, name: str) -> MethodCard:
        """The card of method ``name`` (a clear error for unknown names)."""
        return self.factory(name).card  # type: ignore[attr-defined]

    def cards(self) -> dict[str, MethodCard]:
        """Name -> card of every registered method, sorted by name."""
        return {name: self.card(name) for name in self.names()}


METHODS = MethodRegistry("method")
