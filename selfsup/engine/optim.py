"""Optimizers for pretraining: SGD, LARS and AdamW over a method's parameter groups."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.optim import Optimizer

from selfsup.engine.lars import LARS
from selfsup.engine.schedule import scaled_lr

OPTIMIZERS = ("sgd", "lars", "adamw")
"""Accepted values of ``optimizer.name`` (the config's validation reads this tuple)."""


@dataclass
class OptimizerConfig:
    """Optimizer and learning-rate schedule.

    Attributes:
        name: one of :data:`OPTIMIZERS`: ``sgd``, ``lars`` or ``adamw``.
        lr: base learning rate, scaled by ``lr_scaling`` with the global batch size.
        lr_scaling: ``linear`` (lr * batch / 256), ``sqrt`` (lr * sqrt(batch)) or ``none``.
        momentum: SGD / LARS momentum.
        weight_decay: L2 penalty (decoupled for AdamW).
        exclude_bias_and_norm: no weight decay on biases and normalisation parameters (LARS never
            adapts them either way).
        warmup_epochs: linear warm-up length (fractions allowed).
        final_lr_fraction: the cosine ends at this fraction of the peak learning rate.
        lars_eta: LARS trust coefficient.
        betas: AdamW's betas.
        clip_grad_norm: clip the global gradient norm of the method's parameters to this value
            before each step (DINO's and SimDINO's official code: 3.0; LightlyTrain's distillation:
            1.0); 0 leaves gradients alone. The norm before clipping is logged as ``train/grad_norm``.
    """

    name: str = "sgd"
    lr: float = 0.3
    lr_scaling: str = "linear"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    exclude_bias_and_norm: bool = True
    warmup_epochs: float = 10.0
    final_lr_fraction: float = 0.0
    lars_eta: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad_norm: float = 0.0


def clip_gradients(parameters, max_norm: float) -> torch.Tensor:
    """Scale the gradients of ``parameters`` so their global L2 norm is at most ``max_norm``; returns
    the norm before clipping (``torch.nn.utils.clip_grad_norm_``, as DINO's ``clip_gradients`` but
    over all parameters at once).

    Example:
        >>> w = torch.nn.Parameter(torch.ones(4)); w.grad = torch.full((4,), 3.0)
        >>> float(clip_gradients([w], 1.0)), round(float(w.grad.norm()), 4)
        (6.0, 1.0)
    """
    grads = [p for p in parameters if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(grads, max_norm)


def build_optimizer(groups: list[dict], config: OptimizerConfig, batch_size: int) -> Optimizer:
    """Build the optimizer for a method's ``parameter_groups`` at a global ``batch_size``.

    Each group gets ``peak_lr`` (the scaled learning rate the schedule multiplies, times the
    group's ``lr_scale`` when it has one) and keeps its own flags (``fixed_lr``, ``lars_exclude``;
    ``own_weight_decay``: its weight decay is kept whatever ``exclude_bias_and_norm`` says). With
    ``exclude_bias_and_norm=False`` biases and normalisation parameters get weight decay too, as in
    MoCo's and SimSiam's official code.

    Example:
        >>> method = selfsup.methods.get("simclr", backbone=selfsup.backbones.get("resnet_tiny", width=4))
        >>> opt = build_optimizer(method.parameter_groups(1e-6), OptimizerConfig(name="lars", lr=0.3), 512)
        >>> type(opt).__name__, opt.param_groups[0]["peak_lr"]  # lr x 512 / 256 (linear scaling)
        ('LARS', 0.6)
    """
    lr = scaled_lr(config.lr, batch_size, config.lr_scaling)
    groups = [dict(g) for g in groups if g["params"]]
    for group in groups:
        if not config.exclude_bias_and_norm and not group.get("own_weight_decay"):
            group["weight_decay"] = config.weight_decay
        group["lr"] = group["peak_lr"] = lr * group.get("lr_scale", 1.0)
    if config.name == "sgd":
        for group in groups:
            group.pop("lars_exclude", None)
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.name == "lars":
        return LARS(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay, eta=config.lars_eta)
    if config.name == "adamw":
        for group in groups:
            group.pop("lars_exclude", None)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    raise ValueError(f"optimizer.name must be one of {', '.join(OPTIMIZERS)}; got {config.name!r}")
