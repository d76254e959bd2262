"""One view: an ordered list of ops, then normalisation; each op draws from its own random stream.

A :class:`View` draws the parameters of all its ops for a batch (:meth:`View.sample`), then
renders them (:meth:`View.render`), so a batch can be rendered in chunks with the same result.
The generator a view is given supplies one 63-bit number per view and batch; each op's
parameters come from a generator seeded with a hash of that number and the op's key (its name,
``#n`` appended for its n-th repeat in the view), so adding, removing or reordering other ops
never changes an op's draws.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
import torch
from torch import Tensor

from selfsup.augment import functional as AF
from selfsup.augment.checks import floats
from selfsup.augment.op import Op, Params
from selfsup.errors import ConfigError


class ViewParams(Mapping[str, Params]):
    """The parameters one view drew for a batch: op key -> that op's :data:`Params`.

    Example:
        >>> from selfsup.augment.ops import HorizontalFlip
        >>> view = View([HorizontalFlip(p=1.0)], mean=(0.5,), std=(0.5,))
        >>> params = view.sample(4, 8, 8, torch.Generator().manual_seed(0))
        >>> params["horizontal_flip"]["apply"].tolist(), params.rows(slice(0, 2))["horizontal_flip"]["apply"].shape
        ([True, True, True, True], torch.Size([2]))
    """

    def __init__(self, params: Mapping[str, Params]) -> None:
        self._params = dict(params)

    def __getitem__(self, key: str) -> Params:
        return self._params[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def rows(self, rows: slice) -> ViewParams:
        """The parameters of the samples ``rows`` (a slice of the batch)."""
        return ViewParams({key: {k: v[rows] for k, v in p.items()} for key, p in self._params.items()})

    def __repr__(self) -> str:
        return f"ViewParams({ {k: sorted(p) for k, p in self._params.items()} })"


CENTRE_SQUARE = "<centre_square>"
"""The parameter key of the centred square a view without a leading crop takes of a framed image
(:class:`~selfsup.augment.FramedImages`): ``boxes``, resized to the canvas before the view's ops."""


def op_keys(ops: Sequence[Op]) -> tuple[str, ...]:
    """Each op's stream key: its name, with ``#n`` for the n-th repeat of a name in the list.

    Example:
        >>> from selfsup.augment.ops import HorizontalFlip, VerticalFlip
        >>> op_keys([HorizontalFlip(), VerticalFlip(), HorizontalFlip()])
        ('horizontal_flip', 'vertical_flip', 'horizontal_flip#1')
    """
    seen: dict[str, int] = {}
    keys = []
    for op in ops:
        n = seen.get(op.key, 0)
        seen[op.key] = n + 1
        keys.append(op.key if n == 0 else f"{op.key}#{n}")
    return tuple(keys)


def draw_seed(generator: torch.Generator) -> int:
    """One 63-bit number from ``generator`` (the only draw a view makes from it per batch)."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device).item())


def op_generator(seed: int, key: str, device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` for the op ``key`` of a view whose batch seed is ``seed``.

    Example:
        >>> a = torch.rand(2, generator=op_generator(7, "solarize", "cpu"))
        >>> torch.equal(a, torch.rand(2, generator=op_generator(7, "solarize", "cpu")))
        True
    """
    digest = hashlib.blake2b(f"{seed}/{key}".encode(), digest_size=8).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest, "little") >> 1)


class View:
    """An ordered list of batched ops, then per-channel normalisation with ``mean`` / ``std``.

    ``mean`` / ``std`` may be left as None and filled in later with :meth:`with_normalization`
    (a recipe usually takes them from the data set).

    Example:
        >>> from selfsup.augment.ops import HorizontalFlip, RandomResizedCrop, VerticalFlip
        >>> view = View([RandomResizedCrop(size=8), HorizontalFlip(), VerticalFlip()], mean=(0.5,), std=(0.2,))
        >>> x = torch.rand(4, 1, 16, 16)
        >>> view.render(x, view.sample(4, 16, 16, torch.Generator().manual_seed(0))).shape
        torch.Size([4, 1, 8, 8])
    """

    def __init__(
        self, ops: Sequence[Op], mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        if isinstance(ops, (str, Op)) or not isinstance(ops, Sequence):
            raise ConfigError(f"View ops must be a list of Op objects, got {ops!r}.")
        for i, op in enumerate(ops):
            if not isinstance(op, Op):
                raise ConfigError(
                    f"View ops[{i}] = {op!r} is not an augmentation op (a subclass of selfsup.augment.Op); "
                    "build ops from names with selfsup.augment.make_op."
                )
        self.ops = tuple(ops)
        self.keys = op_keys(self.ops)
        self.mean = floats("View", "mean", mean) if mean is not None else None
        self.std = floats("View", "std", std) if std is not None else None
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError(f"View.std = {self.std!r} is invalid: expected values > 0.")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ConfigError(f"View.std = {self.std!r} is invalid: expected as many values as mean {self.mean}.")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of the view of an image of that size."""
        for op in self.ops:
            height, width = op.output_size(height, width)
        return height, width

    def sample(
        self,
        batch: int,
        height: int,
        width: int,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        extents: Tensor | None = None,
    ) -> ViewParams:
        """Draw every op's per-sample parameters for ``batch`` images of ``height x width``.

        One number comes from ``generator``; each op draws from its own stream derived from it,
        on ``device`` (default: the generator's), where the parameters stay. ``extents`` (int64
        ``(B, 2)``, heights and widths) says where each image lies in its ``height x width`` canvas
        (:class:`~selfsup.augment.FramedImages`): a first op that ``takes_extents`` (a crop) draws
        inside them; otherwise the view starts from each image's centred square (:data:`CENTRE_SQUARE`).
        """
        device = torch.device(device) if device is not None else generator.device
        seed = draw_seed(generator)
        params = {}
        first_takes_extents = bool(self.ops) and self.ops[0].takes_extents
        if extents is not None and not first_takes_extents:
            params[CENTRE_SQUARE] = {"boxes": AF.centre_square_boxes(extents).to(device)}
        for i, (key, op) in enumerate(zip(self.keys, self.ops)):
            generator_i = op_generator(seed, key, device)
            if i == 0 and extents is not None and first_takes_extents:
                drawn = op.sample(batch, height, width, generator_i, extents=extents)
            else:
                drawn = op.sample(batch, height, width, generator_i)
            params[key] = {k: v.to(device) for k, v in drawn.items()}
            height, width = op.output_size(height, width)
        return ViewParams(params)

    def render(self, images: Tensor, params: ViewParams, out: Tensor | None = None) -> Tensor:
        """The view that ``params`` describe of a float batch in [0, 1] (left unchanged), normalised
        (written into ``out`` when given)."""
        self.check_normalization()
        x = images
        if CENTRE_SQUARE in params:  # a framed image, and no leading crop: its centred square, on the canvas
            x = AF.resized_crop(images, params[CENTRE_SQUARE]["boxes"], images.shape[-1])
        elif self.ops and not self.ops[0].fresh_output:
            x = images.clone()  # ops may write into the batch they are given
        i = 0
        while i < len(self.ops):
            op, p = self.ops[i], params[self.keys[i]]
            if i + 1 < len(self.ops):
                fused = op.fuse(self.ops[i + 1], p, params[self.keys[i + 1]])
                if fused is not None:  # e.g. crop and flip in one sampling grid
                    p, i = fused, i + 1
            x = op.apply(x, p)
            i += 1
        return AF.normalize(x, self.mean, self.std, out=out)

    def check_normalization(self) -> None:
        """A clear error when ``mean`` / ``std`` are still None."""
        if self.mean is None or self.std is None:
            raise ConfigError(
                "A view's mean and std must be set before making views; pass them to the View / "
                "ViewSpec or use MultiView.with_normalization(mean, std)."
            )

    def with_normalization(self, mean: Sequence[float], std: Sequence[float]) -> View:
        """A copy with ``mean`` / ``std`` where this view's are None (the ops are shared)."""
        return View(self.ops, self.mean if self.mean is not None else mean, self.std if self.std is not None else std)

    def __repr__(self) -> str:
        return f"View(ops={list(self.ops)!r}, mean={self.mean}, std={self.std})"
