"""Momentum (exponential moving average) target networks, as in MoCo and BYOL."""
from __future__ import annotations

import copy
import math
from typing import TypeVar

import torch
from torch import nn

__all__ = ["MomentumTeacher", "SCHEDULES", "copy_frozen", "cosine_momentum", "ema_update"]

M = TypeVar("M", bound=nn.Module)


def copy_frozen(module: M) -> M:
    """Return a deep copy of ``module`` whose parameters do not require gradients.

    This is how the momentum (key / target) encoder starts in MoCo (He et al., "Momentum Contrast
    for Unsupervised Visual Representation Learning", 2019, https://arxiv.org/abs/1911.05722,
    official code https://github.com/facebookresearch/moco) and BYOL (Grill et al., "Bootstrap
    Your Own Latent", 2020, https://arxiv.org/abs/2006.07733, official code
    https://github.com/deepmind/deepmind-research/tree/master/byol): a copy of the online
    network that is then updated only by :func:`ema_update`. Buffers are copied as they are.

    Args:
        module: The online network.

    Returns:
        The frozen copy (same class, same training mode).

    Example:
        >>> target = copy_frozen(nn.Linear(4, 2))
        >>> any(p.requires_grad for p in target.parameters())
        False
    """
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place, set every target parameter to ``m * target + (1 - m) * online``.

    The momentum update of MoCo (He et al., 2019, https://arxiv.org/abs/1911.05722, Eq. 2,
    official code https://github.com/facebookresearch/moco) and BYOL (Grill et al., 2020,
    https://arxiv.org/abs/2006.07733, Sec. 3.1). Only parameters are averaged: buffers (e.g.
    BatchNorm running statistics) are left untouched, so the target keeps its own statistics as
    MoCo's key encoder does. Parameters are paired in ``parameters()`` order.

    Args:
        target: Momentum network, updated in place.
        online: Network trained by gradient descent; not modified.
        momentum: ``m`` in ``[0, 1]``; 1 keeps the target, 0 copies the online network.

    Raises:
        ValueError: ``momentum`` is outside ``[0, 1]``, or the two modules' parameter lists differ
            in length or in the shape of some pair.

    Example:
        >>> a, b = nn.Linear(4, 2), nn.Linear(4, 2)
        >>> ema_update(a, b, momentum=0.99)
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"ema_update momentum must be in [0, 1], got {momentum}")
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(
            f"ema_update: target has {len(t_params)} parameters but online has {len(o_params)}; "
            "the target must be a copy of the online network"
        )
    for i, (t, o) in enumerate(zip(t_params, o_params)):
        if t.shape != o.shape:
            raise ValueError(
                f"ema_update: parameter {i} has shape {tuple(t.shape)} in the target but "
                f"{tuple(o.shape)} in the online network"
            )
    if not t_params:
        return
    # a sharded teacher is sharded as its student (strategy: fsdp): the update pairs local shards
    t_data = [_local(t.detach()) for t in t_params]
    o_data = [_local(o.detach()) for o in o_params]
    torch._foreach_mul_(t_data, momentum)
    torch._foreach_add_(t_data, o_data, alpha=1.0 - momentum)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor (``DTensor``); any other tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def cosine_momentum(progress: float, base: float, final: float = 1.0) -> float:
    """Momentum rising from ``base`` to ``final`` along a half cosine as training progresses.

    BYOL's schedule (Grill et al., "Bootstrap Your Own Latent", 2020,
    https://arxiv.org/abs/2006.07733, Sec. 3.2:
    ``tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``), generalised to any ``final``:
    ``final - (final - base) * (cos(pi * progress) + 1) / 2``.

    Args:
        progress: Fraction of training done, ``k / K``; clamped to ``[0, 1]``.
        base: Momentum at the start (e.g. 0.996 for BYOL).
        final: Momentum at the end.

    Returns:
        ``base`` at progress 0, ``(base + final) / 2`` at 0.5 and ``final`` at 1.

    Example:
        >>> cosine_momentum(0.0, base=0.996)
        0.996
    """
    p = min(max(float(progress), 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * p) + 1.0) / 2.0


#: how a :class:`MomentumTeacher`'s momentum goes from its base to its final value
SCHEDULES = ("cosine", "linear")


class MomentumTeacher(nn.ModuleDict):
    """Frozen copies of online modules that follow them as an exponential moving average, with
    the momentum schedule, its checks and its logged value.

    The momentum encoder of MoCo (He et al. 2019, https://arxiv.org/abs/1911.05722), the target
    network of BYOL (Grill et al. 2020, https://arxiv.org/abs/2006.07733) and the teacher of DINO
    (Caron et al. 2021, https://arxiv.org/abs/2104.14294). Calling it runs the copies in order
    (e.g. backbone, then projector) without gradient. The copies are its entries, so
    ``teacher["backbone"]`` reaches one and the state dict keys are ``<name>.<parameter>``. The
    online modules are referenced, not registered (the method owns them).

    The momentum rises from ``base_momentum`` to ``final_momentum`` as training progresses:
    along BYOL's half cosine (``schedule="cosine"``, Sec. 3.2: ``final - (final - base)
    (cos(pi p) + 1) / 2``; MoCo v3, DINO, iBOT) or a straight line (``"linear"``: I-JEPA, MSN),
    reaching ``final_momentum`` at the fraction ``horizon`` of the run (MSN's schedule spans 1.25
    runs); ``final_momentum=None`` keeps ``base_momentum`` (MoCo v1 / v2, DenseCL). A
    :class:`~selfsup.methods.Method` drives every teacher it holds: ``set_fraction`` before each
    step (so ``momentum``, the value logged as ``"momentum"``, is the one this step applies), and
    :meth:`momentum_update` after the optimizer step. Nothing of the schedule is saved: it is a
    function of the training progress, which the engine restores on resume.

    Args:
        online: name -> online module, in the order calls apply them.
        base_momentum: momentum at the start of training, in [0, 1].
        final_momentum: momentum at ``horizon``, in [base_momentum, 1]; None for a constant rate.
        schedule: ``"cosine"`` or ``"linear"``.
        horizon: fraction of the run (> 0) at which the schedule reaches ``final_momentum``.
        owner: who builds the teacher (the method's name), for error messages.

    Raises:
        ValueError: a momentum outside [0, 1], ``base_momentum > final_momentum``, an unknown
            schedule or ``horizon <= 0``; the message names ``owner`` and the option.

    Example:
        >>> backbone, projector = nn.Linear(8, 4), nn.Linear(4, 2)
        >>> teacher = MomentumTeacher({"backbone": backbone, "projector": projector}, base_momentum=0.99)
        >>> teacher(torch.randn(3, 8)).shape  # keys, without gradient
        torch.Size([3, 2])
        >>> round(teacher.set_fraction(0.5), 4)  # half-way along the cosine from 0.99 to 1
        0.995
        >>> teacher.momentum_update()  # after the optimizer step: copies <- 0.995 copies + 0.005 online
    """

    def __init__(
        self,
        online: dict[str, nn.Module],
        *,
        base_momentum: float = 0.996,
        final_momentum: float | None = 1.0,
        schedule: str = "cosine",
        horizon: float = 1.0,
        owner: str = "MomentumTeacher",
    ) -> None:
        if final_momentum is None:
            if not 0.0 <= base_momentum <= 1.0:
                raise ValueError(f"{owner} momentum must be in [0, 1], got {base_momentum}")
        elif not 0.0 <= base_momentum <= final_momentum <= 1.0:
            raise ValueError(
                f"{owner} needs 0 <= base_momentum <= final_momentum <= 1, got base_momentum={base_momentum}, "
                f"final_momentum={final_momentum}"
            )
        if schedule not in SCHEDULES:
            raise ValueError(f"{owner}: the momentum schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not horizon > 0:
            raise ValueError(f"{owner} needs momentum_horizon > 0, got {horizon}")
        super().__init__({name: copy_frozen(module) for name, module in online.items()})
        object.__setattr__(self, "_online", dict(online))
        self.base_momentum = float(base_momentum)
        self.final_momentum = float(base_momentum if final_momentum is None else final_momentum)
        self.schedule, self.horizon = schedule, float(horizon)
        #: the momentum of the current step (set by :meth:`set_fraction`; ``base_momentum`` before)
        self.momentum = self.base_momentum

    def online(self) -> nn.ModuleDict:
        """The online modules the copies follow, in the same order."""
        return nn.ModuleDict(self._online)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.values():
            x = module(x)
        return x

    def momentum_at(self, fraction: float) -> float:
        """The scheduled momentum after ``fraction`` of the run (clamped to [0, 1] of the horizon).

        Example:
            >>> MomentumTeacher({}, base_momentum=0.996, schedule="linear", horizon=1.25).momentum_at(1.0)
            0.9992
        """
        p = min(max(float(fraction), 0.0) / self.horizon, 1.0)
        if self.schedule == "cosine":
            return cosine_momentum(p, self.base_momentum, self.final_momentum)
        return self.base_momentum + (self.final_momentum - self.base_momentum) * p

    def set_fraction(self, fraction: float) -> float:
        """Make :attr:`momentum` the scheduled value at ``fraction`` of the run; returns it."""
        self.momentum = self.momentum_at(fraction)
        return self.momentum

    def logs(self) -> dict[str, float]:
        """``{"momentum": momentum}``: what a training step logs about the teacher."""
        return {"momentum": self.momentum}

    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """``copy <- m * copy + (1 - m) * online`` for every parameter, ``m = momentum`` or, when
        None, the current step's :attr:`momentum`."""
        ema_update(self, self.online(), self.momentum if momentum is None else momentum)
