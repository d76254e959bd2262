"""The augmentation op: what one step of a view is, and the registry users add their own ops to.

An op works on a whole float batch ``(B, C, H, W)`` in [0, 1] at once, in two steps:
:meth:`Op.sample` draws every sample's random parameters from the generator it is given (one
tensor per parameter, first dimension the batch), and :meth:`Op.apply` applies them to the batch
on the batch's device. Keeping the two apart lets a view draw all its parameters first and render
the batch in chunks, and lets each op draw from its own generator stream (see
:class:`~selfsup.augment.View`). Ops that act on each sample with a probability ``p`` derive from
:class:`RandomOp`, which draws the yes/no per sample and keeps the op's output for the chosen samples only.

Registering an op gives it a name for recipes written as data (YAML configs)::

    @register_op("invert")
    @dataclass
    class Invert(RandomOp):
        '''Invert every pixel value (1 - x) with probability p.'''
        p: float = 0.5

        def transform(self, images, params):
            return 1.0 - images
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from selfsup._registry import Registry, accepted_kwargs
from selfsup.augment import functional as AF
from selfsup.augment.checks import probability
from selfsup.errors import ConfigError

Params = dict[str, Tensor]
"""An op's parameters for a batch: name -> tensor whose first dimension is the batch."""


class Op:
    """One batched augmentation step. Subclasses implement :meth:`sample` and :meth:`apply`.

    ``apply`` may write into the batch it is given (views hand each op a batch they own) and
    returns the result. Ops that change the image size also override :meth:`output_size`.

    Attributes:
        name: the registered name (set by :func:`register_op`), used to key the op's random stream.
        fresh_output: True if ``apply`` always returns a new tensor and never writes into its input
            (then a view needs no private copy of the input batch before it).
        takes_extents: True if, as a view's first op, ``sample`` accepts ``extents=`` (int64
            ``(B, 2)``: each sample's image height and width in the top-left corner of a larger
            canvas, :class:`~selfsup.augment.FramedImages`) and ``apply`` outputs only what lies
            inside them (a crop). A view whose first op does not is given each image's centred
            square, resized to the canvas, instead.
    """

    name: ClassVar[str] = ""
    fresh_output: ClassVar[bool] = False
    takes_extents: ClassVar[bool] = False

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> Params:
        """Per-sample parameters for ``batch`` images of ``height x width``, drawn from ``generator``
        only (on its device)."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample()")

    def apply(self, images: Tensor, params: Params) -> Tensor:
        """The batch with the op applied; ``params`` are :meth:`sample`'s (rows of the batch)."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of the output for an input of that size (unchanged by default)."""
        return height, width

    def fuse(self, following: Op, params: Params, following_params: Params) -> Params | None:
        """Parameters with which this op's ``apply`` also does the work of ``following`` (the next
        op of the view), or None (the default) when it cannot; a speed-up only, same result."""
        return None

    @property
    def key(self) -> str:
        """The op's name, or its class name for ops that were never registered."""
        return self.name or type(self).__name__


class RandomOp(Op):
    """An op applied to each sample with probability ``p``.

    Subclasses set ``p`` (a dataclass field), draw their own parameters in :meth:`draw` and apply
    them in :meth:`transform`. On the CPU it sees only the chosen samples (gathered into a
    contiguous sub-batch, never a loop over samples); on a GPU the whole batch, its output kept for
    the chosen samples (:func:`apply_to`). So it must treat each sample on its own.

    Example:
        >>> class Invert(RandomOp):
        ...     p = 1.0
        ...     def transform(self, images, params):
        ...         return 1.0 - images
        >>> op = Invert()
        >>> x = torch.zeros(2, 1, 2, 2)
        >>> op.apply(x, op.sample(2, 2, 2, torch.Generator())).mean().item()
        1.0
    """

    p: float = 1.0

    def __post_init__(self) -> None:
        self.p = probability(self.key, "p", self.p)

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> Params:
        """``apply``: bool ``(B,)``, True with probability ``p``; then :meth:`draw`'s parameters."""
        chosen = AF.uniform(0.0, 1.0, (batch,), generator) < self.p
        return {"apply": chosen, **self.draw(batch, height, width, generator)}

    def draw(self, batch: int, height: int, width: int, generator: torch.Generator) -> Params:
        """The op's own per-sample parameters (none by default)."""
        return {}

    def apply(self, images: Tensor, params: Params) -> Tensor:
        own = {k: v for k, v in params.items() if k != "apply"}
        return apply_to(images, params["apply"], self.transform, own)

    def transform(self, images: Tensor, params: Params) -> Tensor:
        """The op on ``images`` (the chosen samples on the CPU, the whole batch on a GPU; each sample
        on its own) with their parameters ``params``."""
        raise NotImplementedError(f"{type(self).__name__} must implement transform()")


GATHER_DEVICES: tuple[str, ...] = ("cpu",)
"""Device types on which :func:`apply_to` gathers the chosen samples into a sub-batch. Elsewhere
(GPUs) it runs the op on the whole batch and keeps the result where the mask holds: gathering needs
the number of chosen samples on the host (``nonzero``), which makes the host wait for the device at
every op; measured on an H200, that wait, not the arithmetic, set the cost of a view
(``benchmarks/speed/augment_throughput.py --device cuda``)."""


def apply_to(images: Tensor, mask: Tensor, fn: Callable[[Tensor, Params], Tensor], params: Params) -> Tensor:
    """Replace the samples where ``mask`` holds by ``fn(those samples, their params)``.

    On the CPU (:data:`GATHER_DEVICES`) the chosen samples are gathered, transformed and written back
    into ``images`` (in place), so unchosen samples cost nothing. On other devices ``fn`` runs on a
    copy of the whole batch and ``torch.where`` keeps its output for the chosen samples: the same
    values, with no host-device synchronisation. ``fn`` must treat each sample on its own (every op
    does) and may write into the batch it is given.

    Example:
        >>> x = torch.zeros(3, 1, 1, 1)
        >>> apply_to(x, torch.tensor([True, False, True]), lambda s, p: s + 1, {}).flatten().tolist()
        [1.0, 0.0, 1.0]
    """
    if images.device.type not in GATHER_DEVICES:
        chosen = mask.to(torch.bool).view(-1, *([1] * (images.dim() - 1)))
        return torch.where(chosen, fn(images.clone(), params), images)
    index = mask.nonzero().squeeze(1)
    if index.numel() == 0:
        return images
    if index.numel() == images.shape[0]:
        return fn(images, params)
    chosen = {k: v.index_select(0, index) for k, v in params.items()}
    return images.index_copy_(0, index, fn(images.index_select(0, index), chosen))


OPS: Registry[Op] = Registry("augmentation op")
"""Name -> op class, for recipes written as data (``augment.views`` in a config)."""

OpClass = TypeVar("OpClass", bound=type)


def register_op(name: str, description: str | None = None) -> Callable[[OpClass], OpClass]:
    """Class decorator: register an :class:`Op` subclass under ``name`` in :data:`OPS`.

    The description defaults to the first line of the class docstring. The op's keyword
    arguments are its options in a config (``{name: <name>, <option>: <value>, ...}``).

    Example:
        >>> "horizontal_flip" in OPS.names()
        True
    """

    def wrap(cls: OpClass) -> OpClass:
        if not (isinstance(cls, type) and issubclass(cls, Op)):
            raise TypeError(f"register_op({name!r}) decorates a subclass of selfsup.augment.Op, got {cls!r}")
        cls.name = name
        summary = description or (inspect.getdoc(cls) or name).splitlines()[0]
        OPS.register(name, summary)(cls)
        return cls

    return wrap


def make_op(spec: str | Mapping[str, Any] | Op, defaults: Mapping[str, Any] | None = None) -> Op:
    """An op from its config form: an :class:`Op`, a registered name, or a mapping with a ``name``
    key and the op's options. ``defaults`` fill options the op accepts but the spec leaves out
    (e.g. a recipe's ``size`` for the crop).

    Example:
        >>> make_op({"name": "random_resized_crop", "scale": [0.2, 1]}, {"size": 32}).scale
        (0.2, 1.0)
    """
    if isinstance(spec, Op):
        return spec
    if isinstance(spec, str):
        name, options = spec, {}
    elif isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(
                f"An op given as a mapping needs a 'name' key (a string), got {spec!r}. "
                f"Known augmentation ops: {', '.join(OPS.names())}."
            )
    else:
        raise ConfigError(
            f"An op is a registered name, a mapping with a 'name' key and the op's options, or an "
            f"Op object; got {spec!r}."
        )
    accepted = accepted_kwargs(OPS.factory(name))
    for key, value in (defaults or {}).items():
        if key in accepted and key not in options and value is not None:
            options[key] = value
    missing = [key for key, p in accepted.items() if p.default is p.empty and key not in options]
    if missing:
        raise ConfigError(f"augmentation op {name!r} needs the option(s) {', '.join(map(repr, missing))}.")
    return OPS.get(name, **options)
