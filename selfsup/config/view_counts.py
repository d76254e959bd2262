"""Checks that a method and its view recipe agree on how many global views there are.

Some methods treat the first views of a batch as "global" crops: DINO's, iBOT's and DINOv2's
teacher sees them (``method.num_global_views``), DeepCluster-v2 keeps a memory per global crop
(``method.num_global_views``), SwAV computes its codes on the first ``method.num_assign_views``.
The view recipe decides how many views it makes at the full size (``augment.num_global`` of
``multicrop``; two in ``dino``, ``byol``, ``simclr``; ``1 + num_random`` in ``msn``). Nothing at
training time notices when the two settings disagree (a teacher fed a local crop, or a global crop
seen only by the student), so the build compares them once, when both are known, and names both
keys. Global views are the leading views of the first view's size, the views a method can batch
together as global crops (:func:`~selfsup.nn.forward_by_resolution` groups views by size the same
way).

Example:
    >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
    >>> method = selfsup.methods.get("dino", backbone=backbone, out_dim=32, hidden_dim=16, bottleneck_dim=8)
    >>> views = selfsup.augment.get("dino", size=32)  # 2 global views of 32 px, then local ones
    >>> check_global_views(method, views, 32, "dino")  # they agree; raises ConfigError on a mismatch
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

from selfsup.errors import ConfigError

EXACTLY, AT_LEAST = "exactly", "at least"

GLOBAL_VIEW_OPTIONS: dict[str, str] = {"num_global_views": EXACTLY, "num_assign_views": AT_LEAST}
"""Method options (attributes of the built method) that count the leading global views a method
takes, and how many global views the recipe must then make: ``exactly`` that many, or ``at least``
that many for a method that may use a subset of them (SwAV's ``crops_for_assign``)."""

RECIPE_GLOBAL_OPTIONS = ("num_global", "num_random", "views")
"""Recipe options that set how many full-size views a recipe makes (named in the error; ``views``:
the op lists of the ``custom`` recipe)."""


def leading_global_views(views: Any, image_size: int) -> int:
    """How many views at the start have the first view's size (the recipe's global views), for
    square images of side ``image_size`` (:meth:`~selfsup.augment.MultiView.output_sizes`).

    Example:
        >>> leading_global_views(selfsup.augment.get("multicrop", size=32, num_global=3), 32)
        3
    """
    sizes = views.output_sizes(image_size, image_size)
    count = 1
    while count < len(sizes) and sizes[count] == sizes[0]:
        count += 1
    return count


def check_global_views(method: Any, views: Any, image_size: int, recipe: str,
                       recipe_options: Collection[str] = ()) -> None:
    """Raise :class:`ConfigError` naming both keys when ``method``'s global-view option (any of
    :data:`GLOBAL_VIEW_OPTIONS` it has) and the global views of ``views`` disagree.

    ``image_size`` is the side of the (square) input images, ``recipe`` the recipe's name and
    ``recipe_options`` the options its factory accepts (the error names the one that sets the
    count, when there is one).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> dino = selfsup.methods.get("dino", backbone=backbone, num_global_views=3, out_dim=32, hidden_dim=16)
        >>> check_global_views(dino, selfsup.augment.get("dino", size=32), 32, "dino")
        Traceback (most recent call last):
        selfsup.errors.ConfigError: Config key 'method.num_global_views' (3) and view recipe 'dino' disagree...
    """
    made = leading_global_views(views, image_size)
    for option, rule in GLOBAL_VIEW_OPTIONS.items():
        wanted = getattr(method, option, None)
        if not isinstance(wanted, int) or isinstance(wanted, bool):
            continue
        if (made == wanted) if rule == EXACTLY else (made >= wanted):
            continue
        knobs = [f"'augment.{key}'" for key in RECIPE_GLOBAL_OPTIONS if key in recipe_options]
        source = (f"(set by {' / '.join(knobs)})" if knobs else
                  "(a fixed number in this recipe; the 'multicrop' recipe sets it with augment.num_global)")
        raise ConfigError(
            f"Config key 'method.{option}' ({wanted}) and view recipe {recipe!r} disagree: "
            f"{type(method).__name__} needs {rule} {wanted} global views (the first views of a batch), but the "
            f"recipe makes {made} {source}; global views are the leading views of the first view's size. "
            f"Change method.{option} or the recipe so they agree."
        )
