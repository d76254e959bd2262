"""LARS: layer-wise adaptive rate scaling for large-batch SGD.

You, Gitman, Ginsburg, 2017. "Large Batch Training of Convolutional Networks".
https://arxiv.org/abs/1708.03888. The variant here is the one of SimCLR's and BYOL's official code
(github.com/google-research/simclr ``lars_optimizer.py``): weight decay is added to the gradient
first, then the update of each adapted parameter is scaled by ``eta * ||w|| / ||g + wd * w||``
(1 when either norm is 0), then heavy-ball momentum. Groups flagged ``lars_exclude`` (biases and
normalisation parameters) skip the scaling.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    """SGD with momentum and layer-wise trust ratios.

    Args:
        params: parameters or groups; a group with ``lars_exclude=True`` is not adapted.
        lr: learning rate.
        momentum: heavy-ball momentum.
        weight_decay: L2 penalty added to the gradient.
        eta: trust coefficient (0.001 in SimCLR and BYOL).
        nesterov: use Nesterov momentum.

    Example:
        >>> model = nn.Linear(8, 2)
        >>> opt = LARS(model.parameters(), lr=0.3, weight_decay=1e-6)
        >>> model(torch.randn(4, 8)).pow(2).mean().backward(); opt.step()
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        nesterov: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"LARS needs lr >= 0, momentum >= 0, weight_decay >= 0 and eta > 0; got lr={lr}, "
                f"momentum={momentum}, weight_decay={weight_decay}, eta={eta}"
            )
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                        nesterov=nesterov, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if not group["lars_exclude"]:
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where(
                        (w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, torch.ones_like(w_norm)
                    )
                    update.mul_(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = update.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                buf = state["momentum_buffer"]
                step = update.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                p.add_(step, alpha=-group["lr"])
        return loss
