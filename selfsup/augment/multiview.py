"""A recipe's views of a batch: several views, a seeded, checkpointable generator, chunked rendering."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Protocol, Union

import torch
from torch import Tensor

from selfsup.augment import functional as AF
from selfsup.augment.framed import FramedImages
from selfsup.augment.geometry import Views
from selfsup.augment.pipeline import View
from selfsup.errors import ConfigError, DataError

STATE_VERSION = 2
"""Version of :meth:`MultiView.state_dict`: 2 = one CPU generator feeding per-op streams."""

_CPU_CHUNK_ELEMENTS = 1 << 21
"""On the CPU a batch is made in chunks of about this many values per image tensor (8 MB of
float32), so intermediates stay in cache and below the allocator's mmap threshold."""


class ToView(Protocol):
    """Anything that describes a view and converts to a :class:`View` (e.g. :class:`ViewSpec`)."""

    def to_view(self) -> View: ...

    def with_normalization(self, mean: Sequence[float], std: Sequence[float]) -> Any: ...


ViewLike = Union[View, ToView]


class MultiView:
    """Makes several random views of a batch, each from its view description.

    ``specs`` are :class:`View` objects (op lists) or descriptions with a ``to_view()`` method
    such as :class:`ViewSpec`; views come out in spec order, ``counts[i]`` views of ``specs[i]``.
    Without an explicit generator the views draw from the object's own CPU generator seeded with
    ``seed``; :meth:`state_dict` / :meth:`load_state_dict` save and restore it, so a resumed run
    makes exactly the views it would have made. Each view takes one number from the generator per
    batch and its ops draw from their own streams derived from it (see :class:`View`).

    Example:
        >>> from selfsup.augment.views import ViewSpec
        >>> views = MultiView([ViewSpec(size=16, mean=(0.5,), std=(0.5,))], counts=[2])
        >>> [v.shape for v in views(torch.zeros(4, 1, 32, 32, dtype=torch.uint8))][1]
        torch.Size([4, 1, 16, 16])
    """

    def __init__(self, specs: Sequence[ViewLike], counts: Sequence[int] | None = None, seed: int = 0) -> None:
        self.specs = tuple(specs)
        self.counts = tuple(counts) if counts is not None else (1,) * len(self.specs)
        if not self.specs:
            raise ConfigError("MultiView needs at least one view (a View or a ViewSpec).")
        if len(self.counts) != len(self.specs) or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.counts
        ):
            raise ConfigError(
                f"MultiView counts {self.counts!r} is invalid: expected one integer >= 1 "
                f"per spec ({len(self.specs)} specs)."
            )
        self.views = tuple(_as_view(spec, i) for i, spec in enumerate(self.specs))
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._device_type: str | None = None
        self._saved: dict[str, Any] | None = None  # generator state loaded but not yet applied

    @property
    def num_views(self) -> int:
        """Total number of views per call."""
        return sum(self.counts)

    def output_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(height, width)`` of every view (in output order) of an image of that size.

        Example:
            >>> from selfsup.augment.views import ViewSpec
            >>> MultiView([ViewSpec(size=8), ViewSpec(size=4)], counts=[1, 2]).output_sizes(32, 32)
            [(8, 8), (4, 4), (4, 4)]
        """
        return [view.output_size(height, width) for view, n in zip(self.views, self.counts) for _ in range(n)]

    def __call__(self, images: Tensor | FramedImages, generator: torch.Generator | None = None) -> Views:
        """The ``num_views`` views of ``images`` (uint8 or float in [0, 1], ``(B, C, H, W)``).

        Every view's parameters are drawn first (view by view, in spec order), then the views are
        rendered; on the CPU chunk by chunk of the batch (each chunk converted to float once for
        all views), elsewhere in one go. The result is a list of tensors that also knows each
        view's crop and flips (:class:`~selfsup.augment.geometry.Views`). Images of several shapes
        fitted into one canvas (:class:`~selfsup.augment.FramedImages`) are cropped inside each
        image's own extent (see :meth:`View.sample`).
        """
        for view in self.views:
            view.check_normalization()
        extents = None
        if isinstance(images, FramedImages):
            images, extents = images.pixels, images.extents
        if images.dim() != 4:
            raise DataError(f"MultiView expects an image batch (B, C, H, W), got shape {tuple(images.shape)}.")
        g = generator if generator is not None else self._own_generator(images.device)
        b, c, height, width = images.shape
        views = [view for view, n in zip(self.views, self.counts) for _ in range(n)]
        params = [view.sample(b, height, width, g, images.device, extents=extents) for view in views]
        sizes = self.output_sizes(height, width)
        outs = [torch.empty(b, c, h, w, device=images.device) for h, w in sizes]
        if images.device.type == "cpu":
            largest = c * max(height * width, max(h * w for h, w in sizes))
            chunk = max(1, _CPU_CHUNK_ELEMENTS // largest)
        else:
            chunk = max(b, 1)
        for start in range(0, b, chunk):
            rows = slice(start, start + chunk)
            x = AF.to_float(images[rows])
            for view, p, out in zip(views, params, outs):
                view.render(x, p.rows(rows), out=out[rows])
        return Views(outs, views, params, (height, width))

    def _own_generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            generator = torch.Generator().manual_seed(self.seed)
            if self._saved is not None:
                if self._saved["device_type"] != device.type:
                    raise ValueError(
                        f"The saved view generator ran on {self._saved['device_type']!r} but the "
                        f"images are on {device.type!r}; resume on the same kind of device."
                    )
                generator.set_state(self._saved["generator"])
                self._saved = None
            self._generator = generator
        self._device_type = device.type
        return self._generator

    def state_dict(self) -> dict[str, Any]:
        """The seed, the device type the views were made on and the generator state (both None
        before the first call), and the state's version."""
        if self._generator is None:
            saved = self._saved or {"device_type": None, "generator": None}
            return {"seed": self.seed, **saved, "version": STATE_VERSION}
        return {"seed": self.seed, "device_type": self._device_type, "generator": self._generator.get_state(),
                "version": STATE_VERSION}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; it takes effect on the next call.

        A state saved by an older version (other random streams) is not restored: the views start
        afresh from the seed, with a warning.
        """
        self.seed = state["seed"]
        self._generator = None
        self._device_type = None
        self._saved = None
        if state.get("generator") is None:
            return
        if state.get("version") != STATE_VERSION:
            warnings.warn(
                "The view generator state comes from an older selfsup whose augmentation draws differ; "
                "views restart from the seed, so this resumed run does not repeat the original's views.",
                stacklevel=2,
            )
            return
        self._saved = {"device_type": state["device_type"], "generator": state["generator"]}

    def with_normalization(self, mean: Sequence[float], std: Sequence[float]) -> MultiView:
        """A copy whose views get ``mean`` / ``std`` where theirs are None.

        Example:
            >>> from selfsup.augment.views import ViewSpec
            >>> mv = MultiView([ViewSpec(size=8)]).with_normalization((0.5,), (0.2,))
            >>> mv.specs[0].std
            (0.2,)
        """
        specs = [spec.with_normalization(mean, std) for spec in self.specs]
        return MultiView(specs, self.counts, self.seed)

    def __repr__(self) -> str:
        return f"MultiView(specs={list(self.specs)!r}, counts={list(self.counts)!r}, seed={self.seed})"


def _as_view(spec: Any, index: int) -> View:
    if isinstance(spec, View):
        return spec
    if callable(getattr(spec, "to_view", None)):
        view = spec.to_view()
        if isinstance(view, View):
            return view
    raise ConfigError(
        f"MultiView specs[{index}] = {spec!r} is not a view: expected a View (a list of ops) or a "
        "ViewSpec (or anything with a to_view() method returning a View)."
    )
