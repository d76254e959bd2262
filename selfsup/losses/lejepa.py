"""LeJEPA's loss: view invariance plus SIGReg, a sketched test that the embeddings are N(0, I)."""
from __future__ import annotations

import torch
from torch import nn

from selfsup.nn.distributed import gather
from selfsup.nn.precision import at_least_fp32

__all__ = ["LeJEPALoss", "SIGReg"]


class SIGReg(nn.Module):
    """Sketched Isotropic Gaussian Regularisation: an Epps-Pulley test along random directions.

    Balestriero & LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning Without the
    Heuristics", 2025, https://arxiv.org/abs/2511.08544, Sec. 4 and Alg. 1; official code
    https://github.com/rbalestr-lab/lejepa (``MINIMAL.md``). The ``(n, d)`` embeddings of one view
    are projected on ``num_slices`` random unit directions; along each, the empirical
    characteristic function ``phi_n(t) = mean_i exp(i t x_i)`` is compared with the standard
    normal's ``exp(-t^2 / 2)`` by the Epps-Pulley statistic
    ``n * integral |phi_n(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt`` over ``[-t_max, t_max]``. As in the
    official code, the integrand is even, so it is integrated on ``knots`` points of ``[0, t_max]``
    with the trapezoidal rule and doubled. The loss is the mean statistic over directions (and over
    views, for a ``(views, n, d)`` input).

    The directions are drawn anew at every step; :meth:`forward` takes them from ``generator`` (the
    method seeds one from the training step, so a resumed or multi-process run draws the same
    ones) or from the global generator. With ``gather_distributed=True`` the embeddings of all
    processes are gathered with gradient, so ``n`` is the global batch, as the official code's
    all-reduce of the characteristic function.

    Args:
        num_slices: random directions per step (the official minimal example's 256).
        knots: points of the frequency grid on ``[0, t_max]`` (official: 17).
        t_max: the grid's end (official: 3).
        gather_distributed: test the global batch across processes.

    Example:
        >>> sigreg = SIGReg()
        >>> float(sigreg(torch.randn(4096, 16))) < float(sigreg(torch.rand(4096, 16)))  # Gaussian vs uniform
        True
    """

    def __init__(self, num_slices: int = 256, knots: int = 17, t_max: float = 3.0,
                 gather_distributed: bool = True) -> None:
        super().__init__()
        if num_slices < 1 or knots < 2 or not t_max > 0:
            raise ValueError(f"SIGReg needs num_slices >= 1, knots >= 2 and t_max > 0, got {num_slices}, {knots}, {t_max}")
        self.num_slices, self.gather_distributed = int(num_slices), gather_distributed
        t = torch.linspace(0.0, t_max, knots, dtype=torch.float64)
        step = t_max / (knots - 1)
        trapezoid = torch.full((knots,), 2.0 * step, dtype=torch.float64)  # doubled: [-t_max, t_max]
        trapezoid[[0, -1]] = step
        gaussian_cf = torch.exp(-t.square() / 2)
        self.register_buffer("t", t.float(), persistent=False)
        self.register_buffer("gaussian_cf", gaussian_cf.float(), persistent=False)
        self.register_buffer("weights", (trapezoid * gaussian_cf).float(), persistent=False)

    def directions(self, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(dim, num_slices)`` unit directions, drawn on the CPU from ``generator``."""
        a = torch.randn(dim, self.num_slices, generator=generator)
        return a / a.norm(dim=0, keepdim=True)

    def statistic(self, z: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """The Epps-Pulley statistic of ``z`` (``(..., n, d)``) along each direction: ``(..., num_slices)``."""
        x = z @ directions.to(z)  # (..., n, slices)
        xt = x.unsqueeze(-1) * self.t  # (..., n, slices, knots)
        error = (xt.cos().mean(-3) - self.gaussian_cf).square() + xt.sin().mean(-3).square()
        return (error @ self.weights) * z.shape[-2]

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean statistic of ``z`` (``(n, d)`` or ``(views, n, d)``) over fresh random directions."""
        with torch.autocast(z.device.type, enabled=False):
            z = at_least_fp32(z)
            if self.gather_distributed:
                z = gather(z.transpose(0, -2)).transpose(0, -2) if z.dim() == 3 else gather(z)
            return self.statistic(z, self.directions(z.shape[-1], generator)).mean()

    def extra_repr(self) -> str:
        return f"num_slices={self.num_slices}, knots={len(self.t)}, t_max={float(self.t[-1])}"


class LeJEPALoss(nn.Module):
    """``lambda_ * SIGReg(all views) + (1 - lambda_) * invariance``, LeJEPA's objective.

    Balestriero & LeCun 2025 (arXiv 2511.08544), Eq. (LeJEPA) and the official minimal example:
    the invariance (prediction) term is the mean squared distance of every view's projection to the
    centre of the global views' projections, ``mean_{v, i, j} (mu_ij - z_vij)^2``, with no
    stop-gradient; SIGReg (:class:`SIGReg`) is applied to every view's projections, global and
    local, and averaged over views. (lightly's first version left the global views out of the
    regulariser; here, as in the paper, all views enter both terms.) ``lambda_`` is the paper's single
    trade-off; 0.05 is the official library's default, 0.02 the minimal example's recipe.

    Args:
        lambda_: weight of SIGReg in [0, 1]; the invariance term gets ``1 - lambda_``.
        num_global_views: the first views whose mean is the centre; None: all views.
        num_slices, knots, t_max, gather_distributed: :class:`SIGReg`'s.

    Example:
        >>> loss_fn = LeJEPALoss(lambda_=0.02)
        >>> loss = loss_fn(torch.randn(4, 32, 16))  # 4 views of 32 images, 16-d projections
    """

    def __init__(self, lambda_: float = 0.05, num_global_views: int | None = None, num_slices: int = 256,
                 knots: int = 17, t_max: float = 3.0, gather_distributed: bool = True) -> None:
        super().__init__()
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"LeJEPALoss needs lambda_ in [0, 1], got {lambda_}")
        if num_global_views is not None and num_global_views < 1:
            raise ValueError(f"LeJEPALoss needs num_global_views >= 1 (or None for all views), got {num_global_views}")
        self.lambda_, self.num_global_views = float(lambda_), num_global_views
        self.sigreg = SIGReg(num_slices, knots, t_max, gather_distributed)

    def invariance(self, z: torch.Tensor) -> torch.Tensor:
        """Mean squared distance of every view in ``z`` (``(views, n, d)``) to the global views' centre."""
        g = z.shape[0] if self.num_global_views is None else self.num_global_views
        if g > z.shape[0]:
            raise ValueError(f"LeJEPALoss: {g} global views asked for, only {z.shape[0]} views given")
        return (z[:g].mean(dim=0) - z).square().mean()

    def terms(self, z: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(SIGReg, invariance)`` for projections ``z`` of shape ``(views, n, d)``, global views first."""
        if z.dim() != 3 or z.shape[0] < 2:
            raise ValueError(f"LeJEPALoss needs projections of shape (views >= 2, n, d), got {tuple(z.shape)}")
        with torch.autocast(z.device.type, enabled=False):
            z = at_least_fp32(z)
            return self.sigreg(z, generator), self.invariance(z)

    def combine(self, sigreg: torch.Tensor, invariance: torch.Tensor) -> torch.Tensor:
        """``lambda_ * sigreg + (1 - lambda_) * invariance``."""
        return self.lambda_ * sigreg + (1 - self.lambda_) * invariance

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss for projections ``z`` of shape ``(views, n, d)``, global views first."""
        return self.combine(*self.terms(z, generator))

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}, num_global_views={self.num_global_views}"
