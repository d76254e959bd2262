"""The ``custom`` recipe: views written as data, each an ordered list of ops (``augment.views``).

In a training config::

    augment:
      views:                      # recipe "custom" is implied
        - count: 2
          ops:
            - {name: random_resized_crop, scale: [0.2, 1.0]}   # size: augment.size or the data's
            - horizontal_flip                                   # a bare name takes the defaults
            - {name: rotate90}
            - {name: color_jitter, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1}
            - {name: random_erasing, p: 0.25}

Every view ends with normalisation by the data set's mean and std (or the view's own ``mean`` /
``std`` keys). Op names are those of :data:`~selfsup.augment.OPS`, users' registered ops included.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from selfsup.augment.multiview import MultiView
from selfsup.augment.op import Op, make_op
from selfsup.augment.pipeline import View
from selfsup.augment.recipes import RECIPES
from selfsup.errors import ConfigError, SelfSupError, close_matches

__all__ = ["custom", "view_from_dict"]

VIEW_KEYS = ("ops", "count", "mean", "std")
"""The keys of one view in ``augment.views``."""


@RECIPES.register("custom", "views from op lists: augment.views = [{ops: [...], count: n}, ...]")
def custom(
    views: Sequence[Mapping[str, Any] | View],
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> MultiView:
    """Views made of the listed ops, in order.

    Args:
        views: one entry per distinct view: a mapping with ``ops`` (a list of op names, mappings
            ``{name: <op>, <option>: <value>}`` or :class:`~selfsup.augment.Op` objects), and
            optionally ``count`` (how many views of it, default 1), ``mean`` and ``std``; or a
            :class:`~selfsup.augment.View`.
        size: the size given to ops that take one and leave it out (e.g. ``random_resized_crop``).
        mean: normalisation mean of views without their own.
        std: normalisation standard deviation of views without their own.
        seed: seed of the views' generator.

    Example:
        >>> views = custom([{"ops": ["random_resized_crop", "vertical_flip"], "count": 2}], size=16)
        >>> views.num_views, views.views[0].keys
        (2, ('random_resized_crop', 'vertical_flip'))
    """
    if isinstance(views, (str, Mapping)) or not isinstance(views, Sequence) or len(views) == 0:
        raise ConfigError(
            f"View recipe 'custom' (config key augment.views) needs a non-empty list of views, each "
            f"{{ops: [...], count: n}}; got {views!r}."
        )
    built, counts = [], []
    for i, entry in enumerate(views):
        view, count = view_from_dict(entry, size=size, where=f"views[{i}]")
        built.append(view.with_normalization(mean, std) if mean is not None and std is not None else view)
        counts.append(count)
    return MultiView(built, counts=counts, seed=seed)


def view_from_dict(entry: Mapping[str, Any] | View, size: int | None = None, where: str = "view") -> tuple[View, int]:
    """A :class:`View` and its count from one entry of ``augment.views``; ``where`` names the entry
    in errors.

    Example:
        >>> view, count = view_from_dict({"ops": [{"name": "rotate90", "turns": [0, 2]}]})
        >>> view.ops[0].turns, count
        ((0, 2), 1)
    """
    if isinstance(entry, View):
        return entry, 1
    prefix = f"View recipe 'custom': {where}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{prefix} must be a mapping with the keys {', '.join(VIEW_KEYS)}; got {entry!r}.")
    for key in entry:
        if key not in VIEW_KEYS:
            raise ConfigError(
                f"{prefix} has no key {key!r}.{close_matches(str(key), VIEW_KEYS)} "
                f"Its keys are: {', '.join(VIEW_KEYS)}."
            )
    ops = entry.get("ops")
    if isinstance(ops, (str, Mapping, Op)) or not isinstance(ops, Sequence):
        raise ConfigError(f"{prefix}.ops must be a list of ops (names or {{name: ..., option: ...}}); got {ops!r}.")
    count = entry.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"{prefix}.count = {count!r} is invalid: expected an integer >= 1.")
    made = []
    for j, spec in enumerate(ops):
        try:
            made.append(make_op(spec, {"size": size}))
        except (SelfSupError, ValueError, TypeError) as err:
            raise ConfigError(f"{prefix}.ops[{j}]: {err}") from err
    try:
        return View(made, entry.get("mean"), entry.get("std")), count
    except ConfigError as err:
        raise ConfigError(f"{prefix}: {err}") from err
