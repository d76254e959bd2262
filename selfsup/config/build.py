"""From a :class:`~selfsup.config.TrainConfig` to its backbone, method and view recipe: the one build.

Training (:func:`selfsup.training.train`) builds the parts with the real data's facts;
validation (:func:`selfsup.config.validate`) runs the same build on the meta device with stand-in
facts (:meth:`DataFacts.stand_in`) before any work starts, so both raise the same errors for the
same config: a value a constructor rejects (as a :class:`~selfsup.errors.ConfigError` naming the
config section), and a method and view recipe that disagree on their global views
(:mod:`selfsup.config.view_counts`). Options the engine fills in (``num_samples``: one memory
slot per training image) are filled in here and nowhere else.

Example:
    >>> config = selfsup.config.load("digits/simclr")
    >>> parts = build(config, DataFacts.stand_in(config), meta=True)
    >>> parts.method.default_views, parts.views.num_views
    ('simclr', 2)
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfsup import augment, backbones, methods
from selfsup._registry import accepted_kwargs
from selfsup.augment import MultiView
from selfsup.backbones import Backbone
from selfsup.backbones.pretrained import load_weights
from selfsup.config.schema import TrainConfig
from selfsup.config.view_counts import check_global_views
from selfsup.errors import ConfigError
from selfsup.methods import Method

log = logging.getLogger(__name__)

__all__ = ["DataFacts", "Parts", "build", "build_backbone", "build_method", "build_views", "config_errors"]

STAND_IN_NUM_SAMPLES = 1_000_000
"""Training-set size assumed by validation, before the data is read (memory banks sized by it
cost nothing on the meta device; the real size is checked when training builds the method)."""

STAND_IN_IMAGE_SIZE = 32
"""Image side assumed by validation when ``data.image_size`` is not set."""


@dataclass(frozen=True)
class DataFacts:
    """What the build needs to know about the training data.

    Attributes:
        channels: image channels (the backbone's input unless ``backbone.in_channels`` is set).
        num_samples: training-set size (for methods with one memory slot per image).
        image_size: image side (the view recipe's ``size`` unless ``augment.size`` is set).
        mean, std: per-channel normalisation of the views (None: the recipe's own default).
    """

    channels: int
    num_samples: int
    image_size: int
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None

    @classmethod
    def of(cls, dataset: Any) -> DataFacts:
        """The facts of a data set (``channels``, ``len``, ``image_size``, ``mean``, ``std``)."""
        return cls(channels=dataset.channels, num_samples=len(dataset), image_size=dataset.image_size[0],
                   mean=tuple(dataset.mean), std=tuple(dataset.std))

    @classmethod
    def stand_in(cls, config: TrainConfig) -> DataFacts:
        """Facts for validation, before any data is read: the config's channels and image size when
        set (3 channels and 32 px otherwise) and :data:`STAND_IN_NUM_SAMPLES` images."""
        return cls(channels=config.data.channels or 3, num_samples=STAND_IN_NUM_SAMPLES,
                   image_size=config.data.image_size or STAND_IN_IMAGE_SIZE)


@dataclass
class Parts:
    """The built backbone, the method around it and the view recipe."""

    backbone: Backbone
    method: Method
    views: MultiView


@contextlib.contextmanager
def config_errors(section: str) -> Iterator[None]:
    """Report a factory's ``ValueError`` / ``TypeError`` as a :class:`ConfigError` naming the config
    section; errors that already name a config key (``Config ...``) pass unchanged, and so do the
    other selfsup errors (an unknown name is a ``KeyError``, bad data a ``DataError``).

    Example:
        >>> backbone = selfsup.backbones.get("resnet_tiny", width=4)
        >>> with config_errors("method"):
        ...     selfsup.methods.get("simclr", backbone=backbone, temperature=0)
        Traceback (most recent call last):
        selfsup.errors.ConfigError: Config section 'method': ...
    """
    try:
        yield
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError) and str(err).startswith("Config"):
            raise
        raise ConfigError(f"Config section {section!r}: {err}") from err


def _options(section: dict[str, Any], name_key: str) -> dict[str, Any]:
    return {key: value for key, value in section.items() if key != name_key}


def build_backbone(config: TrainConfig, channels: int) -> Backbone:
    """The configured backbone, adapted to ``channels`` unless the config sets ``in_channels``, and
    started from ``backbone.weights`` (a file of weights) when set
    (:func:`selfsup.backbones.pretrained.load_weights`; on the meta device only the file is checked)."""
    options = _options(config.backbone, "name")
    options.setdefault("in_channels", channels)
    weights = options.pop("weights", None)
    with config_errors("backbone"):
        backbone = backbones.get(config.backbone["name"], **options)
    if weights is not None:
        if not isinstance(weights, (str, Path)) or not Path(weights).is_file():
            raise ConfigError(f"Config key backbone.weights: no such file {weights!r} (expected a safetensors or "
                              "PyTorch file of weights)")
        if not _on_meta(backbone):
            log.info("backbone.weights: %s", load_weights(backbone, weights).line())
    return backbone


def _on_meta(module: torch.nn.Module) -> bool:
    return any(p.device.type == "meta" for p in module.parameters())


def build_method(config: TrainConfig, backbone: Backbone, num_samples: int) -> Method:
    """The configured method; ``num_samples`` (the training set's size) goes to methods that take it."""
    options = _options(config.method, "name")
    if "num_samples" in accepted_kwargs(methods.METHODS.factory(config.method["name"])):
        options.setdefault("num_samples", num_samples)
    with config_errors("method"):
        return methods.get(config.method["name"], backbone=backbone, **options)


def recipe_name(config: TrainConfig, method: Method) -> str:
    """The view recipe: the config's ``augment.recipe``, else the method's published one."""
    return str(config.augment.get("recipe", method.default_views))


def build_views(config: TrainConfig, method: Method, image_size: int, mean: Sequence[float] | None,
                std: Sequence[float] | None, seed: int) -> MultiView:
    """The view recipe at the data's size and normalisation (unless the config sets them), seeded."""
    options = _options(config.augment, "recipe")
    options.setdefault("size", image_size)
    if mean is not None:
        options.setdefault("mean", tuple(mean))
    if std is not None:
        options.setdefault("std", tuple(std))
    options["seed"] = seed
    with config_errors("augment"):
        return augment.get(recipe_name(config, method), **options)


def build(config: TrainConfig, data: DataFacts, *, meta: bool = False) -> Parts:
    """Backbone, method and view recipe of ``config`` for ``data``, checked against each other.

    With ``meta=True`` the backbone and method are built on the meta device (no memory, no
    initialisation cost): validation uses this to run the real build before any work starts.

    Example:
        >>> config = selfsup.config.load("digits/simclr")
        >>> parts = build(config, DataFacts.of(selfsup.data.get("digits", split="train")))
        >>> type(parts.method).__name__, parts.method.backbone.name, parts.views.num_views
        ('SimCLR', 'resnet_small', 2)
    """
    with torch.device("meta") if meta else contextlib.nullcontext():
        backbone = build_backbone(config, data.channels)
        method = build_method(config, backbone, data.num_samples)
    views = build_views(config, method, data.image_size, data.mean, data.std, config.seed)
    recipe = recipe_name(config, method)
    check_global_views(method, views, data.image_size, recipe, accepted_kwargs(augment.RECIPES.factory(recipe)))
    return Parts(backbone, method, views)
