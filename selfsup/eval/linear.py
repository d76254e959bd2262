"""Linear probe on cached frozen features: hyper-parameters chosen on a validation carve, test touched once.

The classic linear evaluation of self-supervised representations (e.g. SimCLR, Chen et al. 2020,
arXiv 2002.05709, Appendix B.5, which trains an L2-regularised multinomial logistic regression with
L-BFGS on frozen features and picks the regularisation on a held-out part of the training set).
Features are computed once (:func:`selfsup.eval.cached_features`), so an epoch of the probe is a
matrix product, not a forward pass of the encoder.

Normalisation: features are standardised with the mean and standard deviation of the features the
probe is trained on (per dimension; a constant dimension keeps scale 1), the offline equivalent of
the affine-free BatchNorm in front of MAE's linear probe (He et al. 2021, arXiv 2111.06377, Sec. A.2).
The standardisation is folded into the returned ``nn.Linear``, which therefore takes raw features.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.errors import ConfigError
from selfsup.eval.metrics import topk_accuracy
from selfsup.eval.splits import stratified_holdout

SOLVERS = ("lbfgs", "sgd")
DEFAULT_LRS = {"lbfgs": (1.0,), "sgd": (0.03, 0.1, 0.3)}
DEFAULT_EPOCHS = {"lbfgs": 100, "sgd": 100}
DEFAULT_WEIGHT_DECAYS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def _check_xy(x: Tensor, y: Tensor, num_classes: int, what: str) -> None:
    if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(
            f"{what}: expected (n, d) features and (n,) labels with n >= 1, got {tuple(x.shape)} and {tuple(y.shape)}."
        )
    if y.dtype.is_floating_point or int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ConfigError(
            f"{what}: labels must be integers in [0, {num_classes}) (drop unlabelled samples, label -1, first); "
            f"got dtype {y.dtype}, values {int(y.min())}..{int(y.max())}."
        )
    if not torch.isfinite(x).all():
        raise ConfigError(f"{what}: the features contain NaN or infinite values; the encoder's output is broken.")


def train_linear(
    train_x: Tensor,
    train_y: Tensor,
    *,
    num_classes: int,
    solver: str = "lbfgs",
    lr: float | None = None,
    weight_decay: float = 1e-4,
    epochs: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    init: nn.Linear | None = None,
) -> nn.Linear:
    """Fit a softmax classifier ``nn.Linear(d, num_classes)`` on frozen features.

    Minimises ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (bias not decayed) on the
    standardised features, from zero weights or from ``init`` (a probe on the same kind of features,
    e.g. the solution for a neighbouring weight decay: a warm start; the problem is convex, so the
    start changes only how many iterations it takes to get close to the optimum).

    - ``solver="lbfgs"``: full-batch L-BFGS with a strong-Wolfe line search; ``epochs`` is the
      number of iterations (default 100; each is one or a few passes over the features), ``lr`` the
      step scale (default 1.0). Deterministic: ``seed`` is unused.
    - ``solver="sgd"``: mini-batch SGD, momentum 0.9, cosine decay from ``lr`` (default 0.1) over
      ``epochs`` (default 100) passes, batches of ``batch_size`` in an order drawn from ``seed``.

    Runs on ``train_x``'s device. The returned layer includes the standardisation, so it applies
    to raw features: ``logits = probe(features)``.

    Example:
        >>> probe = train_linear(torch.randn(100, 16), torch.randint(0, 3, (100,)), num_classes=3, weight_decay=1e-3)
        >>> probe(torch.randn(5, 16)).shape
        torch.Size([5, 3])
    """
    if solver not in SOLVERS:
        raise ConfigError(f"Unknown probe solver {solver!r}; expected one of {', '.join(SOLVERS)}.")
    _check_xy(train_x, train_y, num_classes, "train_linear")
    lr = (1.0 if solver == "lbfgs" else 0.1) if lr is None else float(lr)
    epochs = DEFAULT_EPOCHS[solver] if epochs is None else int(epochs)
    if not lr > 0 or not weight_decay >= 0 or epochs < 1 or batch_size < 1:
        raise ConfigError(
            f"train_linear needs lr > 0, weight_decay >= 0, epochs >= 1 and batch_size >= 1; got lr={lr}, "
            f"weight_decay={weight_decay}, epochs={epochs}, batch_size={batch_size}."
        )
    x = train_x.float()
    y = train_y.to(x.device, torch.long)
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    z = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], device=x.device)
    bias = torch.zeros(num_classes, device=x.device)
    if init is not None:
        if tuple(init.weight.shape) != tuple(weight.shape):
            raise ConfigError(f"train_linear: init has shape {tuple(init.weight.shape)}, expected {tuple(weight.shape)}.")
        with torch.no_grad():  # the raw-feature layer expressed on standardised features
            weight.copy_(init.weight.to(x.device) * std)
            bias.copy_(init.bias.to(x.device) + init.weight.to(x.device) @ mean)
    weight.requires_grad_(True)
    bias.requires_grad_(True)

    def objective(inputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(F.linear(inputs, weight, bias), targets) + 0.5 * weight_decay * weight.pow(2).sum()

    if solver == "lbfgs":
        optimizer = torch.optim.LBFGS([weight, bias], lr=lr, max_iter=epochs, history_size=20,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = objective(z, y)
            loss.backward()
            return loss

        optimizer.step(closure)
    else:
        _sgd(objective, [weight, bias], z, y, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
    with torch.no_grad():
        w = weight.double() / std.double()
        layer = nn.Linear(x.shape[1], num_classes, device="meta").to_empty(device=x.device)  # no global RNG draw
        layer.weight.copy_(w.float())
        layer.bias.copy_((bias.double() - w @ mean.double()).float())
    return layer


def _sgd(objective, params: list[Tensor], z: Tensor, y: Tensor, *, lr: float, epochs: int, batch_size: int,
         seed: int) -> None:
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(int(seed))
    n = z.shape[0]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(z.device)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            optimizer.zero_grad()
            objective(z[batch], y[batch]).backward()
            optimizer.step()
            step += 1


@torch.no_grad()
def _accuracy(probe: nn.Linear, x: Tensor, y: Tensor) -> dict[str, float]:
    return topk_accuracy(probe(x.float().to(probe.weight.device)), y, (1, 5))


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int,
    val_fraction: float = 0.1,
    lrs: Sequence[float] | None = None,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    solver: str = "lbfgs",
    epochs: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """The linear evaluation protocol on cached features, with no peek at the test split.

    1. Carve a stratified validation part (``val_fraction``, seeded) out of the TRAINING features.
    2. For every ``lr`` x ``weight_decay`` pair, train on the rest (:func:`train_linear`) and score
       top-1 on the validation part; the pair with the best validation top-1 wins (ties: the
       earlier pair in the sweep order, i.e. the stronger weight decay with the defaults).
    3. Retrain with that pair on all training features and score the test features once.

    With a single pair nothing is chosen, so no validation part is carved (``val_top1`` is None).
    Default sweep: L-BFGS (lr 1.0, 100 iterations) over weight decays 1e-2 ... 1e-6; SGD uses lrs
    0.03 / 0.1 / 0.3 and 100 epochs. Fits are warm-started along the sweep (each weight decay from
    the previous one's solution, for the same lr; the final fit from the chosen pair's), which
    follows the regularisation path and lets the small weight decays converge within the iterations.

    Returns:
        ``{"top1", "top5"}`` (test, percent), ``"val_top1"`` (the chosen pair's validation top-1),
        ``"chosen": {"lr", "weight_decay"}``, ``"sweep"`` (one entry per pair with its validation
        top-1 / top-5), ``"train_size"``, ``"val_size"``.

    Example:
        >>> _ = torch.manual_seed(0); centres = 3 * torch.randn(10, 16)  # features: 10 separated classes
        >>> train_y, test_y = torch.arange(200) % 10, torch.arange(100) % 10
        >>> train_x, test_x = centres[train_y] + torch.randn(200, 16), centres[test_y] + torch.randn(100, 16)
        >>> result = linear_probe(train_x, train_y, test_x, test_y, num_classes=10)
        >>> result["top1"], result["chosen"]
        (100.0, {'lr': 1.0, 'weight_decay': 0.01})
    """
    if solver not in SOLVERS:
        raise ConfigError(f"Unknown probe solver {solver!r}; expected one of {', '.join(SOLVERS)}.")
    _check_xy(test_x, test_y, num_classes, "linear_probe (test)")
    _check_xy(train_x, train_y, num_classes, "linear_probe (train)")
    lrs = tuple(DEFAULT_LRS[solver] if lrs is None else lrs)
    weight_decays = tuple(weight_decays)
    if not lrs or not weight_decays:
        raise ConfigError("linear_probe needs at least one learning rate and one weight decay to try.")
    options = dict(num_classes=num_classes, solver=solver, epochs=epochs, batch_size=batch_size, seed=seed)
    pairs = [(float(lr), float(wd)) for lr in lrs for wd in weight_decays]
    sweep: list[dict[str, float]] = []
    val_size = 0
    if len(pairs) > 1:
        fit_idx, val_idx = stratified_holdout(train_y.cpu(), val_fraction, seed)
        val_size = len(val_idx)
        fit_idx, val_idx = fit_idx.to(train_x.device), val_idx.to(train_x.device)
        fit_x, fit_y, val_x, val_y = train_x[fit_idx], train_y[fit_idx], train_x[val_idx], train_y[val_idx]
        probes: list[nn.Linear] = []
        for i, (lr, wd) in enumerate(pairs):
            warm = probes[-1] if i % len(weight_decays) else None  # along the weight-decay path of one lr
            probes.append(train_linear(fit_x, fit_y, lr=lr, weight_decay=wd, init=warm, **options))
            acc = _accuracy(probes[-1], val_x, val_y)
            sweep.append({"lr": lr, "weight_decay": wd, "val_top1": acc["top1"], "val_top5": acc["top5"]})
        best = max(range(len(sweep)), key=lambda i: (sweep[i]["val_top1"], -i))
        (lr, wd), warm = pairs[best], probes[best]
        val_top1: float | None = sweep[best]["val_top1"]
    else:
        (lr, wd), val_top1, warm = pairs[0], None, None
    probe = train_linear(train_x, train_y, lr=lr, weight_decay=wd, init=warm, **options)
    test = _accuracy(probe, test_x, test_y)  # the only look at the test split
    return {"top1": test["top1"], "top5": test["top5"], "val_top1": val_top1,
            "chosen": {"lr": lr, "weight_decay": wd}, "sweep": sweep,
            "train_size": int(train_x.shape[0]), "val_size": val_size}
