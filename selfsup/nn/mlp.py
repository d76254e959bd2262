"""Multi-layer perceptron heads (projectors and predictors) built from a list of widths."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["MLP"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


class MLP(nn.Sequential):
    """A stack of Linear layers: ``Linear -> BatchNorm1d -> activation`` per hidden layer.

    The last layer is a plain ``Linear``, optionally followed by ``BatchNorm1d``. This covers the
    projection heads of SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of
    Visual Representations", 2020, https://arxiv.org/abs/2002.05709, official code
    https://github.com/google-research/simclr): ``MLP([512, 2048, 128])``; and of SimSiam (Chen &
    He, "Exploring Simple Siamese Representation Learning", 2021, https://arxiv.org/abs/2011.10566,
    official code https://github.com/facebookresearch/simsiam), whose projector is
    ``MLP([d, d, d, 2048], last_batch_norm=True, last_bn_affine=False)`` (the official code ends
    it with ``BatchNorm1d(dim, affine=False)``) and whose predictor is ``MLP([2048, 512, 2048])``.

    Args:
        dims: Widths ``[in_dim, hidden_1, ..., out_dim]``; at least two entries, all positive.
        batch_norm: Put a ``BatchNorm1d`` after each hidden Linear layer.
        last_batch_norm: Put a ``BatchNorm1d`` after the last Linear layer.
        last_bn_affine: Whether that last ``BatchNorm1d`` has a learnable scale and shift.
        activation: Hidden activation: ``"relu"``, ``"gelu"``, ``"silu"`` or ``"tanh"``.
        bias: Bias of the Linear layers. ``None`` (default): no bias where a BatchNorm follows
            (the BatchNorm's shift makes it redundant), a bias otherwise.

    Attributes:
        in_dim: Input width, ``dims[0]``.
        out_dim: Output width, ``dims[-1]``.

    Raises:
        ValueError: ``dims`` has fewer than two entries or a non-positive width, or
            ``activation`` is unknown.

    Example:
        >>> head = MLP([512, 2048, 128])
        >>> head(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self,
        dims: Sequence[int],
        *,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        last_bn_affine: bool = True,
        activation: str = "relu",
        bias: bool | None = None,
    ) -> None:
        dims = [int(d) for d in dims]
        if len(dims) < 2:
            raise ValueError(f"MLP dims needs at least an input and an output width, got {dims}")
        if any(d <= 0 for d in dims):
            raise ValueError(f"MLP dims must all be positive, got {dims}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"MLP activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        layers: list[nn.Module] = []
        n_linear = len(dims) - 1
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == n_linear - 1
            norm = last_batch_norm if last else batch_norm
            layers.append(nn.Linear(d_in, d_out, bias=(not norm) if bias is None else bias))
            if norm:
                layers.append(nn.BatchNorm1d(d_out, affine=last_bn_affine if last else True))
            if not last:
                layers.append(_ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.in_dim: int = dims[0]
        self.out_dim: int = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, in_dim)`` features to ``(batch, out_dim)``.

        Example:
            >>> MLP([8, 4])(torch.randn(2, 8)).shape
            torch.Size([2, 4])
        """
        return super().forward(x)
