"""A method's card: what a method is, declared once, read by everything that lists methods.

Each registered method class declares ``card = MethodCard(...)``: its paper, family, default view
recipe, the backbone kinds it accepts, and the sizes that shrink it for the tests' tiny backbones
and for the CPU benchmark. The registry's one-line description (``selfsup list``), the README's
methods table (:mod:`selfsup.methods.table`), the tests' parametrisation, the base class's
backbone check and the benchmark protocol's sizes are all read from it, so adding a method means
writing its file (plus its loss, tests and recipes), not editing lists elsewhere.

Example:
    >>> card = MethodCard(
    ...     label="SimCLR", title="A Simple Framework for Contrastive Learning of Visual Representations",
    ...     authors="Chen et al.", year=2020, paper="https://arxiv.org/abs/2002.05709",
    ...     code="https://github.com/google-research/simclr", family="contrastive", views="simclr",
    ...     backbones=ANY_BACKBONE, summary="two views, MLP projector, NT-Xent over the batch",
    ...     small={"proj_output_dim": 16})
    >>> card.line()
    'SimCLR (2020): two views, MLP projector, NT-Xent over the batch'
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

from torch import nn

from selfsup.backbones.resnet import TorchvisionResNet
from selfsup.backbones.small_resnet import SmallResNet
from selfsup.backbones.swin import SwinTransformer
from selfsup.backbones.vit import VisionTransformer

FAMILIES: tuple[str, ...] = (
    "contrastive",  # positives against negatives (in-batch, queue, memory bank), incl. dense and supervised
    "distillation",  # a student regresses or matches a (momentum or stop-gradient) teacher, incl. DINO, MSN
    "redundancy reduction",  # decorrelate or whiten the embedding (Barlow Twins, VICReg, W-MSE, TiCo)
    "clustering",  # online or offline cluster assignments as targets (SwAV, DeepCluster, ODC)
    "masked image modelling",  # reconstruct masked patches: pixels, features or latents
    "autoregressive",  # predict the next patches (AIM)
    "pretext task",  # a hand-made classification task (rotation, relative patch location)
)
"""The families a card may name, in the order the README table groups them."""

BACKBONE_KINDS: dict[str, str] = {
    "resnet": "selfsup ResNets (resnet18/34/50, resnet_small, resnet_tiny)",
    "vit": "VisionTransformer (vit_nano/tiny/small/base)",
    "swin": "SwinTransformer (swin_tiny)",
    "other": "any other encoder with feature_dim (timm:<model>, your own)",
}
"""Backbone kinds a card may accept, each with the classes it covers."""

ANY_BACKBONE: tuple[str, ...] = tuple(BACKBONE_KINDS)
"""``backbones`` of a method that uses only the pooled output (and, if dense, ``feature_map``)."""


class MethodCardError(ValueError):
    """A method card is incomplete or names something that does not exist."""


def backbone_kind(backbone: nn.Module) -> str:
    """The kind of ``backbone`` (a key of :data:`BACKBONE_KINDS`), from its class.

    Example:
        >>> backbone_kind(selfsup.backbones.get("vit_tiny", image_size=32, patch_size=4))
        'vit'
    """
    if isinstance(backbone, VisionTransformer):
        return "vit"
    if isinstance(backbone, SwinTransformer):
        return "swin"
    if isinstance(backbone, (TorchvisionResNet, SmallResNet)):
        return "resnet"
    return "other"


def _frozen(mapping: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if not isinstance(mapping, Mapping) or not all(isinstance(key, str) and key for key in mapping):
        raise MethodCardError(f"MethodCard.{what} must be a mapping of option names to values; got {mapping!r}")
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class MethodCard:
    """Facts about one method, from its paper, plus the sizes its tests and benchmark use.

    Attributes:
        label: the method's usual name, e.g. ``"MoCo v2"`` (the registry key is ``"mocov2"``).
        title: the paper's title.
        authors: first author and "et al." (or both names of a two-author paper).
        year: the year of the paper (its first arXiv version).
        paper: link to the paper (``https://...``).
        code: link to the official code, or None when none was released.
        family: one of :data:`FAMILIES`.
        views: the default view recipe, a name in ``selfsup.augment.RECIPES``; the class's
            ``default_views`` is set from it.
        backbones: the backbone kinds the method accepts (keys of :data:`BACKBONE_KINDS`; checked
            once by :class:`~selfsup.methods.base.Method`), e.g. ``("vit",)`` or :data:`ANY_BACKBONE`.
        summary: what the method does, in one line (``selfsup list`` prints
            ``"<label> (<year>): <summary>"``).
        small: method options that shrink it for the tests: 16 px images, a 64-d ``resnet_tiny``
            (width 4) or a 2-block ``vit_tiny`` on 4 px patches, batches of 8-64 images and data
            sets of 16-1,347 images (queues, clusters and negatives fit the smallest of these).
        small_views: view-recipe options the tests add to ``small`` (e.g. 8 px local crops, a
            multiple of the tiny ViT's patch).
        cpu: method options of the CPU benchmark protocol (``benchmarks/protocols.py``), for parts
            that would otherwise set the pace on two cores.
        cpu_views: view-recipe options of the CPU benchmark protocol.
    """

    label: str
    title: str
    authors: str
    year: int
    paper: str
    code: str | None
    family: str
    views: str
    backbones: tuple[str, ...]
    summary: str
    small: Mapping[str, Any] = field(default_factory=dict)
    small_views: Mapping[str, Any] = field(default_factory=dict)
    cpu: Mapping[str, Any] = field(default_factory=dict)
    cpu_views: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("label", "title", "authors", "summary", "views"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise MethodCardError(f"MethodCard.{name} must be a non-empty one-line string; got {value!r}")
        if not isinstance(self.year, int) or not 1990 <= self.year <= 2100:
            raise MethodCardError(f"MethodCard.year must be the paper's year as an int; got {self.year!r}")
        for name in ("paper", "code"):
            value = getattr(self, name)
            if (value is not None or name == "paper") and not (isinstance(value, str) and value.startswith("https://")):
                raise MethodCardError(
                    f"MethodCard.{name} must be an https:// link{' or None' if name == 'code' else ''}; got {value!r}")
        if self.family not in FAMILIES:
            raise MethodCardError(f"MethodCard.family {self.family!r} is not one of {', '.join(FAMILIES)}")
        kinds = tuple(self.backbones) if isinstance(self.backbones, (tuple, list)) else ()
        unknown = [kind for kind in kinds if kind not in BACKBONE_KINDS]
        if not kinds or unknown or len(set(kinds)) != len(kinds):
            raise MethodCardError(
                f"MethodCard.backbones must be a non-empty tuple of distinct kinds from "
                f"{', '.join(BACKBONE_KINDS)}; got {self.backbones!r}")
        object.__setattr__(self, "backbones", kinds)
        for name in ("small", "small_views", "cpu", "cpu_views"):
            object.__setattr__(self, name, _frozen(getattr(self, name), name))

    def variant(self, **changes: Any) -> "MethodCard":
        """This card with ``changes``, for a method that is a variant of this one (same views,
        backbones and sizes unless changed), e.g. DCLW's card from DCL's.

        Example:
            >>> selfsup.methods.card("dcl").variant(label="DCLW", summary="DCL, weighted positive").label
            'DCLW'
        """
        return replace(self, **changes)

    def line(self) -> str:
        """The one-line description ``selfsup list`` prints: ``"<label> (<year>): <summary>"``."""
        return f"{self.label} ({self.year}): {self.summary}"

    def accepts(self, backbone: nn.Module) -> bool:
        """Whether ``backbone``'s kind is among :attr:`backbones`."""
        return backbone_kind(backbone) in self.backbones

    def overrides(self, sizes: str = "small") -> list[str]:
        """The ``small`` or ``cpu`` sizes as config overrides: ``method.<option>=<value>`` for the
        method options, then ``augment.<option>=<value>`` for the view options (values in YAML).

        Example:
            >>> selfsup.methods.card("msn").overrides("cpu")
            ['method.hidden_dim=512', 'augment.num_focal=4']
        """
        if sizes not in ("small", "cpu"):
            raise ValueError(f"MethodCard.overrides: sizes must be 'small' or 'cpu'; got {sizes!r}")
        views = getattr(self, f"{sizes}_views")
        return ([f"method.{key}={_yaml(value)}" for key, value in getattr(self, sizes).items()]
                + [f"augment.{key}={_yaml(value)}" for key, value in views.items()])

    def as_dict(self) -> dict[str, Any]:
        """Every field as plain Python values (mappings as dicts), e.g. to print or dump as JSON."""
        return {f.name: dict(value) if isinstance(value := getattr(self, f.name), Mapping) else value
                for f in fields(self)}


def _yaml(value: Any) -> str:
    """``value`` as a config override reads it (YAML): strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def check_card(name: str, cls: type) -> MethodCard:
    """Check the card of method class ``cls`` registered as ``name``, and return it.

    The class must declare its own card (a subclass does not inherit its parent's: DCLW is not
    DCL); ``views`` must name a registered view recipe; the keys of ``small`` and ``cpu`` must be
    options of the class's ``__init__``. Raises :class:`MethodCardError` naming the method, the
    field and what was expected.
    """
    card = cls.__dict__.get("card")
    if not isinstance(card, MethodCard):
        inherited = getattr(cls, "card", None)
        hint = f" (it would inherit {inherited.label}'s card)" if isinstance(inherited, MethodCard) else ""
        raise MethodCardError(
            f"method {name!r}: class {cls.__name__} must declare its own `card = MethodCard(...)`{hint}; "
            f"see selfsup/methods/card.py for the fields")
    from selfsup import augment  # the view layer sits below methods; imported here to keep startup light

    if card.views not in augment.RECIPES.names():
        raise MethodCardError(
            f"method {name!r}: card.views {card.views!r} is not a view recipe; known recipes: "
            f"{', '.join(augment.RECIPES.names())}")
    options = _init_options(cls)
    if options is not None:
        for what in ("small", "cpu"):
            unknown = [key for key in getattr(card, what) if key not in options]
            if unknown:
                raise MethodCardError(
                    f"method {name!r}: card.{what} has {', '.join(map(repr, unknown))}, which "
                    f"{cls.__name__}.__init__ does not take; its options are: {', '.join(options)}")
    return card


def _init_options(cls: type) -> list[str] | None:
    """Keyword options of ``cls.__init__``; an ``__init__`` that passes ``**kwargs`` on adds its
    parent's (None when the chain ends in ``**kwargs`` nothing names)."""
    options: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass in (nn.Module, object):
            return None
        params = inspect.signature(init).parameters.values()
        options += [p.name for p in params if p.name not in ("self", "backbone") and p.name not in options
                    and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return options
    return None
