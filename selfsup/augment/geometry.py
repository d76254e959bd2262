"""Where each view came from: the map from a view's pixels to its source image's pixels.

A view made of crops and flips is an axis-aligned affine map of its source image. Its *geometry*
is, per sample, ``(x0, sx, y0, sy)``: the point ``(u, v)`` of the view, as fractions of its width
and height in ``[0, 1]``, shows the source point ``(x0 + sx * u, y0 + sy * v)`` in source pixels
(pixel edges at integers, as :func:`~selfsup.augment.functional.resized_crop` maps them); a
mirrored view has ``sx < 0``. Methods that match locations across views (VICRegL) read it from the
:class:`Views` that :class:`~selfsup.augment.multiview.MultiView` returns, and
:func:`cell_centres` turns it into the source position of every cell of a feature map.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from selfsup.augment.ops import HorizontalFlip, RandomResizedCrop, VerticalFlip
from selfsup.augment.pipeline import CENTRE_SQUARE, View, ViewParams
from selfsup.errors import ConfigError

__all__ = ["Views", "cell_centres", "view_geometry"]


def view_geometry(view: View, params: ViewParams, height: int, width: int) -> Tensor:
    """``(B, 4)`` float64 (float32 where the device has no float64) ``(x0, sx, y0, sy)`` of every sample of one view of ``height x width`` images.

    Crops (``random_resized_crop``) and flips (``horizontal_flip``, ``vertical_flip``) compose in
    the view's order; ops that change only colours leave the map alone. Any other op that moves
    pixels (``rotate90``, or a custom op that changes the size) raises a :class:`ConfigError`.

    Example:
        >>> from selfsup.augment import HorizontalFlip, RandomResizedCrop, View
        >>> view = View([RandomResizedCrop(size=8, scale=(0.25, 0.25), ratio=(1.0, 1.0)), HorizontalFlip(p=1.0)])
        >>> view_geometry(view, view.sample(1, 32, 32, torch.Generator().manual_seed(0)), 32, 32)[0, 1].item()
        -16.0
    """
    first = next(iter(params.values()), {})
    batch = len(next(iter(first.values()))) if first else None
    device = next(iter(first.values())).device if first else torch.device("cpu")
    if batch is None:
        raise ConfigError("view_geometry needs the parameters a view drew for a batch; this view drew none.")
    exact = torch.float64 if device.type in ("cpu", "cuda") else torch.float32  # e.g. MPS has no float64
    x0 = torch.zeros(batch, dtype=exact, device=device)
    y0 = torch.zeros_like(x0)
    sx = torch.full_like(x0, float(width))
    sy = torch.full_like(x0, float(height))
    h, w = height, width
    if CENTRE_SQUARE in params:  # a framed image's centred square, resized to the canvas (View.sample)
        bx, by, bw, bh = params[CENTRE_SQUARE]["boxes"].to(device=device, dtype=exact).unbind(dim=1)
        x0, sx, y0, sy = bx, bw, by, bh
    for key, op in zip(view.keys, view.ops):
        p = params[key]
        if isinstance(op, RandomResizedCrop):
            bx, by, bw, bh = p["boxes"].to(device=device, dtype=exact).unbind(dim=1)
            x0, sx = x0 + sx * bx / w, sx * bw / w
            y0, sy = y0 + sy * by / h, sy * bh / h
        elif isinstance(op, HorizontalFlip):
            mirrored = p["apply"].to(device)
            x0, sx = torch.where(mirrored, x0 + sx, x0), torch.where(mirrored, -sx, sx)
        elif isinstance(op, VerticalFlip):
            mirrored = p["apply"].to(device)
            y0, sy = torch.where(mirrored, y0 + sy, y0), torch.where(mirrored, -sy, sy)
        elif op.key == "rotate90" or op.output_size(h, w) != (h, w):
            raise ConfigError(
                f"The view op {key!r} moves pixels in a way the view geometry does not follow (it knows "
                "random_resized_crop, horizontal_flip and vertical_flip); remove it from the views of a "
                "method that matches locations across views (VICRegL).")
        h, w = op.output_size(h, w)
    return torch.stack([x0, sx, y0, sy], dim=1)


def cell_centres(geometry: Tensor, rows: int, cols: int) -> Tensor:
    """``(B, rows * cols, 2)`` source positions ``(y, x)`` of the centres of a ``rows x cols`` grid
    laid over each view (row-major, as ``feature_map.flatten(2)`` orders a map's cells).

    Example:
        >>> cell_centres(torch.tensor([[0.0, 8.0, 0.0, 8.0]]), 2, 2)[0].tolist()
        [[2.0, 2.0], [2.0, 6.0], [6.0, 2.0], [6.0, 6.0]]
    """
    x0, sx, y0, sy = geometry.unbind(dim=1)
    u = (torch.arange(cols, device=geometry.device, dtype=geometry.dtype) + 0.5) / cols
    v = (torch.arange(rows, device=geometry.device, dtype=geometry.dtype) + 0.5) / rows
    x = x0[:, None] + sx[:, None] * u  # (B, cols)
    y = y0[:, None] + sy[:, None] * v  # (B, rows)
    return torch.stack([y[:, :, None].expand(-1, rows, cols), x[:, None, :].expand(-1, rows, cols)], dim=-1).flatten(1, 2)


class Views(list):
    """The views of a batch (a list of tensors, in the recipe's order) that remember where they
    came from: :meth:`geometry` is computed on demand from the parameters the views drew.

    Example:
        >>> from selfsup.augment.views import MultiView, ViewSpec
        >>> views = MultiView([ViewSpec(size=8, mean=(0.5,), std=(0.5,))], counts=[2])(torch.zeros(3, 1, 16, 16))
        >>> len(views), views.geometry(1).shape
        (2, torch.Size([3, 4]))
    """

    def __init__(self, tensors: Sequence[Tensor], views: Sequence[View], params: Sequence[ViewParams],
                 source_size: tuple[int, int]) -> None:
        super().__init__(tensors)
        self.view_list, self.params, self.source_size = list(views), list(params), source_size

    def geometry(self, index: int) -> Tensor:
        """View ``index``'s ``(B, 4)`` geometry ``(x0, sx, y0, sy)`` (see :func:`view_geometry`)."""
        return view_geometry(self.view_list[index], self.params[index], *self.source_size)
